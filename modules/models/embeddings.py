"""Textual-inversion embeddings: the files in `models/embeddings/`, read safely and lazily.

A file's stem is the word users write in a prompt. Four layouts exist in the wild, told
apart by content rather than extension (people rename files):

- A1111 `.pt`: `{"string_to_param": {"*": tensor[n, width]}, "name", "step", "sd_checkpoint",
  "sd_checkpoint_name", ...}` (older ones hold a `torch.nn.ParameterDict` there);
- A1111 `.safetensors`: `{"emb_params": tensor[n, width]}`;
- SDXL `.safetensors`: `{"clip_l": tensor[n, 768], "clip_g": tensor[n, 1280]}`;
- diffusers `.bin`: `{"<token>": tensor[width] or [n, width]}`.

Pickled files are read with `torch.load(weights_only=True)`: a file that needs full
unpickling (which can run arbitrary code) is skipped with a reason, as is any file whose
layout is unknown. Nothing here raises for a bad file; the reason ends up in `skipped`.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

from modules.models.catalog import PARTIAL_SUFFIXES, HashCache, natural_sort_key

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

EMBEDDING_EXTENSIONS = (".pt", ".bin", ".safetensors")
TI_SHORTHASH_LENGTH = 12  # A1111's `TI hashes:` infotext uses 12 hex digits
# Vector keys name the text encoder a tensor is for; widths without a known encoder get `clip_<width>`.
ENCODER_NAMES = {768: "clip_l", 1024: "clip_h", 1280: "clip_g"}
SDXL_KEYS = ("clip_l", "clip_g")
_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class EmbeddingError(ValueError):
    """A file that is not a usable embedding; the message is the reason shown to users."""


@dataclass
class Embedding:
    """One textual-inversion file: its vectors per text encoder (float32, on the CPU)."""

    name: str
    path: Path
    vectors: dict[str, torch.Tensor]  # encoder name (clip_l, clip_g, ...) -> [n_vectors, width]
    info: dict = field(default_factory=dict)  # step, sd_checkpoint, sd_checkpoint_name when the file says

    def for_width(self, width: int) -> torch.Tensor | None:
        """The vectors for a text encoder of this hidden width, or None if the file has none."""
        return next((t for t in self.vectors.values() if t.shape[-1] == width), None)

    def widths(self) -> set[int]:
        return {t.shape[-1] for t in self.vectors.values()}

    @property
    def vector_count(self) -> int:
        """How many prompt tokens the word takes up (the same for every encoder)."""
        return next(iter(self.vectors.values())).shape[0]

    @property
    def step(self) -> int | None:
        return self.info.get("step")

    @property
    def shape(self) -> int:
        """A1111's `shape`: the embedding width, summed over encoders (2048 for SDXL files)."""
        return sum(self.widths())


# --------------------------------------------------------------------------- reading files


def load_embedding(path: Path) -> Embedding:
    """Read one embedding file; raises EmbeddingError with a readable reason."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise EmbeddingError(f"cannot be read ({e.strerror or e})") from e
    if size == 0:
        raise EmbeddingError("the file is empty")
    data, meta = _read_safetensors(path) if _is_safetensors(path) else (_read_pickle(path), {})
    vectors, info = _interpret(data)
    info = {**_metadata_info(meta), **info}
    return Embedding(name=path.stem, path=path, vectors=vectors, info=info)


def _is_safetensors(path: Path) -> bool:
    return path.suffix.lower() == ".safetensors"


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own SafetensorError
        raise EmbeddingError(f"not a readable safetensors file ({_first_line(e)})") from e


def _read_pickle(path: Path):
    """`torch.load` with weights only. Old A1111 files keep their vectors in a ParameterDict,
    a plain torch container that is safe to rebuild, so that one class is allowed too."""
    import torch

    try:
        with torch.serialization.safe_globals([torch.nn.ParameterDict]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = _UNSAFE_GLOBAL.search(str(e))
        if found is None:  # not a class the safe unpickler refused: the bytes are no pickle at all
            raise EmbeddingError(f"not a readable PyTorch file ({_unpickler_detail(e)})") from e
        raise EmbeddingError(
            f"it holds a Python object ({found.group(1)}) that only full unpickling could rebuild, "
            "which can run arbitrary code, so it is not loaded"
        ) from e
    except Exception as e:
        raise EmbeddingError(f"not a readable PyTorch file ({_first_line(e)})") from e


def _interpret(data) -> tuple[dict[str, torch.Tensor], dict]:
    """Vectors and training info from a loaded file's contents, whatever its layout."""
    import torch

    if not isinstance(data, Mapping):
        raise EmbeddingError(f"unknown layout: expected a dict, found {type(data).__name__}")
    if "string_to_param" in data:
        params = data["string_to_param"]
        params = dict(params.items()) if hasattr(params, "items") else params
        if not isinstance(params, dict) or len(params) != 1:
            count = len(params) if isinstance(params, dict) else "no"
            raise EmbeddingError(f"string_to_param holds {count} terms; an embedding file must hold exactly one")
        return _single(next(iter(params.values())), "string_to_param"), _pt_info(data)
    if "emb_params" in data:
        return _single(data["emb_params"], "emb_params"), {}
    if all(k in data for k in SDXL_KEYS):
        vectors = {k: _matrix(data[k], k) for k in SDXL_KEYS}
        counts = {k: v.shape[0] for k, v in vectors.items()}
        if len(set(counts.values())) != 1:
            raise EmbeddingError(f"clip_l and clip_g hold different numbers of vectors ({counts})")
        return vectors, {}
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(data) == 1 and len(tensors) == 1:  # diffusers: {token: tensor}
        return _single(tensors[0], f"'{next(iter(data))}'"), {}
    keys = ", ".join(sorted(str(k) for k in data)[:5])
    raise EmbeddingError(f"unknown layout (keys: {keys or 'none'}); expected string_to_param, emb_params, clip_l/clip_g or one token")


def _single(value, what: str) -> dict[str, torch.Tensor]:
    tensor = _matrix(value, what)
    width = tensor.shape[-1]
    return {ENCODER_NAMES.get(width, f"clip_{width}"): tensor}


def _matrix(value, what: str) -> torch.Tensor:
    """[n, width] float32 on the CPU; a single vector [width] becomes [1, width]."""
    import torch

    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise EmbeddingError(f"{what} is not a floating-point tensor")
    tensor = value.detach().to("cpu", torch.float32)
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 2 or 0 in tensor.shape:
        raise EmbeddingError(f"{what} has shape {list(value.shape)}; expected [vectors, width]")
    return tensor.contiguous()


def _pt_info(data: Mapping) -> dict:
    """Training facts A1111 stores beside the vectors (older files call the checkpoint hash `hash`)."""
    import torch

    raw = {
        "step": data.get("step"),
        "sd_checkpoint": data.get("sd_checkpoint", data.get("hash")),
        "sd_checkpoint_name": data.get("sd_checkpoint_name"),
    }
    info = {}
    for key, value in raw.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if key == "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
            info[key] = int(value)
        elif key != "step" and isinstance(value, str):
            info[key] = value
    return info


def _metadata_info(meta: Mapping[str, str]) -> dict:
    """The same facts from safetensors metadata, where a tool wrote them."""
    info: dict = {}
    if str(meta.get("step", "")).strip().isdigit():
        info["step"] = int(meta["step"])
    for key in ("sd_checkpoint", "sd_checkpoint_name"):
        if meta.get(key):
            info[key] = meta[key]
    return info


def _unpickler_detail(e: Exception) -> str:
    """The one informative line of torch's long weights-only error."""
    text = str(e)
    _, marker, rest = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in rest.splitlines() if line.strip()] if marker else []
    return lines[0] if lines else _first_line(e)


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


# --------------------------------------------------------------------------- finding files (vae.py uses these too)


def scan_files(dirs: Iterable[Path], extensions: tuple[str, ...], folders: dict[str, int | None] | None = None) -> list[Path]:
    """Files with `extensions` under `dirs`, recursively, in A1111's natural order per folder;
    hidden files and folders and downloads still in progress are left out. `folders`, if
    given, receives each folder looked at with its mtime (None: a root that is not there)."""
    found: list[Path] = []
    for root in dirs:
        root = Path(root)
        if not root.is_dir():
            if folders is not None:
                folders[str(root)] = None
            continue
        files, seen = [], set()
        for current, dirnames, filenames in os.walk(root, followlinks=True):
            if folders is not None:
                folders[current] = _mtime(current)
            real = Path(current).resolve()
            dirnames[:] = [] if real in seen else [d for d in dirnames if not d.startswith(".")]
            if real in seen:  # a symlink loop
                continue
            seen.add(real)
            for filename in filenames:
                path = Path(current, filename)
                if filename.startswith(".") or path.suffix.lower() not in extensions:
                    continue
                if any(s.lower() in PARTIAL_SUFFIXES for s in path.suffixes) or path.with_name(filename + ".aria2").exists():
                    continue
                files.append(path)
        files.sort(key=lambda p: natural_sort_key(p.relative_to(root).as_posix()))
        found += files
    return found


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def folders_unchanged(folders: dict[str, int | None] | None, scanned_ns: int) -> bool:
    """Whether a scan that recorded `folders` (see scan_files) at `scanned_ns` still holds: a
    file added, removed or renamed changes its folder's mtime. A folder changed within 2 s of
    that scan is not trusted (coarse file-system clocks could hide a later change)."""
    if folders is None:
        return False
    for path, stamp in folders.items():
        if _mtime(path) != stamp or (stamp is not None and stamp >= scanned_ns - 2_000_000_000):
            return False
    return True


def file_signature(path: Path) -> tuple[int, int] | None:
    """(size, mtime): what must stay the same for a file read earlier to still be current."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def relative_name(path: Path, dirs: tuple[Path, ...]) -> str:
    """`path` relative to the folder it was found in, `/`-separated."""
    for root in dirs:
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return str(path)


# --------------------------------------------------------------------------- the library


class EmbeddingLibrary:
    """The embeddings users can write in prompts. Scanning is cheap (names only); a file is
    read the first time it is asked for and kept until `refresh` sees it change."""

    def __init__(self, dirs: tuple[Path, ...], hashes: HashCache):
        self.dirs = tuple(Path(d) for d in dirs)
        self.hashes = hashes
        self._lock = threading.Lock()
        self._paths: dict[str, Path] = {}
        self._duplicates: dict[str, str] = {}
        # name -> (path, signature, Embedding or the reason it is unusable)
        self._cache: dict[str, tuple[Path, tuple | None, Embedding | str]] = {}
        self._version = 0
        self._folders: dict[str, int | None] | None = None  # the last scan's folders and their mtimes
        self._scanned_ns = 0
        self.refresh()

    @property
    def version(self) -> int:
        """Changes whenever `refresh` finds a file added, removed or changed: whoever caches
        encodings that used embeddings keys them on it."""
        return self._version

    def refresh(self) -> None:
        """Rescan the folders; cached embeddings whose file moved or changed are dropped. Runs
        before every job, so the walk is skipped while no folder's mtime has changed (a stat
        per folder instead of one per file: 40-65 ms a job for 500 files on the 2-core VM)."""
        with self._lock:
            unchanged = folders_unchanged(self._folders, self._scanned_ns)
            paths, duplicates = self._paths, self._duplicates
        if not unchanged:
            folders: dict[str, int | None] = {}
            scanned_ns = time.time_ns()
            paths, duplicates = {}, {}
            for path in scan_files(self.dirs, EMBEDDING_EXTENSIONS, folders):
                if path.stem in paths:
                    duplicates[relative_name(path, self.dirs)] = f"another file named '{path.stem}' was found first: {paths[path.stem]}"
                    continue
                paths[path.stem] = path
        with self._lock:
            if not unchanged:
                self._folders, self._scanned_ns = folders, scanned_ns
            kept = {
                name: entry
                for name, entry in self._cache.items()
                if paths.get(name) == entry[0] and file_signature(entry[0]) == entry[1]
            }
            if paths != self._paths or len(kept) != len(self._cache):
                self._version += 1
            self._paths, self._duplicates, self._cache = paths, duplicates, kept

    @property
    def names(self) -> list[str]:
        """Every embedding word found (a broken file's word too, until `get` tries it)."""
        with self._lock:
            return list(self._paths)

    def files(self) -> dict[str, Path]:
        """Every word found and its file, without reading any (the Extra networks cards)."""
        with self._lock:
            return dict(self._paths)

    def get(self, name: str) -> Embedding | None:
        """The embedding called `name`, loaded on first use; None if unknown or unusable."""
        entry = self._load(name)
        return entry if isinstance(entry, Embedding) else None

    @property
    def skipped(self) -> dict[str, str]:
        """Files that cannot be used, with the reason: reads every file not yet read.
        Duplicates are keyed by their path relative to the embeddings folder."""
        reasons = {}
        for name in self.names:
            entry = self._load(name)
            if isinstance(entry, str):
                reasons[name] = entry
        with self._lock:
            return {**reasons, **self._duplicates}

    def loaded(self) -> list[Embedding]:
        """Every usable embedding (reads every file not yet read)."""
        entries = (self._load(name) for name in self.names)
        return [entry for entry in entries if isinstance(entry, Embedding)]

    def shorthash(self, embedding: Embedding) -> str | None:
        """A1111's `TI hashes:` value: the first 12 hex digits of the file's SHA-256."""
        digest = self.hashes.sha256(embedding.path, compute=True)
        return digest[:TI_SHORTHASH_LENGTH] if digest else None

    def describe(self, widths: set[int]) -> dict:
        """A1111's `/sdapi/v1/embeddings` answer. An embedding is "loaded" when it has vectors
        for every text encoder width of the current model (`widths`), else "skipped"."""
        result: dict[str, dict] = {"loaded": {}, "skipped": {}}
        for embedding in self.loaded():
            fits = bool(widths) and all(embedding.for_width(w) is not None for w in widths)
            result["loaded" if fits else "skipped"][embedding.name] = {
                "step": embedding.step,
                "sd_checkpoint": embedding.info.get("sd_checkpoint"),
                "sd_checkpoint_name": embedding.info.get("sd_checkpoint_name"),
                "shape": embedding.shape,
                "vectors": embedding.vector_count,
            }
        return result

    def _load(self, name: str) -> Embedding | str | None:
        with self._lock:
            path = self._paths.get(name)
            cached = self._cache.get(name)
        if path is None:
            return None
        if cached is not None and cached[0] == path:
            return cached[2]
        signature = file_signature(path)
        try:
            result: Embedding | str = load_embedding(path)
        except EmbeddingError as e:
            log.warning("Skipping embedding %s: %s", path, e)
            result = str(e)
        with self._lock:
            if self._paths.get(name) == path:
                self._cache[name] = (path, signature, result)
        return result

