"""Prompt styles: named prompt/negative-prompt snippets kept in A1111's `styles.csv` files.

Users edit these files by hand (often in a spreadsheet), so reading is forgiving (BOM, CRLF,
old `text` column, missing file) and writing keeps what we do not understand: other rows, their
order and any extra columns. Writes are atomic so a crash never leaves a half-written file.
"""

from __future__ import annotations

import csv
import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from modules.files import atomic_path

log = logging.getLogger(__name__)

PROMPT_PLACEHOLDER = "{prompt}"
BASE_COLUMNS = ("name", "prompt", "negative_prompt")
# Styles files from old A1111 versions call the prompt column `text`.
LEGACY_PROMPT_COLUMN = "text"


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str
    negative_prompt: str


def apply_style_text(style_text: str, prompt: str) -> str:
    """Put `prompt` into the style's `{prompt}` placeholder, or append the style as `prompt, style`."""
    if PROMPT_PLACEHOLDER in style_text:
        return style_text.replace(PROMPT_PLACEHOLDER, prompt)
    if not style_text.strip():
        return prompt
    if not prompt.strip():
        return style_text.strip()
    return f"{prompt.strip()}, {style_text.strip()}"


@dataclass
class _Table:
    """One CSV file as written: its header and raw rows, so a rewrite loses nothing."""

    fieldnames: list[str]
    rows: list[dict[str, str]]

    def prompt_column(self) -> str:
        if "prompt" not in self.fieldnames and LEGACY_PROMPT_COLUMN in self.fieldnames:
            return LEGACY_PROMPT_COLUMN
        return "prompt"


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is edited or replaced; None for a missing file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _read_table(path: Path) -> _Table:
    """The file's rows. A file saved by a spreadsheet in the Windows code page (not UTF-8) is
    read as cp1252; one that is not CSV at all counts as empty, with a warning, so a bad
    styles file never keeps the page from starting."""
    # utf-8-sig drops a spreadsheet's BOM; newline="" lets csv handle CRLF and quoted newlines.
    for encoding, errors in (("utf-8-sig", "strict"), ("cp1252", "replace")):
        try:
            with open(path, encoding=encoding, errors=errors, newline="") as handle:
                reader = csv.DictReader(handle)
                rows = list(reader)
                fieldnames = list(reader.fieldnames or [])
            return _Table(fieldnames, rows)
        except FileNotFoundError:
            return _Table(list(BASE_COLUMNS), [])
        except UnicodeDecodeError:
            continue
        except (csv.Error, OSError) as exc:
            log.warning("Could not read styles file %s: %s", path, exc)
            return _Table(list(BASE_COLUMNS), [])
    return _Table(list(BASE_COLUMNS), [])


def _row_style(row: dict, prompt_column: str) -> PromptStyle | None:
    name = row.get("name")
    if not name:
        return None
    return PromptStyle(name=name, prompt=row.get(prompt_column) or "", negative_prompt=row.get("negative_prompt") or "")


class ReadOnlyStylesFile(ValueError):
    """The styles file cannot be written; it was left as it was."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def _check_writable(path: Path) -> None:
    """Refuse, before anything is written, a file the user made read-only (or a folder that
    cannot take the new file): the atomic replace would otherwise swap a read-only file
    for a writable copy, and root would ignore the flag altogether."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        folder = next((p for p in path.parents if p.exists()), None)
        if folder is not None and not os.access(folder, os.W_OK):
            raise ReadOnlyStylesFile(f"The styles file {path} cannot be created: its folder is read-only. Nothing was changed.", path) from None
        return
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise ReadOnlyStylesFile(f"The styles file {path} is read-only. Nothing was changed.", path)


def _write_table(path: Path, table: _Table) -> None:
    _check_writable(path)
    fieldnames = list(table.fieldnames)
    for column in BASE_COLUMNS:
        if column not in fieldnames and not (column == "prompt" and table.prompt_column() != "prompt"):
            fieldnames.append(column)
    with atomic_path(path) as temp:
        with open(temp, "w", encoding="utf-8", newline="") as handle:
            # extrasaction="ignore" drops the `None` key csv uses for cells past the header.
            writer = csv.DictWriter(handle, fieldnames=fieldnames, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows({key: value or "" for key, value in row.items() if key is not None} for row in table.rows)


class StyleStore:
    """The styles from several files, re-read when a file changes on disk.

    A later file (or later row) with the same name overrides an earlier one, keeping the first
    one's position. New styles go to the first file. All methods are safe to call from several
    threads; reads only `stat` the files unless one changed.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self._lock = threading.RLock()
        self._signatures: list[tuple[int, int, int] | None] | None = None
        self._styles: dict[str, PromptStyle] = {}
        self._sources: dict[str, Path] = {}

    @classmethod
    def frozen(cls, styles: Sequence[PromptStyle]) -> "StyleStore":
        """A store of these styles and no files: a Ray worker applies the serving machine's."""
        store = cls([])
        store._styles, store._signatures = {s.name: s for s in styles}, []
        return store

    def reload(self) -> None:
        """Read every file again, whether or not it changed."""
        with self._lock:
            signatures = [_signature(p) for p in self.paths]
            styles: dict[str, PromptStyle] = {}
            sources: dict[str, Path] = {}
            for path in self.paths:
                table = _read_table(path)
                column = table.prompt_column()
                for row in table.rows:
                    style = _row_style(row, column)
                    if style is not None:
                        styles[style.name] = style
                        sources[style.name] = path
            self._styles, self._sources, self._signatures = styles, sources, signatures

    def _fresh(self) -> dict[str, PromptStyle]:
        with self._lock:
            if self._signatures != [_signature(p) for p in self.paths]:
                self.reload()
            return self._styles

    @property
    def styles(self) -> list[PromptStyle]:
        return list(self._fresh().values())

    @property
    def names(self) -> list[str]:
        return list(self._fresh())

    def get(self, name: str) -> PromptStyle | None:
        return self._fresh().get(name)

    def apply(self, prompt: str, negative_prompt: str, names: Sequence[str]) -> tuple[str, str]:
        """Apply the named styles in order to both prompts; an unknown name is a ValueError."""
        styles = self._fresh()
        for name in names:
            style = styles.get(name)
            if style is None:
                raise ValueError(self._unknown(name, styles))
            prompt = apply_style_text(style.prompt, prompt)
            negative_prompt = apply_style_text(style.negative_prompt, negative_prompt)
        return prompt, negative_prompt

    def save(self, style: PromptStyle) -> None:
        """Add `style`, or replace the style of that name in the file it came from."""
        if not style.name:
            raise ValueError("A style needs a name")
        with self._lock:
            self._fresh()
            path = self._sources.get(style.name) or self._first_path()
            table = _read_table(path)
            column = table.prompt_column()
            values = {"name": style.name, column: style.prompt, "negative_prompt": style.negative_prompt}
            rows, replaced = [], False
            for row in table.rows:
                if row.get("name") != style.name:
                    rows.append(row)
                elif not replaced:  # later duplicates in this file would override the new values
                    rows.append({**row, **values})
                    replaced = True
            if not replaced:
                rows.append(values)
            _write_table(path, _Table(table.fieldnames, rows))
            self.reload()

    def delete(self, name: str) -> None:
        """Remove the style from every file that defines it, so an earlier copy cannot resurface.
        Every file is checked before any is written, so a read-only one changes nothing."""
        with self._lock:
            styles = self._fresh()
            if name not in styles:
                raise ValueError(self._unknown(name, styles))
            changes = []
            for path in self.paths:
                table = _read_table(path)
                rows = [row for row in table.rows if row.get("name") != name]
                if len(rows) != len(table.rows):
                    changes.append((path, _Table(table.fieldnames, rows)))
            self._write_all(changes)

    def rename(self, old: str, new: str) -> None:
        """Give a style a new name where it stands: same file, same row, same prompts and
        extra columns; no row keeps the old name (in any file). A new name that another style
        has already is refused rather than overwriting that style."""
        new = (new or "").strip()
        if not new:
            raise ValueError("A style needs a name")
        with self._lock:
            styles = self._fresh()
            if old not in styles:
                raise ValueError(self._unknown(old, styles))
            if new == old:
                return
            if new in styles:
                raise ValueError(f"A style named {new!r} exists already; delete it first or pick another name")
            source = self._sources[old]
            changes = []
            for path in self.paths:
                table = _read_table(path)
                rows, kept = [], False
                for row in table.rows:
                    if row.get("name") != old:
                        rows.append(row)
                    elif path == source and not kept:
                        kept = True  # the first row holds the place; the effective prompts go in it
                        column = table.prompt_column()
                        rows.append({**row, "name": new, column: styles[old].prompt, "negative_prompt": styles[old].negative_prompt})
                if len(rows) != len(table.rows) or kept:
                    changes.append((path, _Table(table.fieldnames, rows)))
            self._write_all(changes)

    def _write_all(self, changes: list[tuple[Path, _Table]]) -> None:
        """Write several files after checking that all of them can be written."""
        for path, _table in changes:
            _check_writable(path)
        try:
            for path, table in changes:
                _write_table(path, table)
        finally:
            self.reload()

    def describe(self) -> list[dict]:
        """The `/sdapi/v1/prompt-styles` answer."""
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in self.styles]

    def _first_path(self) -> Path:
        if not self.paths:
            raise ValueError("No styles file is configured")
        return self.paths[0]

    @staticmethod
    def _unknown(name: str, styles: dict[str, PromptStyle]) -> str:
        known = ", ".join(repr(n) for n in styles) or "none"
        return f"Style not found: {name!r}; known styles: {known}"
