"""The checkpoint catalog: which checkpoints exist, what they are called, their hashes.

Names and hashes are what users, infotexts and API clients use to point at a model, so they
follow A1111:

- `name`: path relative to the checkpoint folder, `/`-separated, no extension
  (`sdxl/juggernaut`); `filename` keeps the extension (A1111's own `name`).
- `model_name`: the file stem, the value of the infotext `Model:` key.
- `title`: `filename [shorthash]` (e.g. `v1-5-pruned-emaonly.safetensors [6ce0161689]`), the
  value A1111 shows in the dropdown, stores in `sd_model_checkpoint` and returns from
  `/sdapi/v1/sd-models`; just `filename` while the hash is unknown.
- shorthash: the first 10 hex digits of the SHA-256 of the whole file (`Model hash:`).

Hashing a multi-GB file takes seconds, so hashes live in a JSON cache keyed by absolute
path and invalidated by size and mtime.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from modules.files import atomic_path

log = logging.getLogger(__name__)

# .gguf: quantized Flux / SD 3.5 transformers (city96's), listed like Forge lists them.
CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".gguf")
DIFFUSERS_MARKER = "model_index.json"
# Files that make up a diffusers folder's weights (hashed); configs and tokenizers are not.
FOLDER_WEIGHT_EXTENSIONS = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
# Names download tools give to files that are still arriving.
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download", ".incomplete")
SHORTHASH_LENGTH = 10
HASH_CHUNK = 1024 * 1024

_TITLE_WITH_HASH = re.compile(r"^(.*?)\s*\[([0-9a-fA-F]{8,64})\]$")
_NATURAL_SPLIT = re.compile(r"(\d+)")


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint file or diffusers folder. Immutable: a known hash gives a new value
    (`with_sha256`), so lists can be shared between threads."""

    path: Path
    name: str  # relative, `/`-separated, without extension
    model_name: str  # file (or folder) stem, the infotext `Model:`
    is_folder: bool = False
    sha256: str | None = None

    @property
    def filename(self) -> str:
        """Relative path with the extension, A1111's checkpoint `name`."""
        return self.name if self.is_folder else self.name + self.path.suffix

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:SHORTHASH_LENGTH] if self.sha256 else None

    @property
    def title(self) -> str:
        return f"{self.filename} [{self.shorthash}]" if self.sha256 else self.filename

    @property
    def short_title(self) -> str:
        """`stem [shorthash]`, A1111's compact form (used in some menus and pastes)."""
        return f"{self.model_name} [{self.shorthash}]" if self.sha256 else self.model_name

    def with_sha256(self, sha256: str | None) -> CheckpointInfo:
        return dataclasses.replace(self, sha256=sha256.lower() if sha256 else None)

    def aliases(self) -> list[str]:
        """Every string that names this checkpoint exactly (cf. A1111's `ids`)."""
        names = [
            self.title,
            self.short_title,
            self.filename,
            self.name,
            self.model_name,
            # A1111's `model_name`: the relative path with `/` turned into `_`.
            self.name.replace("/", "_"),
        ]
        if self.sha256:
            names += [self.shorthash, self.sha256, f"{self.name} [{self.shorthash}]"]
        return names


def natural_sort_key(text: str) -> list:
    """Case-insensitive, numbers compared by value ("model2" before "model10"), as A1111
    sorts its checkpoint list."""
    return [int(part) if part.isdigit() else part.lower() for part in _NATURAL_SPLIT.split(text)]


# --------------------------------------------------------------------------- discovery

def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_partial(path: Path) -> bool:
    """Downloads in progress: a temp-style suffix, or an aria2 control file beside it
    (aria2 writes straight to the final name)."""
    suffixes = [s.lower() for s in path.suffixes]
    if any(s in PARTIAL_SUFFIXES for s in suffixes):
        return True
    return path.with_name(path.name + ".aria2").exists()


def _folder_info(folder: Path, relative: str) -> CheckpointInfo:
    return CheckpointInfo(path=folder, name=relative, model_name=folder.name, is_folder=True)


def _file_info(file: Path, relative: str) -> CheckpointInfo:
    name = relative[: -len(file.suffix)] if file.suffix else relative
    return CheckpointInfo(path=file, name=name, model_name=file.stem, is_folder=False)


def _is_sidecar_config(folder: Path, sibling_files: list[str]) -> bool:
    """A config-only folder named like a checkpoint beside it (the loader's override)."""
    return any(Path(f).stem == folder.name and Path(f).suffix.lower() in CHECKPOINT_EXTENSIONS for f in sibling_files)


def _scan_dir(root: Path) -> Iterable[CheckpointInfo]:
    if (root / DIFFUSERS_MARKER).is_file():
        yield _folder_info(root, root.name)
        return
    seen_dirs: set[Path] = set()
    for current, dirnames, filenames in os.walk(root, followlinks=True):
        current_path = Path(current)
        real = current_path.resolve()
        if real in seen_dirs:  # a symlink loop
            dirnames[:] = []
            continue
        seen_dirs.add(real)

        kept = []
        for dirname in sorted(dirnames):
            if _is_hidden(dirname):
                continue
            sub = current_path / dirname
            if (sub / DIFFUSERS_MARKER).is_file():
                if _is_sidecar_config(sub, filenames):
                    continue  # `<name>/` next to `<name>.safetensors` is that file's config, not a model
                # A diffusers folder is one checkpoint; its inner weights are not listed.
                yield _folder_info(sub, sub.relative_to(root).as_posix())
            else:
                kept.append(dirname)
        dirnames[:] = kept

        for filename in filenames:
            file = current_path / filename
            if _is_hidden(filename) or file.suffix.lower() not in CHECKPOINT_EXTENSIONS:
                continue
            if _is_partial(file) or not file.is_file():
                continue
            yield _file_info(file, file.relative_to(root).as_posix())


def find_checkpoints(dirs: Iterable[Path], hashes: HashCache | None = None) -> list[CheckpointInfo]:
    """All `.safetensors`/`.ckpt`/`.gguf` files (recursively) and diffusers folders (folders with
    `model_index.json`) under `dirs`, sorted by name like A1111's list. An entry of `dirs`
    may also be a single checkpoint file (what `--ckpt` names).

    Missing directories are skipped; a file reachable from two dirs is listed once. With
    `hashes`, already cached hashes are filled in (nothing is hashed here: listing must stay
    instant; hash a checkpoint when it is loaded).
    """
    found: list[CheckpointInfo] = []
    seen: set[Path] = set()
    for directory in dirs:
        root = Path(directory)
        if root.is_file() and root.suffix.lower() in CHECKPOINT_EXTENSIONS:
            candidates: Iterable[CheckpointInfo] = [_file_info(root, root.name)]  # e.g. --ckpt
        elif root.is_dir():
            candidates = _scan_dir(root)
        else:
            continue
        for info in candidates:
            real = info.path.resolve()
            if real in seen:
                continue
            seen.add(real)
            if hashes is not None:
                info = info.with_sha256(hashes.sha256(info.path, compute=False))
            found.append(info)
    found.sort(key=lambda info: (natural_sort_key(info.name), info.name))
    return found


# --------------------------------------------------------------------------- hashing

def folder_weight_files(folder: Path) -> list[Path]:
    """The weight files of a diffusers folder, in the order they are hashed: sorted by
    their `/`-separated path relative to the folder, hidden entries skipped."""
    files = []
    for current, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not _is_hidden(d)]
        for filename in filenames:
            is_weight = Path(filename).suffix.lower() in FOLDER_WEIGHT_EXTENSIONS
            if not is_weight or _is_hidden(filename):
                continue
            files.append(Path(current, filename))
    return sorted(files, key=lambda f: f.relative_to(folder).as_posix())


def _feed_file(hasher, path: Path) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            hasher.update(chunk)


def compute_sha256(path: Path) -> str:
    """SHA-256 of a checkpoint file, read in 1 MiB chunks. For a diffusers folder: of its
    weight files' bytes concatenated in `folder_weight_files` order (no A1111 equivalent;
    it changes whenever any weight changes and is stable across machines)."""
    hasher = hashlib.sha256()
    path = Path(path)
    if path.is_dir():
        for file in folder_weight_files(path):
            _feed_file(hasher, file)
    else:
        _feed_file(hasher, path)
    return hasher.hexdigest()


def compute_safetensors_body_sha256(path: Path) -> str:
    """SHA-256 of a .safetensors file without its JSON header: the "addnet" hash that A1111
    writes for LoRAs in `Lora hashes` (Civitai's AutoV3), unchanged when only metadata is edited."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        header_length = int.from_bytes(handle.read(8), "little")
        handle.seek(8 + header_length)
        while chunk := handle.read(HASH_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _signature(path: Path) -> dict:
    """What must be unchanged for a cached hash to stay valid: size and mtime, for a
    folder summed/maxed over its weight files plus their names."""
    if path.is_dir():
        files = folder_weight_files(path)
        stats = [f.stat() for f in files]
        return {
            "size": sum(s.st_size for s in stats),
            "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
            "files": [f.relative_to(path).as_posix() for f in files],
        }
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class HashCache:
    """SHA-256 of checkpoints, remembered in a JSON file (A1111 calls it `cache.json`).

    The file may hold other sections (other caches); only `section` is touched. With
    `hashing=False` (the `--no-hashing` flag) nothing is computed and only valid cached
    hashes are returned. `cache_file=None` keeps the cache in memory only.
    """

    def __init__(
        self,
        cache_file: Path | None,
        *,
        hashing: bool = True,
        section: str = "checkpoint-sha256",
        digest: Callable[[Path], str] | None = None,
    ):
        """`digest` computes a file's hash (default: SHA-256 of the whole file); another
        digest needs its own `section`."""
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self.hashing = hashing
        self.section = section
        self._digest = digest or compute_sha256
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = self._load_section()

    def sha256(self, path: Path, *, compute: bool = True) -> str | None:
        """Full hex SHA-256, from the cache when the file is unchanged, else computed (when
        hashing is on and `compute` is true) and stored. None if unknown or missing."""
        path = Path(path)
        key = str(path.resolve())
        try:
            signature = _signature(path)
        except OSError:
            return None
        with self._lock:
            entry = self._entries.get(key)
        if entry and {k: entry.get(k) for k in signature} == signature and entry.get("sha256"):
            return entry["sha256"]
        if not (compute and self.hashing):
            return None
        log.info("Calculating sha256 for %s", path)
        digest = self._digest(path)
        with self._lock:
            self._entries[key] = {"sha256": digest, **signature}
            self._write_section()
        return digest

    def remember(self, path: Path, sha256: str) -> None:
        """Store a hash already checked elsewhere (a verified download), so that a multi-GB
        file is not read again to hash it."""
        path = Path(path)
        try:
            signature = _signature(path)
        except OSError:
            return
        with self._lock:
            self._entries[str(path.resolve())] = {"sha256": sha256.lower(), **signature}
            self._write_section()

    def shorthash(self, path: Path, *, compute: bool = True) -> str | None:
        digest = self.sha256(path, compute=compute)
        return digest[:SHORTHASH_LENGTH] if digest else None

    def sibling(self, section: str, digest: Callable[[Path], str]) -> "HashCache":
        """Another cache in the same file and with the same --no-hashing choice, for another digest."""
        return HashCache(self.cache_file, hashing=self.hashing, section=section, digest=digest)

    def attach(self, info: CheckpointInfo, *, compute: bool = True) -> CheckpointInfo:
        """`info` with its hash filled in (computing it if needed and allowed)."""
        return info.with_sha256(self.sha256(info.path, compute=compute))

    # -- the file -----------------------------------------------------------------------

    def _read_file(self) -> dict:
        if self.cache_file is None or not self.cache_file.exists():
            return {}
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("Ignoring unreadable hash cache %s", self.cache_file)
            return {}
        return data if isinstance(data, dict) else {}

    def _load_section(self) -> dict[str, dict]:
        section = self._read_file().get(self.section)
        if not isinstance(section, dict):
            return {}
        return {k: v for k, v in section.items() if isinstance(v, dict)}

    def _write_section(self) -> None:
        """Atomically rewrite the cache file (re-read first so other sections survive).
        A failed write only costs a rehash next time, so it is logged, not raised."""
        if self.cache_file is None:
            return
        data = self._read_file()
        data[self.section] = self._entries
        try:
            with atomic_path(self.cache_file) as temp:
                temp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        except OSError:
            log.warning("Could not write hash cache %s", self.cache_file, exc_info=True)


# --------------------------------------------------------------------------- lookup

def resolve(query: str, infos: Iterable[CheckpointInfo]) -> CheckpointInfo | None:
    """Find the checkpoint a user or API client meant, accepting what A1111 accepts for
    `sd_model_checkpoint`: a title, a name with or without extension, a shorthash or a
    full sha256.

    Order: exact alias; the same ignoring case; for `name [hash]`, the hash (the file may
    have been renamed) and then the name; finally A1111's "closest match", the shortest
    title containing the query. Hashes only match checkpoints whose hash is known.
    """
    query = (query or "").strip()
    infos = list(infos)
    if not query:
        return None
    for info in infos:
        if query in info.aliases():
            return info
    folded = query.casefold()
    for info in infos:
        if folded in (alias.casefold() for alias in info.aliases()):
            return info

    titled = _TITLE_WITH_HASH.match(query)
    if titled:
        name, digest = titled.group(1), titled.group(2).lower()
        for info in infos:
            if info.sha256 and (info.shorthash == digest or info.sha256 == digest):
                return info
        if name:
            return resolve(name, infos)
        return None

    containing = [info for info in infos if folded in info.title.casefold()]
    if containing:
        return min(containing, key=lambda info: len(info.title))
    return None
