"""The outputs gallery's index: every image under outputs/ with its infotext, kept in SQLite so
the Gallery tab can page, filter and search 10,000 images without opening any of them.

The index is a cache of the file system, kept incrementally. Adding, removing or renaming a
file changes its directory's mtime, so a refresh stats every known directory (cheap) and lists
only those whose mtime moved, plus new ones; in a listed directory only files whose size or
mtime changed are read again. Files that other programs add or remove therefore show up at the
next refresh without a rescan. A file rewritten in place keeps its directory's mtime: `refresh
(full=True)` catches that.

Deleting moves the file to `<trash>/<token>/<rel>`. The trash folder itself is the record, so
an undo still works after the database was rebuilt. Nothing here knows about the UI.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import shutil
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image

from modules.outputs.infotext import parse_infotext, read_infotext

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
SCHEMA_VERSION = 1
# A directory changed this recently may change again within the same timestamp tick (coarse
# clocks; FAT keeps 2 s), which its mtime would not show: it is not trusted yet, but listed again
# at the next refresh (a listing, no file read).
RACY_WINDOW_NS = 2_000_000_000
_UNTRUSTED = -1
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TOKEN_RE = re.compile(r"^\d{19}-[0-9a-f]{8}$")
# A search term: optional `seed:`/`model:` prefix, then a "quoted phrase" (closing quote
# optional) or a bare word.
_TERM_RE = re.compile(r'(?:(seed|model):)?(?:"([^"]*)"?|(\S+))', re.IGNORECASE)
_MAX_SQL_INT = 2**63 - 1
_SEP = "\x1f"  # between the searchable fields, so a phrase never spans two (SQLite's LIKE stops at NUL)

_SCHEMA = f"""
CREATE TABLE dirs (rel TEXT PRIMARY KEY, parent TEXT, mtime_ns INTEGER NOT NULL);
CREATE TABLE images (
    rel TEXT PRIMARY KEY, dir TEXT NOT NULL, folder TEXT NOT NULL, date TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL, width INTEGER, height INTEGER,
    prompt TEXT NOT NULL, negative_prompt TEXT NOT NULL, seed INTEGER, model TEXT NOT NULL,
    model_hash TEXT NOT NULL, infotext TEXT NOT NULL, search_text TEXT NOT NULL, search_model TEXT NOT NULL
);
CREATE INDEX images_newest ON images (mtime_ns DESC, rel DESC);
CREATE INDEX images_folder ON images (folder, mtime_ns DESC, rel DESC);
CREATE INDEX images_dir ON images (dir);
CREATE INDEX images_seed ON images (seed);
PRAGMA user_version = {SCHEMA_VERSION};
"""
_ENTRY_COLUMNS = "rel, folder, date, mtime_ns, size, width, height, prompt, negative_prompt, seed, model, model_hash, infotext"
_ORDER = "ORDER BY mtime_ns DESC, rel DESC"


@dataclass(frozen=True)
class GalleryEntry:
    rel: str  # posix path relative to the outputs folder: the id the UI passes back
    path: Path
    folder: str  # first component of rel ("txt2img-images", ...); "" for a file directly in outputs/
    date: str  # YYYY-MM-DD: the date folder, else the file's local mtime date
    mtime: float
    size: int
    width: int | None  # None when the file is not a readable image
    height: int | None
    prompt: str
    negative_prompt: str
    seed: int | None
    model: str
    model_hash: str
    infotext: str


@dataclass(frozen=True)
class GalleryPage:
    entries: list[GalleryEntry]
    total: int  # matches over all pages
    page: int  # 1-based, clamped to 1..pages
    pages: int  # at least 1, even when nothing matches


@dataclass(frozen=True)
class RefreshStats:
    added: int = 0
    removed: int = 0
    updated: int = 0
    dirs_listed: int = 0


@dataclass(frozen=True)
class TrashItem:
    token: str
    rel: str  # where it was, and where undo puts it back
    path: Path  # where it is now
    deleted_at: float


class GalleryIndex:
    """The index of one outputs folder. Safe to share between threads: every method takes the
    same lock, and the one SQLite connection is only used under it."""

    def __init__(self, root: Path, db_path: Path, trash_dir: Path | None = None):
        self.root = Path(os.path.realpath(root))
        self.db_path = Path(db_path)
        self.trash_dir = Path(trash_dir) if trash_dir is not None else self.root / ".trash"
        real_trash = Path(os.path.realpath(self.trash_dir))
        # A visible trash folder inside outputs/ must still never be indexed.
        self._trash_rel = real_trash.relative_to(self.root).as_posix() if real_trash.is_relative_to(self.root) else None
        self._lock = threading.RLock()
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open_db()
        except sqlite3.DatabaseError as error:
            log.warning("The gallery index %s cannot be used (%s); rebuilding it from %s.", self.db_path, error, self.root)
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
            self._db = self._open_db()

    def _open_db(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.db_path), check_same_thread=False, isolation_level=None)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise sqlite3.DatabaseError(f"schema version {version}, this program needs {SCHEMA_VERSION}")
                db.executescript(_SCHEMA)
            elif db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("the integrity check failed")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- keeping the index right ------------------------------------------------------------

    def refresh(self, full: bool = False) -> RefreshStats:
        """Bring the index in line with the disk: list the directories whose mtime changed
        (all of them with `full`, which also notices files rewritten in place)."""
        with self._lock:
            now_ns = time.time_ns()
            known = dict(self._db.execute("SELECT rel, mtime_ns FROM dirs"))
            children: dict[str, list[str]] = {}
            for rel, parent in self._db.execute("SELECT rel, parent FROM dirs WHERE parent IS NOT NULL"):
                children.setdefault(parent, []).append(rel)
            counts = {"added": 0, "removed": 0, "updated": 0, "dirs_listed": 0}
            seen: set[str] = set()
            stack = [""]
            self._db.execute("BEGIN")
            try:
                while stack:
                    rel = stack.pop()
                    try:  # the root itself may be a link; nothing below it is followed
                        st = os.stat(self.root / rel, follow_symlinks=not rel)
                    except OSError:
                        continue
                    if not stat.S_ISDIR(st.st_mode):
                        continue
                    seen.add(rel)
                    if not full and known.get(rel) == st.st_mtime_ns:
                        stack.extend(children.get(rel, ()))
                        continue
                    counts["dirs_listed"] += 1
                    stack.extend(self._sync_dir(rel, st.st_mtime_ns, now_ns, counts))
                for rel in known.keys() - seen:  # vanished directories take their rows along
                    counts["removed"] += self._db.execute("DELETE FROM images WHERE dir=?", (rel,)).rowcount
                    self._db.execute("DELETE FROM dirs WHERE rel=?", (rel,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return RefreshStats(**counts)

    def _sync_dir(self, rel: str, mtime_ns: int, now_ns: int, counts: dict[str, int]) -> list[str]:
        """Diff one directory's image files against its rows; returns its subdirectories."""
        subdirs: list[str] = []
        files: dict[str, tuple[int, int]] = {}
        try:
            with os.scandir(self.root / rel) as entries:
                for entry in entries:
                    child = _join(rel, entry.name)
                    # Hidden names cover the trash and `.saving-*.tmp`; links could leave the root.
                    if entry.name.startswith(".") or child == self._trash_rel:
                        continue
                    try:
                        if entry.is_symlink():
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            subdirs.append(child)
                        elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and entry.is_file(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            files[child] = (st.st_size, st.st_mtime_ns)
                    except OSError:  # gone while listing: the directory's mtime moved, it is listed again
                        continue
        except OSError:
            log.warning("Cannot list %s for the gallery.", self.root / rel, exc_info=True)
            mtime_ns = _UNTRUSTED  # try again next time rather than trust an empty listing
        indexed = {r: (size, m) for r, size, m in self._db.execute("SELECT rel, size, mtime_ns FROM images WHERE dir=?", (rel,))}
        gone = [(r,) for r in indexed.keys() - files.keys()]
        self._db.executemany("DELETE FROM images WHERE rel=?", gone)
        counts["removed"] += len(gone)
        for child, (size, file_mtime_ns) in files.items():
            if indexed.get(child) == (size, file_mtime_ns):
                continue
            counts["updated" if child in indexed else "added"] += 1
            self._store_image(child, size, file_mtime_ns)
        trusted = mtime_ns if 0 <= mtime_ns <= now_ns - RACY_WINDOW_NS else _UNTRUSTED
        parent = None if not rel else (rel.rpartition("/")[0])
        self._db.execute("INSERT OR REPLACE INTO dirs (rel, parent, mtime_ns) VALUES (?, ?, ?)", (rel, parent, trusted))
        return subdirs

    def _store_image(self, rel: str, size: int, mtime_ns: int) -> None:
        """Read one file's header and infotext into its row. A file that is not a readable
        image (half copied, foreign) is kept with an empty infotext rather than failing."""
        infotext, width, height = "", None, None
        try:
            with Image.open(self.root / rel) as image:
                width, height = image.size
                infotext = read_infotext(image) or ""
        except Exception:  # noqa: BLE001 - any broken file must not stop the index
            log.debug("gallery: %s is not a readable image", rel, exc_info=True)
        fields = parse_infotext(infotext) if infotext else {}
        prompt, negative = fields.get("Prompt", ""), fields.get("Negative prompt", "")
        model, model_hash = fields.get("Model", ""), fields.get("Model hash", "")
        seed_text = fields.get("Seed", "").strip()
        seed = int(seed_text) if re.fullmatch(r"-?\d{1,19}", seed_text) and abs(int(seed_text)) <= _MAX_SQL_INT else None
        dir_rel, _, _ = rel.rpartition("/")
        parts = dir_rel.split("/") if dir_rel else []
        date = next((p for p in reversed(parts) if _DATE_RE.match(p)), None) or _local_date(mtime_ns)
        self._db.execute(
            "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rel, dir_rel, parts[0] if parts else "", date, mtime_ns, size, width, height, prompt, negative, seed, model,
             model_hash, infotext, _SEP.join((prompt, negative, model)).casefold(), _SEP.join((model, model_hash)).casefold()),
        )

    # -- reading ----------------------------------------------------------------------------

    def query(self, folder: str | None = None, date: str | None = None, search: str = "", page: int = 1,
              per_page: int = 36, refresh: bool = True, owner: str | None = None) -> GalleryPage:
        """One page of images, newest first. `search` terms must all match: `seed:123`,
        `model:name` (name or hash), "a quoted phrase", or a word (prompt, negative prompt,
        model name, or the seed when it is a number). With `owner` (a user folder name), only
        that user's images: `<folder>/<owner>/...`."""
        if per_page < 1:
            raise ValueError(f"A gallery page must show at least one image, got {per_page}.")
        where, args = _filters(folder, date, search, owner)
        with self._lock:
            if refresh:
                self.refresh()
            total = self._db.execute(f"SELECT count(*) FROM images {where}", args).fetchone()[0]
            pages = max(1, math.ceil(total / per_page))
            page = min(max(1, int(page)), pages)
            rows = self._db.execute(f"SELECT {_ENTRY_COLUMNS} FROM images {where} {_ORDER} LIMIT ? OFFSET ?",
                                    (*args, per_page, (page - 1) * per_page)).fetchall()
        return GalleryPage([self._entry(row) for row in rows], total, page, pages)

    def folders(self, refresh: bool = True, owner: str | None = None) -> list[str]:
        """Folders holding at least one image (of `owner`'s, when given), sorted ("" stands
        for outputs/ itself)."""
        where, args = _filters(None, None, "", owner)
        with self._lock:
            if refresh:
                self.refresh()
            return [row[0] for row in self._db.execute(f"SELECT DISTINCT folder FROM images {where} ORDER BY folder", args)]

    def dates(self, folder: str | None = None, refresh: bool = True, owner: str | None = None) -> list[str]:
        """Dates that have images (in `folder`, of `owner`'s, when given), newest first."""
        where, args = _filters(folder, None, "", owner)
        with self._lock:
            if refresh:
                self.refresh()
            return [row[0] for row in self._db.execute(f"SELECT DISTINCT date FROM images {where} ORDER BY date DESC", args)]

    def get(self, rel: str, refresh: bool = True, owner: str | None = None) -> GalleryEntry | None:
        if owner is not None and not owns(rel, owner):
            return None
        with self._lock:
            if refresh:
                self.refresh()
            row = self._db.execute(f"SELECT {_ENTRY_COLUMNS} FROM images WHERE rel=?", (rel,)).fetchone()
        return self._entry(row) if row else None

    def resolve(self, rel: str) -> Path:
        """The file behind `rel`, for download. Strict: only an existing image inside the
        outputs folder, reached without '..', hidden names or links pointing out."""
        pure = PurePosixPath(rel) if isinstance(rel, str) else None
        if (pure is None or not rel or "\0" in rel or "\\" in rel or pure.is_absolute() or PureWindowsPath(rel).drive
                or any(part.startswith(".") for part in pure.parts)):
            raise ValueError(f"{rel!r} is not a path inside the outputs folder.")
        real = Path(os.path.realpath(self.root / pure))
        if not real.is_relative_to(self.root) or real == self.root:
            raise ValueError(f"{rel!r} points outside the outputs folder.")
        if real.suffix.lower() not in IMAGE_SUFFIXES or not real.is_file():
            raise ValueError(f"There is no image {rel!r} in the outputs folder.")
        return real

    def _entry(self, row) -> GalleryEntry:
        rel, folder, date, mtime_ns, size, width, height, prompt, negative, seed, model, model_hash, infotext = row
        return GalleryEntry(rel, self.root / rel, folder, date, mtime_ns / 1e9, size, width, height, prompt, negative, seed,
                            model, model_hash, infotext)

    # -- trash --------------------------------------------------------------------------------

    def delete(self, rel: str, owner: str | None = None) -> str:
        """Move one image to the trash and drop it from the index; returns the token that
        `undo_delete` takes. With `owner`, only that user's images can be deleted."""
        if owner is not None and not owns(rel, owner):
            raise ValueError(f"{rel!r} is not one of your images.")
        with self._lock:
            source = self.resolve(rel)
            if source != self.root / PurePosixPath(rel):
                raise ValueError(f"{rel!r} is a link; only images stored in the outputs folder can be deleted.")
            rel = source.relative_to(self.root).as_posix()
            token = f"{time.time_ns():019d}-{secrets.token_hex(4)}"
            target = self.trash_dir / token / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            _move_new(source, target)  # the token folder is new: the name cannot be taken
            text = source.with_suffix(".txt")
            if text.is_file() and not text.is_symlink():  # A1111's save_txt file goes with its picture
                _move_new(text, target.with_suffix(".txt"))
            self._db.execute("DELETE FROM images WHERE rel=?", (rel,))
            return token

    def undo_delete(self, token: str | None = None, owner: str | None = None) -> str:
        """Put a trashed image back (the latest when `token` is None; of `owner`'s, when given)
        and return its rel. Never overwrites: a name taken meanwhile gets `-1`, `-2`, ... added."""
        with self._lock:
            items = [i for i in self.trash() if owner is None or owns(i.rel, owner)]
            if not items:
                raise ValueError("The trash is empty: there is nothing to restore.")
            item = items[0] if token is None else next((i for i in items if i.token == token), None)
            if item is None:
                raise ValueError(f"Nothing in the trash has the token {token!r}.")
            original = PurePosixPath(item.rel)
            (self.root / original).parent.mkdir(parents=True, exist_ok=True)
            rel, number = item.rel, 0
            while not _move_new(item.path, self.root / rel):
                number += 1
                rel = original.with_name(f"{original.stem}-{number}{original.suffix}").as_posix()
            text = item.path.with_suffix(".txt")
            if text.is_file():  # its save_txt file, beside it under the same (perhaps new) name unless one is there
                _move_new(text, (self.root / rel).with_suffix(".txt"))
            _remove_empty_dirs(item.path.parent, self.trash_dir)
            st = (self.root / rel).stat()
            self._store_image(rel, st.st_size, st.st_mtime_ns)
            return rel

    def trash(self) -> list[TrashItem]:
        """What was deleted and can still be restored, newest first."""
        items = []
        with self._lock:
            try:
                tokens = sorted((t for t in os.listdir(self.trash_dir) if _TOKEN_RE.match(t)), reverse=True)
            except OSError:
                return []
            for token in tokens:
                base = self.trash_dir / token
                found = next(((Path(d) / name) for d, _, names in os.walk(base) for name in sorted(names)
                              if Path(name).suffix.lower() in IMAGE_SUFFIXES), None)
                if found is not None:
                    items.append(TrashItem(token, found.relative_to(base).as_posix(), found, int(token[:19]) / 1e9))
        return items


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _local_date(mtime_ns: int) -> str:
    try:
        return datetime.fromtimestamp(mtime_ns / 1e9).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):  # a nonsense mtime must not stop the index
        return ""


def _like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, with its own % and _ taken literally."""
    escaped = text.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def owns(rel: str, owner: str) -> bool:
    """Whether `rel` lies in `owner`'s folder: `<folder>/<owner>/...` (per-user outputs)."""
    parts = PurePosixPath(rel).parts
    return len(parts) > 2 and parts[1] == owner


def _filters(folder: str | None, date: str | None, search: str, owner: str | None = None) -> tuple[str, tuple]:
    """The WHERE clause and its arguments for a query."""
    clauses: list[str] = []
    args: list = []
    if owner is not None:  # the second path part is the owner's folder (compared exactly, no LIKE)
        clauses.append("substr(rel, length(folder) + 2, ?) = ?")
        args += [len(owner) + 1, f"{owner}/"]
    if folder is not None:
        clauses.append("folder = ?")
        args.append(folder)
    if date:
        if not _DATE_RE.match(date):
            raise ValueError(f"A gallery date looks like 2024-07-27, got {date!r}.")
        clauses.append("date = ?")
        args.append(date)
    for match in _TERM_RE.finditer(search or ""):
        prefix, phrase, word = match.group(1), match.group(2), match.group(3)
        term = (phrase if phrase is not None else word.strip('"')).strip()
        if not term:
            continue
        kind = (prefix or "").lower()
        is_number = term.isascii() and term.isdigit()
        if kind == "seed":
            if not is_number or int(term) > _MAX_SQL_INT:
                raise ValueError(f"Search by seed needs a whole number, like seed:1234; got {term!r}.")
            clauses.append("seed = ?")
            args.append(int(term))
        elif kind == "model":
            clauses.append("search_model LIKE ? ESCAPE '\\'")
            args.append(_like(term))
        elif is_number and int(term) <= _MAX_SQL_INT:
            clauses.append("(search_text LIKE ? ESCAPE '\\' OR seed = ?)")
            args += [_like(term), int(term)]
        else:
            clauses.append("search_text LIKE ? ESCAPE '\\'")
            args.append(_like(term))
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def _move_new(source: Path, target: Path) -> bool:
    """Move a file to a name that must not exist yet; False (nothing moved) when it does. A
    hard link never replaces a file and the file is never absent; across file systems, or
    where links are impossible, shutil.move (a rename, or copy then delete)."""
    try:
        os.link(source, target)
    except FileExistsError:
        return False
    except OSError:
        if os.path.lexists(target):
            return False
        shutil.move(source, target)
        return True
    os.unlink(source)
    return True


def _remove_empty_dirs(directory: Path, stop: Path) -> None:
    """Remove `directory` and its parents while empty, up to (not including) `stop`."""
    while directory != stop and directory.is_relative_to(stop):
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
