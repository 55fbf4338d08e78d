"""The checkpoints users start from (`configs/checkpoints.json`) and turning what a user asks
to download, a catalog name or a pasted URL, into a `FetchSource` and a models/ folder.

Catalog URLs are paths on the Hugging Face hub host, so HF_ENDPOINT (a mirror, or a test
server) changes where they come from, as it does in A1111.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from modules.models.fetch import FetchSource, hub_endpoint

CATALOG_FILE = Path(__file__).resolve().parent.parent.parent / "configs" / "checkpoints.json"
CHECKPOINT_FOLDER = "Stable-diffusion"
# The models/ subfolders a download may go to (A1111's names).
MODEL_FOLDERS = (CHECKPOINT_FOLDER, "Lora", "VAE", "embeddings", "ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT", "GFPGAN", "Codeformer",
                 "BLIP", "CLIP", "deepbooru", "face-detection", "VAE-approx",
                 "ControlNet", "ControlNetPreprocessor",  # ControlNet models; their annotator weights (depth, pose, line art...)
                 "inception")  # the FID Inception-v3 that scores trained LoRAs (modules/training/scores.py)


def is_url(text: str) -> bool:
    return urlsplit(text.strip()).scheme.lower() in ("http", "https")


@dataclass(frozen=True)
class CatalogEntry:
    name: str  # what `--download` takes, e.g. "sd15"
    title: str
    architecture: str  # a folder of configs/ (sd1, sd2, sdxl)
    filename: str
    size: int
    sha256: str
    url: str  # a hub path ("org/repo/resolve/main/file"), or a full http(s) URL
    folder: str = CHECKPOINT_FOLDER
    note: str = ""
    also: tuple[str, ...] = ()  # entries fetched with this one (a tagger's label table): a model of several files
    git_blob: str = ""  # pinned by its Git blob id instead, for a file kept in a Git repository whose SHA-256 nobody publishes

    @property
    def shorthash(self) -> str:
        return self.sha256[:10]

    def resolved_url(self, endpoint: str | None = None) -> str:
        if is_url(self.url):
            return self.url
        return f"{(endpoint or hub_endpoint()).rstrip('/')}/{self.url.lstrip('/')}"

    def source(self, endpoint: str | None = None) -> FetchSource:
        return FetchSource(self.resolved_url(endpoint), filename=self.filename, sha256=self.sha256 or None, size=self.size or None,
                           label=self.filename, git_blob=self.git_blob or None)

    def matches(self, query: str) -> bool:
        folded = query.strip().casefold()
        return folded in (self.name.casefold(), self.filename.casefold(), Path(self.filename).stem.casefold())


@dataclass(frozen=True)
class Catalog:
    entries: tuple[CatalogEntry, ...]
    default_name: str

    @classmethod
    def load(cls, path: Path = CATALOG_FILE) -> "Catalog":
        """Read the catalog; a malformed file is a ValueError that names the problem."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            entries = tuple(_entry(item) for item in data["checkpoints"])
            default = data.get("default") or (entries[0].name if entries else "")
            names = {e.name for e in entries}
            for e in entries:
                if not set(e.also) <= names:
                    raise ValueError(f"{e.name}: 'also' names {', '.join(sorted(set(e.also) - names))}, which the catalog lacks")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"Cannot read the checkpoint catalog {path}: {exc}") from exc
        return cls(entries, default)

    def find(self, query: str) -> CatalogEntry | None:
        """By name (`sd15`), file name or file stem, ignoring case."""
        return next((e for e in self.entries if e.matches(query)), None)

    @property
    def default(self) -> CatalogEntry | None:
        """The checkpoint fetched at first start when the user has none (A1111: SD 1.5)."""
        return self.find(self.default_name)

    def names(self) -> list[str]:
        return [e.name for e in self.entries]


def _entry(item: dict) -> CatalogEntry:
    entry = CatalogEntry(**{**item, "also": tuple(item.get("also") or ())})
    def is_hex(text: str, length: int) -> bool:
        return len(text) == length and all(c in "0123456789abcdef" for c in text)

    if not (is_hex(entry.sha256, 64) or (not entry.sha256 and is_hex(entry.git_blob, 40))):
        raise ValueError(f"{entry.name}: sha256 must be 64 lower-case hex digits (or empty, with a 40-digit git_blob)")
    if entry.folder not in MODEL_FOLDERS:
        raise ValueError(f"{entry.name}: folder must be one of {', '.join(MODEL_FOLDERS)}")
    return entry


def model_folders(paths) -> dict[str, Path]:
    """Where each models/ subfolder is for an `options.Paths` (checkpoints go to the first
    checkpoint folder, as A1111's download does)."""
    fixed = {CHECKPOINT_FOLDER: paths.ckpt_dirs[0], "Lora": paths.loras, "VAE": paths.vaes, "embeddings": paths.embeddings}
    return {name: fixed.get(name) or paths.model_dir(name) for name in MODEL_FOLDERS}


def resolve_request(query: str, catalog: Catalog, *, folder: str | None = None, endpoint: str | None = None) -> tuple[FetchSource, str]:
    """What a user typed (a catalog name or an http(s) URL) as a source and the models/
    subfolder it goes to: the entry's own folder, else `folder`, else Stable-diffusion."""
    query = (query or "").strip()
    if folder is not None and folder not in MODEL_FOLDERS:
        raise ValueError(f"Unknown models folder '{folder}': choose one of {', '.join(MODEL_FOLDERS)}.")
    entry = catalog.find(query) if query else None
    if entry is not None:
        return entry.source(endpoint), entry.folder
    if is_url(query):
        return FetchSource(query), folder or CHECKPOINT_FOLDER
    known = ", ".join(catalog.names()) or "none"
    raise ValueError(f"'{query}' is neither a known checkpoint ({known}) nor an http(s) URL.")
