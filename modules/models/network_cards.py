"""What A1111's Extra networks cards show, without gradio: one `NetworkCard` per LoRA, embedding,
checkpoint or VAE, with its preview picture, A1111's user metadata (`<name>.json` beside the
file) and, for a LoRA, its own training metadata (the safetensors header: kohya's `ss_*` keys,
modelspec's title, description and trigger phrase).

Files beside a model that A1111 users know:
- `<name>.preview.png` (or .jpg/.jpeg/.webp/.gif), else `<name>.png` (…): the card's picture;
- `<name>.json`: `description`, `activation text`, `preferred weight`, `negative text`, `notes`,
  `sd version`, plus whatever else someone put there (kept when the page saves).

A broken file or metadata file gives a card that says so; nothing here raises for one. The
page (modules/ui/extra_networks.py) and the preview route (modules/ui/network_previews.py)
each hold a `NetworkCards` over the app's libraries.
"""

from __future__ import annotations

import io
import json
import logging
import math
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.files import atomic_path
from modules.models.catalog import natural_sort_key

if TYPE_CHECKING:
    from PIL import Image

    from modules.jobs.generation_task import Libraries
    from modules.models.manager import ModelManager

log = logging.getLogger(__name__)

# The tabs in A1111's order, VAE last: kind -> tab label.
KINDS = {"textual_inversion": "Textual Inversion", "checkpoints": "Checkpoints", "lora": "Lora", "vae": "VAE"}
PREVIEW_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif")
SORT_FIELDS = ("Path", "Name", "Date Created", "Date Modified")  # A1111's extra_networks_card_order_field
ORDERS = ("Ascending", "Descending")
# A1111's user-metadata keys the card editor writes.
EDITABLE_KEYS = ("description", "activation text", "preferred weight", "negative text", "notes")
TRAINED_TAG_COUNT = 5  # how many of the most frequent training tags a LoRA card suggests
THUMBNAIL_SIDE = 256  # px, the longer side of a card picture as served (cards are ~180 px wide)
UNREADABLE = "This file cannot be read."
BAD_METADATA = "Its .json metadata file cannot be read."  # on the card; the name is beside it


@dataclass(frozen=True)
class TrainedInfo:
    """What a LoRA's safetensors header says about its training (all empty for other files)."""

    output_name: str = ""
    base_model: str = ""
    title: str = ""
    description: str = ""
    trigger_phrase: str = ""
    tags: tuple[str, ...] = ()  # the most frequent ss_tag_frequency tags first
    error: str | None = None


@dataclass(frozen=True)
class NetworkCard:
    kind: str
    name: str  # the card's key: what the prompt tag or the top menu uses (a checkpoint: its file name)
    path: Path
    relative: str  # the path relative to its models folder, as the Path sort and the search use it
    alias: str = ""  # a LoRA's trained name (ss_output_name), when it can stand for the file in a tag
    user: dict = field(default_factory=dict)  # the <name>.json contents
    trained: TrainedInfo = TrainedInfo()
    preview: Path | None = None
    created: float = 0.0
    modified: float = 0.0
    error: str | None = None

    @property
    def description(self) -> str:
        return _text(self.user.get("description")) or self.trained.description

    @property
    def activation_text(self) -> str:
        """Inserted after the tag: the user's "activation text", else the file's declared trigger phrase."""
        return _text(self.user.get("activation text")) or self.trained.trigger_phrase

    @property
    def negative_text(self) -> str:
        return _text(self.user.get("negative text"))

    @property
    def preferred_weight(self) -> float:
        """A1111's "preferred weight"; 0 when unset (the default multiplier applies)."""
        try:
            weight = float(self.user.get("preferred weight") or 0)
        except (TypeError, ValueError):
            return 0.0
        return weight if math.isfinite(weight) else 0.0

    @property
    def search_text(self) -> str:
        parts = (self.name, self.alias, self.relative, self.description, self.activation_text, " ".join(self.trained.tags),
                 self.trained.title)
        return " ".join(p for p in parts if p).casefold()

    def prompt_text(self, default_multiplier: float) -> str:
        """What a click adds to the prompt: `<lora:name:weight>` (and its activation text) for a
        LoRA, the word for an embedding; "" for models, which a click selects instead."""
        if self.kind == "lora":
            weight = self.preferred_weight or default_multiplier
            tag = f"<lora:{self.alias or self.name}:{weight:g}>"
            return f"{tag} {self.activation_text}" if self.activation_text else tag
        if self.kind == "textual_inversion":
            return self.name
        return ""


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


# --------------------------------------------------------------------------- files beside a model


def base_of(path: Path) -> Path:
    """`models/Lora/x.safetensors` -> `models/Lora/x`; a diffusers folder is its own base."""
    path = Path(path)
    return path if path.is_dir() else path.with_suffix("")


def find_preview(path: Path) -> Path | None:
    """`<base>.preview.<ext>`, else `<base>.<ext>`, for A1111's picture extensions."""
    base = base_of(path)
    for stem in (f"{base.name}.preview", base.name):
        for ext in PREVIEW_EXTENSIONS:
            candidate = base.with_name(f"{stem}.{ext}")
            if candidate.is_file():
                return candidate
    return None


def user_metadata_path(path: Path) -> Path:
    base = base_of(path)
    return base.with_name(base.name + ".json")


def read_user_metadata(path: Path) -> tuple[dict, str | None]:
    """(the `<name>.json` object, or {}; BAD_METADATA when the file is there but unusable)."""
    target = user_metadata_path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError) as e:
        log.warning("Could not read %s: %s", target, e)
        return {}, BAD_METADATA
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        log.warning("%s is not a JSON object", target)
        return {}, BAD_METADATA
    return data, None


def write_user_metadata(path: Path, values: dict) -> Path:
    """Update `<name>.json` with `values`, keeping every other key it has, in one atomic step.
    Raises ValueError with a sentence when the file cannot be read or written."""
    current, error = read_user_metadata(path)
    target = user_metadata_path(path)
    if error:
        raise ValueError(f"{target.name} cannot be read, so it was left as it is: fix or delete it first.")
    merged = {**current, **values}
    try:
        with atomic_path(target) as temp:
            temp.write_text(json.dumps(merged, indent=4, ensure_ascii=False), encoding="utf-8")
    except OSError as e:
        raise ValueError(f"Could not write {target.name}: {e.strerror or e}") from e
    return target


def save_preview(path: Path, image: "Image.Image") -> Path:
    """The picture as `<base>.preview.png`, written atomically (it wins over any other preview)."""
    base = base_of(path)
    target = base.with_name(f"{base.name}.preview.png")
    try:
        with atomic_path(target) as temp:
            image.save(temp, format="PNG")
    except OSError as e:
        raise ValueError(f"Could not write {target.name}: {e.strerror or e}") from e
    return target


def read_trained_info(path: Path) -> TrainedInfo:
    """A LoRA's header metadata; other formats have none. A broken file gives `error`."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return TrainedInfo()
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for broken headers
        log.warning("Could not read the header of %s: %s", path, e)
        return TrainedInfo(error=UNREADABLE)
    return TrainedInfo(
        output_name=meta.get("ss_output_name", ""),
        base_model=meta.get("ss_base_model_version") or meta.get("ss_sd_model_name") or meta.get("modelspec.architecture", ""),
        title=meta.get("modelspec.title", ""),
        description=meta.get("modelspec.description", ""),
        trigger_phrase=meta.get("modelspec.trigger_phrase", ""),
        tags=frequent_tags(meta.get("ss_tag_frequency")),
    )


def frequent_tags(raw: Any, count: int = TRAINED_TAG_COUNT) -> tuple[str, ...]:
    """kohya's `ss_tag_frequency` ({folder: {tag: n}}, as a JSON string) summed over the folders,
    most frequent first (ties by name)."""
    try:
        folders = json.loads(raw) if isinstance(raw, str) else raw
        totals: Counter = Counter()
        for tags in (folders or {}).values():
            for tag, n in (tags or {}).items():
                if str(tag).strip():
                    totals[str(tag).strip()] += int(n)
    except (ValueError, TypeError, AttributeError):
        return ()
    return tuple(tag for tag, _ in sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:count])


def thumbnail(preview: Path, side: int = THUMBNAIL_SIDE) -> bytes:
    """The picture scaled to fit `side` (never enlarged), as JPEG bytes on white."""
    from PIL import Image

    with Image.open(preview) as image:
        image.thumbnail((side, side))
        if image.mode in ("RGBA", "LA", "P"):
            rgba = image.convert("RGBA")
            image = Image.new("RGB", rgba.size, "white")
            image.paste(rgba, mask=rgba.getchannel("A"))
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=85)
        return out.getvalue()


# --------------------------------------------------------------------------- search and order


def search(cards: Iterable[NetworkCard], query: str) -> list[NetworkCard]:
    """Cards whose name, alias, path, description or trigger words hold every word of `query`."""
    words = (query or "").casefold().split()
    return [card for card in cards if all(word in card.search_text for word in words)]


def sort_cards(cards: Iterable[NetworkCard], field_name: str, order: str) -> list[NetworkCard]:
    """A1111's orders: Path (natural), Name, Date Created, Date Modified; then by path."""
    keys = {
        "Name": lambda c: (c.name.casefold(), natural_sort_key(c.relative)),
        "Date Created": lambda c: (c.created, natural_sort_key(c.relative)),
        "Date Modified": lambda c: (c.modified, natural_sort_key(c.relative)),
    }
    key = keys.get(field_name, lambda c: natural_sort_key(c.relative))
    return sorted(cards, key=key, reverse=order == "Descending")


# --------------------------------------------------------------------------- the libraries' cards


def _relative(path: Path, dirs: Iterable[Path]) -> str:
    for root in dirs:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            continue
    return Path(path).name


def _times(path: Path) -> tuple[float, float]:
    try:
        stat = path.stat()
    except OSError:
        return 0.0, 0.0
    return stat.st_ctime, stat.st_mtime


class NetworkCards:
    """The cards of the app's libraries (LoRA, embeddings, VAE) and checkpoints. A LoRA header is
    read once per file version (size, mtime); thumbnails are kept by the same key."""

    def __init__(self, libraries: "Libraries", models: "ModelManager | None", thumbnails: int = 512):
        self.libraries = libraries
        self.models = models
        self._lock = threading.Lock()
        self._headers: dict[Path, tuple[tuple, TrainedInfo]] = {}
        self._thumbnails: OrderedDict[tuple, bytes] = OrderedDict()
        self._thumbnail_limit = thumbnails

    # -- what each tab lists --------------------------------------------------------------

    def items(self, kind: str, rescan: bool = False) -> list[tuple[str, Path, str, str]]:
        """(key, path, relative path, alias) of every file the tab lists; `rescan` looks at the
        folders again first (new files appear)."""
        libs = self.libraries
        if kind == "lora" and libs.loras is not None:
            files = libs.loras.refresh() if rescan else libs.loras.files
            taken = Counter(n for f in files for n in {f.name, f.alias})
            return [(f.name, f.path, _relative(f.path, libs.loras.dirs), f.alias if f.alias != f.name and taken[f.alias] == 1 else "")
                    for f in files]
        if kind == "textual_inversion" and libs.embeddings is not None:
            if rescan:
                libs.embeddings.refresh()
            paths = libs.embeddings.files()
            return [(name, path, _relative(path, libs.embeddings.dirs), "") for name, path in paths.items()]
        if kind == "vae" and libs.vaes is not None:
            if rescan:
                libs.vaes.refresh()
            return [(p.name, p, _relative(p, libs.vaes.dirs), "") for p in libs.vaes.files]
        if kind == "checkpoints" and self.models is not None:
            infos = self.models.refresh() if rescan else self.models.checkpoints
            return [(info.filename, info.path, info.filename, "") for info in infos]
        return []

    def path_of(self, kind: str, key: str) -> Path | None:
        """The file of a listed item, by its exact key; None for anything else (a picture request
        asks this for every card, so it reads the lists without building the cards' details)."""
        libs = self.libraries
        if kind == "lora" and libs.loras is not None:
            return next((f.path for f in libs.loras.files if f.name == key), None)
        if kind == "textual_inversion" and libs.embeddings is not None:
            return libs.embeddings.files().get(key)
        if kind == "vae" and libs.vaes is not None:
            return next((p for p in libs.vaes.files if p.name == key), None)
        if kind == "checkpoints" and self.models is not None:
            return next((info.path for info in self.models.checkpoints if info.filename == key), None)
        return None

    def cards(self, kind: str, rescan: bool = False) -> list[NetworkCard]:
        return [self._card(kind, *item) for item in self.items(kind, rescan)]

    def card(self, kind: str, key: str) -> NetworkCard | None:
        """The card of the listed item `key` (exact), read now; None for anything else."""
        item = next((item for item in self.items(kind) if item[0] == key), None)
        return self._card(kind, *item) if item is not None else None

    def _card(self, kind: str, name: str, path: Path, relative: str, alias: str) -> NetworkCard:
        user, error = read_user_metadata(path)
        trained = self._trained(path) if kind == "lora" else TrainedInfo()
        created, modified = _times(path)
        return NetworkCard(kind, name, path, relative, alias, user, trained, find_preview(path), created, modified, trained.error or error)

    def _trained(self, path: Path) -> TrainedInfo:
        signature = _signature(path)
        with self._lock:
            cached = self._headers.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        info = read_trained_info(path)
        with self._lock:
            self._headers[path] = (signature, info)
        return info

    # -- pictures -------------------------------------------------------------------------

    def thumbnail(self, kind: str, key: str) -> bytes | None:
        """The listed item's preview, small; None when it has none (or it cannot be read)."""
        path = self.path_of(kind, key)
        preview = find_preview(path) if path is not None else None
        if preview is None:
            return None
        cache_key = (preview, _signature(preview))
        with self._lock:
            if cache_key in self._thumbnails:
                self._thumbnails.move_to_end(cache_key)
                return self._thumbnails[cache_key]
        try:
            data = thumbnail(preview)
        except Exception as e:  # PIL raises many kinds for a bad picture
            log.warning("Could not read the preview %s: %s", preview, e)
            return None
        with self._lock:
            self._thumbnails[cache_key] = data
            while len(self._thumbnails) > self._thumbnail_limit:
                self._thumbnails.popitem(last=False)
        return data


def _signature(path: Path) -> tuple:
    try:
        stat = Path(path).stat()
    except OSError:
        return ()
    return stat.st_size, stat.st_mtime_ns
