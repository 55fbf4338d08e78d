"""A1111 file-name patterns: `samples_filename_pattern` and `directories_filename_pattern`.

A pattern is literal text with `[tag]` or `[tag<arg>]...` placeholders, e.g.
`[seed]-[model_name]-[steps]` or `[datetime<%Y%m%d_%H%M%S>]`. What A1111 users rely on:

- known tags are replaced by the image's value, sanitized like any file-name part;
- unknown tags stay as written (A1111 leaves them, so a typo is visible in the name);
- `[none]` yields nothing and drops the literal text just before it, as in A1111;
- a value this app does not know for the image yields "", and the separator next to it goes
  too, so `[seed]-[model_name]-[steps]` without a model name gives `1234-20`, not `1234--20`.

Only text is produced here; saving.py owns folders, sequence numbers and byte limits.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from PIL import Image

_INVALID_FILENAME_CHARS = '#<>:"/\\|?*\n\r\t'
_FILENAME_TRANSLATION = str.maketrans({c: "_" for c in _INVALID_FILENAME_CHARS})
MAX_FILENAME_PART = 128  # A1111 truncates each pattern part to this many characters
DEFAULT_DATETIME_FORMAT = "%Y%m%d%H%M%S"  # A1111 [datetime] and job_timestamp
DEFAULT_DATE_FORMAT = "%Y-%m-%d"  # A1111 [date]
DEFAULT_DIRECTORY_PATTERN = "[date]"

# A tag: `[name]` with optional `<arg>` groups at its end; brackets cannot nest.
_TAG = re.compile(r"\[([^\[\]]+)\]")
_TRAILING_ARG = re.compile(r"^(.*)<([^<>]*)>$", re.DOTALL)
# [prompt_words] splits on whitespace and punctuation, as A1111 does.
_WORD_SEPARATORS = re.compile(r"[\s" + re.escape(string.punctuation) + r"]+")
_SEPARATORS = "-_ "  # literal text made only of these joins two parts, and goes with an empty one
_PATH_SEPARATORS = re.compile(r"[/\\]")


def sanitize_filename_part(text: str, replace_spaces: bool = False, max_length: int | None = MAX_FILENAME_PART) -> str:
    """Make user text (the prompt) safe as part of a file name, with A1111's rules:
    reserved characters become `_`, no leading space, no trailing space or dot, and at
    most 128 characters (`max_length=None` keeps the length, for a whole assembled name)."""
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate(_FILENAME_TRANSLATION).lstrip(" ")
    if max_length is not None:
        text = text[:max_length]
    return text.rstrip(" .")


def user_folder(user: str) -> str:
    """The folder a logged-in user's images go to (per-user outputs when log-ins are on):
    their name made safe as one path part; never empty, '.' or '..'."""
    name = sanitize_filename_part(user).strip(". ")
    return name or "_"


@dataclass(frozen=True)
class NameValues:
    """What is known about one saved image, for its name. None (or empty) means unknown.
    `batch_number` is 1-based within its batch; `all_seeds` are the job's seeds, for
    `[seed_first]`/`[seed_last]`."""

    seed: int | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    model_name: str | None = None  # checkpoint file name without extension
    model_hash: str | None = None  # A1111 10-character short hash
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    sampler: str | None = None
    scheduler: str | None = None
    styles: tuple[str, ...] = ()
    clip_skip: int | None = None
    denoising_strength: float | None = None
    batch_number: int | None = None
    batch_size: int | None = None
    job_timestamp: str | datetime | None = None
    all_seeds: tuple[int, ...] = ()
    user: str | None = None  # the log-in name (--gradio-auth / --api-auth), for [user] and per-user folders


class _Marker:
    """A handler result that is not a value."""


_SKIP = _Marker()  # nothing, and drop the literal text before the tag (A1111 `[none]`)
_KEEP = _Marker()  # leave the tag as written (e.g. an unknown time zone)


@dataclass(frozen=True)
class _Context:
    values: NameValues
    now: datetime
    image: Image.Image | None
    max_prompt_words: int
    date_format: str


def _text(value) -> str:
    """A value as A1111 prints it, except whole floats lose their `.0` (CFG 7 reads `7`)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _hash(data: bytes, args: tuple[str, ...], default_length: int | None = 8) -> str:
    """sha256 hex, cut to `<N>` characters when the tag gives a length."""
    length = int(args[0]) if args and args[0].strip().isdigit() else default_length
    return hashlib.sha256(data).hexdigest()[:length]


def _datetime(ctx: _Context, args: tuple[str, ...]) -> str | _Marker:
    """`[datetime]`, `[datetime<fmt>]`, `[datetime<fmt><Area/City>]` from the save's clock."""
    fmt = args[0] if args and args[0] else DEFAULT_DATETIME_FORMAT
    moment = ctx.now
    if len(args) > 1 and args[1]:
        try:
            moment = moment.astimezone(ZoneInfo(args[1]))
        except (ValueError, KeyError, OSError):  # unknown zone: leave the tag visible
            return _KEEP
    try:
        return moment.strftime(fmt)
    except (ValueError, TypeError):
        return moment.strftime(DEFAULT_DATETIME_FORMAT)


def _prompt_words(ctx: _Context) -> str:
    words = [w for w in _WORD_SEPARATORS.split(ctx.values.prompt or "") if w] or ["empty"]
    return " ".join(words[: max(1, ctx.max_prompt_words)])


def _batch_number(v: NameValues) -> int | str | _Marker:
    if v.batch_size == 1:
        return _SKIP
    return "" if v.batch_number is None else v.batch_number


def _has_prompt(ctx: _Context, args: tuple[str, ...]) -> str:
    """`[hasprompt<cat|nocat><dog>]`: each word found in the prompt, else its fallback."""
    prompt = (ctx.values.prompt or "").lower()
    out = ""
    for arg in args:
        if not arg:
            continue
        expected, _, fallback = arg.partition("|")
        out += expected.lower() if expected.lower() in prompt else fallback
    return out


def _job_timestamp(v: NameValues) -> str:
    if isinstance(v.job_timestamp, datetime):
        return v.job_timestamp.strftime(DEFAULT_DATETIME_FORMAT)
    return v.job_timestamp or ""


def _image_hash(ctx: _Context, args: tuple[str, ...]) -> str:
    return "" if ctx.image is None else _hash(ctx.image.tobytes(), args, default_length=None)


_Handler = Callable[[_Context, tuple[str, ...]], "str | int | float | _Marker | None"]

# Each handler gets the context and the tag's `<args>`; its result is sanitized afterwards.
_TAGS: dict[str, _Handler] = {
    "seed": lambda c, a: c.values.seed,
    "seed_first": lambda c, a: c.values.all_seeds[0] if c.values.all_seeds else c.values.seed,
    "seed_last": lambda c, a: c.values.all_seeds[-1] if c.values.all_seeds else c.values.seed,
    "prompt": lambda c, a: (c.values.prompt or "").strip().replace(" ", "_"),
    "prompt_spaces": lambda c, a: c.values.prompt or "",
    "prompt_words": lambda c, a: _prompt_words(c),
    "prompt_hash": lambda c, a: _hash((c.values.prompt or "").encode(), a),
    "negative_prompt_hash": lambda c, a: _hash((c.values.negative_prompt or "").encode(), a),
    "full_prompt_hash": lambda c, a: _hash(f"{c.values.prompt or ''} {c.values.negative_prompt or ''}".encode(), a),
    "hasprompt": _has_prompt,
    "model_name": lambda c, a: c.values.model_name,
    "model_hash": lambda c, a: c.values.model_hash,
    "steps": lambda c, a: c.values.steps,
    "cfg": lambda c, a: c.values.cfg_scale,
    "width": lambda c, a: c.values.width,
    "height": lambda c, a: c.values.height,
    "sampler": lambda c, a: c.values.sampler,
    "scheduler": lambda c, a: c.values.scheduler,
    "styles": lambda c, a: ", ".join(s for s in c.values.styles if s and s != "None"),
    "clip_skip": lambda c, a: c.values.clip_skip,
    "denoising": lambda c, a: c.values.denoising_strength or _SKIP,  # A1111: nothing without img2img
    "batch_number": lambda c, a: _batch_number(c.values),
    "batch_size": lambda c, a: c.values.batch_size,
    "date": lambda c, a: c.now.strftime(c.date_format),
    "datetime": _datetime,
    "job_timestamp": lambda c, a: _job_timestamp(c.values),
    "image_hash": _image_hash,
    "user": lambda c, a: c.values.user,
    "none": lambda c, a: _SKIP,
}


def _split_args(tag: str) -> tuple[str, tuple[str, ...]]:
    """`datetime<%Y><UTC>` -> ("datetime", ("%Y", "UTC"))."""
    args: list[str] = []
    while match := _TRAILING_ARG.match(tag):
        tag, arg = match.groups()
        args.insert(0, arg)
    return tag.strip().lower(), tuple(args)


def _substitute(pattern: str, ctx: _Context) -> str:
    """Replace the tags of `pattern`; literal text is kept as is (the caller sanitizes)."""
    out = ""
    after_empty_start = False  # an empty value opened the result: its following separator goes too
    position = 0
    for match in _TAG.finditer(pattern):
        literal = pattern[position:match.start()]
        position = match.end()
        if after_empty_start:
            literal = literal.lstrip(_SEPARATORS)
        name, args = _split_args(match.group(1))
        handler = _TAGS.get(name)
        value = handler(ctx, args) if handler is not None else _KEEP
        if value is _KEEP:
            out += literal + match.group(0)
        elif value is _SKIP:
            after_empty_start = after_empty_start or not out
        else:
            text = sanitize_filename_part(_text(value), replace_spaces=False)
            if text:
                out += literal + text
                after_empty_start = False
            else:
                # An unknown value takes a pure separator before it with it.
                out += "" if not literal.strip(_SEPARATORS) else literal
                after_empty_start = not out
    tail = pattern[position:]
    return out + (tail.lstrip(_SEPARATORS) if after_empty_start else tail)


def apply_pattern(
    pattern: str,
    values: NameValues,
    now: datetime,
    *,
    image: Image.Image | None = None,
    max_prompt_words: int = 8,
    date_format: str = DEFAULT_DATE_FORMAT,
) -> str:
    """The file-name decoration for one image (without number or extension): tags
    replaced, each value and then the whole sanitized, no dangling `-` left at either end.
    `now` is the save's clock, so the name and its folder agree on the date."""
    ctx = _Context(values, now, image, max_prompt_words, date_format)
    text = sanitize_filename_part(_substitute(pattern, ctx), max_length=None)
    return text.strip("- ").rstrip(" .")


def default_filename_pattern(save_to_dirs: bool) -> str:
    """A1111's pattern when `samples_filename_pattern` is empty."""
    return "[seed]" if save_to_dirs else "[seed]-[prompt_spaces]"


def apply_directory_pattern(
    pattern: str,
    values: NameValues,
    now: datetime,
    *,
    max_prompt_words: int = 8,
    date_format: str = DEFAULT_DATE_FORMAT,
) -> tuple[str, ...]:
    """The sub-folders for `directories_filename_pattern` (empty means `[prompt_words]`, as
    A1111). A `/` or `\\` written in the pattern nests folders (`[date]/[model_name]`);
    values cannot, as their slashes are sanitized. Empty, `.` and `..` parts are dropped,
    so the result always stays inside the output folder."""
    ctx = _Context(values, now, None, max_prompt_words, date_format)
    substituted = _substitute(pattern or "[prompt_words]", ctx)
    parts = (sanitize_filename_part(part).strip("- ").rstrip(" .") for part in _PATH_SEPARATORS.split(substituted))
    return tuple(part for part in parts if part)
