"""The A1111 infotext: the plain-text record of how an image was made.

It is written into every saved image (PNG `parameters` chunk, EXIF UserComment for
JPEG/WebP), shown under the gallery and pasted back into the UI, so the format must match
A1111 byte for byte: other tools (civitai, image browsers, A1111 itself) parse it.

Layout::

    <prompt, may span lines>
    Negative prompt: <negative, may span lines>      (only when the negative is non-empty)
    Key: value, Key: value, ...                       (the params line)

Parsing is split into small steps (`split_infotext`, `parse_params_line`) so the later,
fuller parser (defaults for missing keys, styles, typed values) can reuse them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)

NEGATIVE_PREFIX = "Negative prompt:"

# A1111's params-line pattern: `Key: value` pairs where the value is either a JSON string
# (escapes allowed) or anything up to the next comma. Keys start with a word character and
# may contain spaces, `-` and `/` (e.g. "Hires resize", "Refiner switch at").
_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")
# The last line counts as the params line only with at least this many pairs, so a prompt
# that happens to contain "a: b" is not mistaken for parameters.
_MIN_PARAMS_ON_LAST_LINE = 3

# EXIF: the Exif sub-IFD pointer and the UserComment tag inside it.
EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
_UNICODE_PREFIX = b"UNICODE\0"
_ASCII_PREFIX = b"ASCII\0\0\0"
_UNDEFINED_PREFIX = b"\0" * 8


# --------------------------------------------------------------------------- writing

def quote_value(value: Any) -> str:
    """Render one params-line value.

    JSON-quote only when the text would break the `Key: value, ...` syntax (a comma,
    newline or colon); otherwise A1111 writes it raw, numbers via str().
    """
    text = str(value)
    if "," in text or "\n" in text or ":" in text:
        return json.dumps(text, ensure_ascii=False)
    return text


def format_params_line(fields: Iterable[tuple[str, object]]) -> str:
    """`Key: value, Key: value`; None values are dropped and a key equal to its value is
    written bare (A1111 uses that for flag-like entries)."""
    parts = []
    for key, value in fields:
        if value is None:
            continue
        if isinstance(value, str) and value == key:
            parts.append(key)
        else:
            parts.append(f"{key}: {quote_value(value)}")
    return ", ".join(parts)


def format_infotext(prompt: str, negative_prompt: str, fields: list[tuple[str, object]]) -> str:
    """Build the full infotext. Field order is the caller's (A1111 has a fixed key order,
    which belongs with the parameter definitions, not here)."""
    text = prompt or ""
    if negative_prompt:
        text += f"\n{NEGATIVE_PREFIX} {negative_prompt}"
    text += "\n" + format_params_line(fields)
    # A1111 strips the result, so an empty prompt does not leave a leading blank line.
    return text.strip()


# --------------------------------------------------------------------------- parsing

def unquote_value(value: str) -> str:
    """Undo `quote_value`: JSON-decode a double-quoted value, leave anything else as is."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else str(decoded)
    return value


def is_params_line(line: str) -> bool:
    return len(_find_params(line, _MIN_PARAMS_ON_LAST_LINE)) >= _MIN_PARAMS_ON_LAST_LINE


# What a key is made of after its first character, and the whitespace `\s*` skips before one.
_KEY_RUN = re.compile(r"[\w \-/]*")
_SPACES = re.compile(r"\s*")
_WORD = re.compile(r"\w")


def _find_params(line: str, stop: int | None = None) -> list[tuple[str, str]]:
    """`_PARAM_RE.findall(line)` (A1111's pattern), in linear time, stopping after `stop` pairs.

    findall retries the key part at every position of a long run of key characters that no ':'
    ends, which made a 100 kB last line take seconds: every start inside such a run fails the
    same way (the greedy run ends at the same place), so the scan jumps past the run instead."""
    found: list[tuple[str, str]] = []
    pos, end = 0, len(line)
    while pos < end and (stop is None or len(found) < stop):
        key_at = _SPACES.match(line, pos).end()
        if key_at >= end or not _WORD.match(line, key_at):
            pos = key_at + 1  # every start from pos to here skips the same spaces to a non-key character
            continue
        run_end = _KEY_RUN.match(line, key_at + 1).end()
        if run_end == key_at + 1 or run_end >= end or line[run_end] != ":":
            pos = max(run_end, key_at + 1)  # no ':' ends this run: no start inside it can match either
            continue
        m = _PARAM_RE.match(line, pos)
        if m is None:  # not expected: the checks above are the pattern's own conditions
            pos += 1
            continue
        found.append(m.groups())
        pos = m.end() if m.end() > pos else pos + 1
    return found


def split_infotext(text: str) -> tuple[str, str, str]:
    """Split into (prompt, negative prompt, params line), following A1111's line rules:
    each line is stripped, lines from the first `Negative prompt:` on are the negative."""
    *lines, last = text.strip().split("\n")
    if not is_params_line(last):
        lines.append(last)
        last = ""

    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    return "\n".join(prompt_lines), "\n".join(negative_lines), last


def parse_params_line(line: str) -> dict[str, str]:
    """`Key: value, ...` to a dict of strings. `WxH` values are also split into `Key-1`
    (width) and `Key-2` (height), the keys A1111's paste code reads; the combined value is
    kept under `Key` too so a round trip loses nothing."""
    result: dict[str, str] = {}
    for key, raw in _find_params(line):
        value = unquote_value(raw)
        result[key] = value
        size = _SIZE_RE.match(value)
        if size:
            result[f"{key}-1"] = size.group(1)
            result[f"{key}-2"] = size.group(2)
    return result


def parse_infotext(text: str) -> dict:
    """Parse an infotext into {"Prompt", "Negative prompt", <params as strings>}.

    Never raises: pasted text can be anything, and a bad paste should give back at least
    the text as a prompt rather than an error page.
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    try:
        prompt, negative, params = split_infotext(text)
        result: dict[str, str] = {"Prompt": prompt, "Negative prompt": negative}
        for key, value in parse_params_line(params).items():
            result.setdefault(key, value)  # a param may not override the prompt keys
        return result
    except Exception:  # defensive: the regexes should not fail, but garbage must not raise
        log.exception("could not parse infotext")
        return {"Prompt": text.strip(), "Negative prompt": ""}


# --------------------------------------------------------------------------- reading files

def decode_user_comment(data: bytes | str) -> str | None:
    """Decode an EXIF UserComment: an 8-byte charset prefix followed by the text.

    `UNICODE` is UTF-16; the standard says the EXIF byte order, A1111 (piexif) writes
    big-endian, some tools write little-endian, so a BOM or the position of the zero bytes
    decides.
    """
    if isinstance(data, str):
        return data
    if not data:
        return None
    prefix, body = data[:8], data[8:]
    if prefix == _UNICODE_PREFIX:
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            return body.decode("utf-16", errors="replace")
        even_zeros = body[0::2].count(0)
        odd_zeros = body[1::2].count(0)
        encoding = "utf-16-le" if odd_zeros > even_zeros else "utf-16-be"
        return body.decode(encoding, errors="replace")
    if prefix == _ASCII_PREFIX:
        return body.decode("ascii", errors="replace")
    if prefix == _UNDEFINED_PREFIX:
        return body.rstrip(b"\0").decode("utf-8", errors="replace")
    return data.decode("utf-8", errors="replace")


def encode_user_comment(text: str) -> bytes:
    """The bytes A1111 writes (piexif `UserComment.dump(..., encoding="unicode")`)."""
    return _UNICODE_PREFIX + text.encode("utf-16-be")


_UNDEFINED, _LONG = 7, 4


def exif_with_user_comment(text: str) -> bytes:
    """A whole EXIF block (`Exif\\0\\0` + big-endian TIFF) holding just the UserComment, laid
    out as A1111's piexif writes it: IFD0 points to the Exif IFD, whose one entry is the
    comment with type UNDEFINED. Pillow would type a bytes value as BYTE, which piexif-based
    readers (A1111's PNG Info, sd-prompt-reader) do not accept as a UserComment."""
    import struct

    comment = encode_user_comment(text)
    ifd0_at = 8
    exif_ifd_at = ifd0_at + 2 + 12 + 4  # one entry, then the next-IFD link
    data_at = exif_ifd_at + 2 + 12 + 4
    tiff = b"MM\x00\x2a" + struct.pack(">I", ifd0_at)
    tiff += struct.pack(">HHHII", 1, EXIF_IFD, _LONG, 1, exif_ifd_at) + struct.pack(">I", 0)
    tiff += struct.pack(">HHHII", 1, USER_COMMENT, _UNDEFINED, len(comment), data_at) + struct.pack(">I", 0)
    return b"Exif\x00\x00" + tiff + comment


def _exif_user_comment(image: Image.Image) -> str | None:
    try:
        exif = image.getexif()
        raw = exif.get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception:  # broken EXIF must not hide a PNG chunk or crash the PNG Info tab
        log.debug("unreadable EXIF", exc_info=True)
        return None
    if raw is None:
        return None
    text = decode_user_comment(raw)
    return text.rstrip("\0") if text else None


def read_infotext_from_image(image: Image.Image) -> str | None:
    """Infotext of an already opened image. Like A1111, an EXIF UserComment wins over the
    PNG `parameters` chunk; GIFs keep it in `comment`."""
    comment = _exif_user_comment(image)
    if comment:
        return comment
    info = getattr(image, "info", {}) or {}
    params = info.get("parameters")
    if isinstance(params, bytes):
        params = params.decode("utf-8", errors="replace")
    if params:
        return params
    gif_comment = info.get("comment")
    if isinstance(gif_comment, bytes):
        gif_comment = gif_comment.decode("utf-8", errors="replace")
    return gif_comment or None


def read_infotext(path_or_image: str | Path | Image.Image) -> str | None:
    """Infotext from an image file or a PIL image; None when there is none or the file
    cannot be read as an image."""
    if isinstance(path_or_image, Image.Image):
        return read_infotext_from_image(path_or_image)
    try:
        with Image.open(path_or_image) as image:
            return read_infotext_from_image(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        log.debug("cannot read infotext from %s", path_or_image, exc_info=True)
        return None
