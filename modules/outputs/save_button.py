"""A1111's 💾 Save under an output: copies of chosen outputs in their own folder (`outdir_save`,
log/images by default), each with its `.txt` when `save_txt` is on, and a row per copy in that
folder's `log.csv` (A1111's columns), so a user can keep the pictures they like apart from
everything a session made.

A copy keeps its file's bytes (its metadata with them) and its name, `-1`, `-2`, ... added when
that name is taken; a picture that was never saved (saving off) is written from the image with
its infotext. Files appear complete (temp file, then a no-clobber link); log rows are appended
whole, under a lock, with the header when the file is new. Nothing here knows about the UI.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from modules.outputs.infotext import parse_infotext
from modules.outputs.saving import (
    _create_temp_file, _fsync_directory, _link_new, _truncate_utf8, encode_image, write_text_atomic,
)

# A1111's log.csv header (1.6 and later), in its order.
LOG_FIELDS = ("prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename", "negative_prompt", "sd_model_name",
              "sd_model_hash")


@dataclass(frozen=True)
class Output:
    """One picture under an output: its saved file, else (saving off) the picture itself."""

    infotext: str
    path: Path | None = None
    image: Image.Image | None = None


@dataclass
class SaveFolder:
    """The Save button's folder. Share one per folder so log rows never interleave."""

    directory: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def save(self, outputs: list[Output], save_txt: bool = False) -> list[Path]:
        """Copy each output here; returns the files written (pictures, each followed by its
        .txt with `save_txt`). ValueError with a sentence when there is nothing to save."""
        if not outputs:
            raise ValueError("Nothing to save: generate a picture first.")
        self.directory.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        rows = []
        for output in outputs:
            picture, size = self._copy(output, save_txt)
            written.append(picture)
            if save_txt and output.infotext:
                written.append(write_text_atomic(picture.with_suffix(".txt"), output.infotext))
            rows.append(_log_row(output.infotext, picture.relative_to(self.directory).as_posix(), size))
        self._append_log(rows)
        _fsync_directory(self.directory)
        return written

    def _copy(self, output: Output, save_txt: bool = False) -> tuple[Path, tuple[int, int]]:
        if output.path is not None and Path(output.path).is_file():
            source = Path(output.path)
            data = source.read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                size = image.size
            return self._claim(data, source.stem, source.suffix.lower() or ".png", save_txt), size
        if output.image is None:
            raise ValueError("This picture's file is gone and the page holds no copy of it: generate it again to save it.")
        buffer = io.BytesIO()
        encode_image(output.image, buffer, "png", output.infotext or None)
        stem = f"{(parse_infotext(output.infotext).get('Seed') or 'image')}" if output.infotext else "image"
        return self._claim(buffer.getvalue(), stem, ".png", save_txt), output.image.size

    def _claim(self, data: bytes, stem: str, suffix: str, with_txt: bool = False) -> Path:
        """`data` as `<stem><suffix>` here, or `<stem>-N<suffix>`: never over another file (nor,
        `with_txt`, over another picture's `<stem>.txt`: a .jpg beside a saved .png of that name)."""
        stem = _truncate_utf8(stem, 180) or "image"
        fd, temp = _create_temp_file(self.directory, suffix.lstrip("."))
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            number = 0
            with self._lock:
                while True:
                    final = self.directory / f"{stem}{f'-{number}' if number else ''}{suffix}"
                    if not (with_txt and final.with_suffix(".txt").exists()) and _link_new(temp, final):
                        break
                    number += 1
        finally:
            temp.unlink(missing_ok=True)
        return final

    def _append_log(self, rows: list[list[str]]) -> None:
        """Whole rows at the end of log.csv in one write, the header first when it is new. A
        log.csv with another header (an older A1111's nine columns) is first rewritten to
        today's columns, its rows kept under their names, as A1111 does."""
        path = self.directory / "log.csv"
        with self._lock:
            new = not path.exists() or path.stat().st_size == 0
            if not new:
                _update_log_header(path)
            text = io.StringIO()
            writer = csv.writer(text)
            if new:
                writer.writerow(LOG_FIELDS)
            elif not _ends_with_newline(path):  # a hand-edited file: the row must not join its last line
                text.write("\n")
            writer.writerows(rows)
            with open(path, "a", encoding="utf-8", newline="") as handle:
                handle.write(text.getvalue())
                handle.flush()
                os.fsync(handle.fileno())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) in (b"\n", b"\r")


def _update_log_header(path: Path) -> None:
    """Rewrite `path` (atomically) with LOG_FIELDS as its header when it has another one."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if tuple(header) == LOG_FIELDS:
            return
        old_rows = list(reader)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(LOG_FIELDS)
    for row in old_rows:
        named = dict(zip(header, row))
        writer.writerow([named.get(name, "") for name in LOG_FIELDS])
    write_text_atomic(path, text.getvalue())


def _log_row(infotext: str, filename: str, size: tuple[int, int]) -> list[str]:
    fields = parse_infotext(infotext) if infotext else {}
    prompt = fields.get("Prompt", "")
    width, height = size
    return [prompt, fields.get("Seed", ""), str(width), str(height), fields.get("Sampler", ""), fields.get("CFG scale", ""),
            fields.get("Steps", ""), filename, fields.get("Negative prompt", ""), fields.get("Model", ""), fields.get("Model hash", "")]


@dataclass
class SaveFolders:
    """One SaveFolder per folder, for the app's lifetime (the folder may change with
    `outdir_save`, and with log-ins each user has one)."""

    _folders: dict[Path, SaveFolder] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self, directory: Path) -> SaveFolder:
        with self._lock:
            return self._folders.setdefault(Path(directory), SaveFolder(Path(directory)))
