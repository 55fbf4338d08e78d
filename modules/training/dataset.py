"""The training folder: which pictures a LoRA or embedding learns from, their captions, the
aspect-ratio buckets they are cut to, and the order they are seen in.

The behaviour follows kohya's sd-scripts, which is what LoRA users know: `<repeats>_<name>`
sub-folders, a `.txt` caption beside each picture, buckets of many aspect ratios with about the
same area, caption dropout, shuffle with `keep_tokens`. A1111's textual-inversion prompt
templates (`[name]`, `[filewords]`) live here too because they are captions as well.

Everything a user can get wrong raises `DatasetError` (a ValueError) with a sentence that names
the folder and the files, so the page and the API can show it as it is. The epoch plan depends
only on (seed, epoch), so a run resumed after a restart sees the same batches.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from modules.models.catalog import natural_sort_key
from modules.network import INSECURE_FLAG, AccessRefused

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
NAMES_SHOWN = 5  # how many file names an error lists before "and N more"
_REPEATS_FOLDER = re.compile(r"^(\d+)_(.*)$")  # kohya: "10_teal square" repeats 10 times, class tokens "teal square"
_LEADING_NUMBER = re.compile(r"^[-\d]+\s*")  # A1111's filewords drop "00012-" from "00012-teal_square.png"
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class DatasetError(ValueError):
    """A training folder that cannot be used as it is; the message says what to change."""


@dataclass(frozen=True)
class Sample:
    """One picture as the trainer sees it: a picture in a repeats folder appears that many
    times in the list. `size` is (width, height) after the EXIF rotation, from the header."""

    path: Path
    caption: str
    size: tuple[int, int]


# --------------------------------------------------------------------------- the folder

def check_folder_allowed(folder: Path, data_dir: Path, restricted: bool) -> Path:
    """The training folder, resolved (a relative one is inside `data_dir`). While the server is
    shared on the network (`ServerAccess.restricted`), a visitor may only train from folders
    inside the data folder; symlinks and `..` are resolved before the check."""
    data_dir = Path(data_dir).resolve()
    path = Path(os.path.expanduser(str(folder)))
    resolved = (path if path.is_absolute() else data_dir / path).resolve()
    if restricted and not resolved.is_relative_to(data_dir):
        raise AccessRefused(
            f"The training folder must be inside the data folder (for example train-data/my-pictures) while this server is "
            f"shared on the network; got {str(folder)!r}. The server's owner can allow any folder by starting it with "
            f"{INSECURE_FLAG}.")
    return resolved


def scan_folder(folder: Path, *, caption_extension: str = ".txt", caption_template: str = "", trigger_word: str = "",
                repeats_from_names: bool = True) -> list[Sample]:
    """Every picture under `folder` (recursively, in natural order) with its caption.

    Captions, in kohya's and A1111's ways: with a `caption_template`, `[trigger]`/`[name]` is the
    trigger word and `[filewords]` the caption file's text (or the file name). Without one, the
    caption file's first line; failing that the class tokens of a `10_teal` folder ("teal"), or
    the trigger word alone. A trigger word missing from a caption is put first."""
    folder = Path(folder)
    shown = str(folder) if len(str(folder)) <= 200 else str(folder)[:200] + "…"  # a message, not the whole of a huge name
    try:
        exists, is_dir = folder.exists(), folder.is_dir()
    except OSError:  # a name the file system cannot take (too long, say)
        raise DatasetError(f"The training folder {shown} cannot be opened: its name is too long or not a valid path.") from None
    if not exists:
        raise DatasetError(f"The training folder {shown} does not exist.")
    if not is_dir:
        raise DatasetError(f"The training folder {shown} is not a folder.")
    trigger_word = trigger_word.strip()
    template = caption_template.strip()
    if template and not trigger_word and re.search(r"\[(trigger|name)\]", template):
        raise DatasetError(f"The caption template {template!r} uses [trigger] but no trigger word was given.")
    extension = caption_extension if caption_extension.startswith(".") else "." + caption_extension

    pictures = _find_pictures(folder)
    if not pictures:
        raise DatasetError(f"The training folder {folder} has no pictures ({', '.join(IMAGE_EXTENSIONS)}).")
    samples, uncaptioned, unreadable = [], [], []
    for path in pictures:
        repeats, class_tokens = _repeats(path, folder) if repeats_from_names else (1, "")
        if repeats == 0:
            continue  # kohya: a "0_name" folder is switched off
        caption = _caption(path, extension, template, trigger_word, class_tokens)
        if caption is None:
            uncaptioned.append(path)
            continue
        size = _picture_size(path)
        if size is None:
            unreadable.append(path)
            continue
        samples += [Sample(path, caption, size)] * repeats
    if unreadable:
        raise DatasetError(f"These pictures in {folder} cannot be read (damaged, cut short or not pictures): "
                           f"{_names(unreadable, folder)}. Remove or replace them.")
    if uncaptioned:
        raise DatasetError(f"These pictures in {folder} have no caption: {_names(uncaptioned, folder)}. Add a "
                           f"{extension} file with the same name beside each picture, or give a caption template "
                           f"(such as \"a photo of [trigger], [filewords]\") or a trigger word.")
    if not samples:
        raise DatasetError(f"The training folder {folder} has pictures only in folders with 0 repeats.")
    return samples


def _find_pictures(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):  # symlinked sub-folders are not followed
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        found += [Path(root, name) for name in files if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")]
    return sorted(found, key=lambda path: natural_sort_key(path.relative_to(folder).as_posix()))


def _repeats(path: Path, folder: Path) -> tuple[int, str]:
    """The innermost `<repeats>_<name>` folder between `folder` and the picture: its count and
    its class tokens; (1, "") outside such folders."""
    for parent in path.relative_to(folder).parents:
        match = _REPEATS_FOLDER.match(parent.name)
        if match:
            return int(match.group(1)), match.group(2).replace("_", " ").strip()
    return 1, ""


def _caption(path: Path, extension: str, template: str, trigger_word: str, class_tokens: str) -> str | None:
    text = _read_caption(path.with_suffix(extension))
    if template:
        return render_template(template, trigger_word, text if text is not None else filewords_from_name(path))
    caption = text if text is not None else class_tokens or None
    if caption is None:
        return trigger_word or None
    if trigger_word and not re.search(rf"(?<!\w){re.escape(trigger_word)}(?!\w)", caption, re.IGNORECASE):
        caption = f"{trigger_word}, {caption}"
    return caption


def _read_caption(path: Path) -> str | None:
    """The first non-empty line of a caption file; None when there is none or it is empty."""
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(f"The caption file {path} is not UTF-8 text; save it as UTF-8.") from None
    return next((line.strip() for line in text.splitlines() if line.strip()), None)


def filewords_from_name(path: Path) -> str:
    """A1111's filewords for a picture without a caption file: its name without the leading
    number, with `_` and `-` read as spaces ("00012-teal_square.png" -> "teal square")."""
    stem = _LEADING_NUMBER.sub("", path.stem)
    return " ".join(stem.replace("_", " ").replace("-", " ").split())


def _picture_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as the picture will be loaded, or None when it cannot be decoded: PIL's
    verify() finds broken PNG chunks, and a draft-size decode finds files that are cut short."""
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            width, height = image.size
            rotated = image.getexif().get(0x0112) in _ROTATED
            image.draft("RGB", (64, 64))  # JPEG decodes at 1/8 scale: cheap, still reads every byte
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return (height, width) if rotated else (width, height)


def _names(paths: list[Path], folder: Path) -> str:
    names = [path.relative_to(folder).as_posix() for path in paths[:NAMES_SHOWN]]
    more = len(paths) - len(names)
    return ", ".join(names) + (f" and {more} more" if more else "")


# --------------------------------------------------------------------------- buckets

def make_buckets(resolution: int, min_reso: int = 256, max_reso: int = 1024, step: int = 64) -> list[tuple[int, int]]:
    """kohya's aspect-ratio buckets: for each width from `min_reso` to `max_reso` in `step`s,
    the tallest height (a multiple of `step`, at most `max_reso`) whose area stays within
    resolution², both ways round, plus the square. Sorted by (width, height). A smallest side
    above the resolution becomes half the resolution (kohya refuses; its default, 256, is made
    for 512 px and would refuse every 64 px demo run); a largest side below it is refused."""
    if step <= 0 or resolution < step:
        raise DatasetError(f"The resolution ({resolution}) must be at least the bucket step ({step}).")
    if max_reso < resolution:
        raise DatasetError(f"The largest bucket side ({max_reso}) is smaller than the resolution ({resolution}).")
    if min_reso > resolution:
        min_reso = max(step, resolution // 2 // step * step)
    blocks = (resolution // step) ** 2  # the area budget in step×step blocks
    side = int(math.isqrt(blocks)) * step
    found = {(side, side)}
    for width in range(_round_up(min_reso, step), max_reso + 1, step):
        height = min(max_reso // step * step, blocks // (width // step) * step)
        found |= {(width, height), (height, width)}
    buckets = sorted((w, h) for w, h in found if min_reso <= w <= max_reso and min_reso <= h <= max_reso)
    if not buckets:
        raise DatasetError(f"No bucket fits resolution {resolution} between {min_reso} and {max_reso} pixels a side.")
    return buckets


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def bucket_for(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio (width / height, as kohya compares them) is closest to the
    picture's; between equally close ones, the larger. With one bucket (buckets turned off:
    `[(resolution, resolution)]`) every picture goes there."""
    ratio = size[0] / size[1]
    return min(buckets, key=lambda bucket: (round(abs(bucket[0] / bucket[1] - ratio), 9), -bucket[0] * bucket[1]))


def load_picture(sample: Sample, bucket: tuple[int, int]) -> torch.Tensor:
    """The picture cut to its bucket: upright (EXIF), transparency on white, scaled (Lanczos,
    keeping its aspect) until it covers the bucket, then centre-cropped. A 3×H×W float tensor
    in [-1, 1], what the VAE encodes."""
    width, height = bucket
    with Image.open(sample.path) as opened:
        image = ImageOps.exif_transpose(opened)
        if image.mode != "RGB":
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        scale = max(width / image.width, height / image.height)
        scaled = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
        if scaled != image.size:
            image = image.resize(scaled, Image.Resampling.LANCZOS)
        left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
        image = image.crop((left, top, left + width, top + height))
        pixels = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous() / 127.5 - 1.0


# --------------------------------------------------------------------------- captions and order

def process_caption(caption: str, rng: np.random.Generator, *, dropout_rate: float = 0.0, shuffle: bool = False,
                    keep_tokens: int = 0, tag_dropout: float = 0.0) -> str:
    """A caption as one training step sees it. kohya's caption dropout (the whole caption is
    empty with that probability: the model also learns the unconditioned picture), its shuffle
    of comma-separated tags with the first `keep_tokens` tags left in place, and A1111's
    `tag_drop_out` for each tag after those. Draws come only from `rng`, so a seed repeats it."""
    if dropout_rate > 0 and rng.random() < dropout_rate:
        return ""
    if not shuffle and tag_dropout <= 0:
        return caption
    tags = [tag.strip() for tag in caption.split(",") if tag.strip()]
    kept, rest = tags[:keep_tokens], tags[keep_tokens:]
    if tag_dropout > 0:
        rest = [tag for tag, draw in zip(rest, rng.random(len(rest))) if draw >= tag_dropout]
    if shuffle:
        rest = [rest[i] for i in rng.permutation(len(rest))]
    return ", ".join(kept + rest)


def plan_epoch(samples: list[Sample], buckets: list[tuple[int, int]], batch_size: int, seed: int,
               epoch: int) -> list[list[int]]:
    """One epoch's batches of sample indices: each batch from one bucket (its pictures stack
    into one tensor), every index once, a bucket's last short batch kept. The order comes from
    (seed, epoch) alone, so a run resumed after a restart sees the same batches."""
    if batch_size < 1:
        raise DatasetError(f"The batch size must be at least 1; got {batch_size}.")
    rng = np.random.default_rng([seed % 2**64, epoch % 2**64])
    groups: dict[tuple[int, int], list[int]] = {}
    for index, sample in enumerate(samples):
        groups.setdefault(bucket_for(sample.size, buckets), []).append(index)
    batches = []
    for bucket in sorted(groups):
        indices = [groups[bucket][i] for i in rng.permutation(len(groups[bucket]))]
        batches += [indices[start:start + batch_size] for start in range(0, len(indices), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


# --------------------------------------------------------------------------- A1111 TI templates

def read_templates(folder: Path) -> dict[str, Path]:
    """A1111's textual-inversion prompt templates: every `.txt` file under `folder`, by file
    name (the API's `template_filename`, such as "style_filewords.txt"), in natural order."""
    found: dict[str, Path] = {}
    if not Path(folder).is_dir():
        return found
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            if name.lower().endswith(".txt"):
                found.setdefault(name, Path(root, name))
    return dict(sorted(found.items(), key=lambda item: natural_sort_key(item[0])))


def render_template(line: str, name: str, filewords: str) -> str:
    """One template line as a caption: `[name]` (and `[trigger]`) is the embedding's name or
    trigger word, `[filewords]` the picture's caption. Separators left dangling by an empty
    filewords are tidied away ("a photo of teal, " -> "a photo of teal")."""
    text = line.strip().replace("[name]", name).replace("[trigger]", name).replace("[filewords]", filewords)
    text = re.sub(r"\s*,(\s*,)+", ",", text)  # ", ," left by an empty filewords
    text = " ".join(text.split())
    return text.strip(" ,")
