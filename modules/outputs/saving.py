"""Saving generated images and grids the way A1111 users expect to find them.

Layout and names follow A1111 (see the reference, section 7):

- images: `<dir>/<YYYY-MM-DD>/NNNNN-<seed>.png`, or `<dir>/NNNNN-<seed>-<prompt>.png` when
  date folders are off; `samples_filename_pattern` and `directories_filename_pattern`
  (naming.py) change the part after `NNNNN-` and the folder;
- grids: `<grid dir>/<YYYY-MM-DD>/grid-NNNN.png` (A1111's short grid names; the folder
  pattern applies);
- NNNNN continues from the highest leading number already in the target folder, so the
  count survives restarts and starts again at 0 in each new date folder.

A file only ever appears under its final name complete: it is written to a hidden temp
file in the same folder, fsynced, then linked/renamed into place. Numbers are picked
under a lock per writer, so threads sharing a writer always get distinct numbers (use one
writer per output folder). The final name is claimed with a no-clobber hard link, so even
separate writers or processes never overwrite each other's images (like A1111, they may
then share a number with different seeds).
"""

from __future__ import annotations

import errno
import io
import logging
import math
import os
import re
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from modules.files import atomic_path
from modules.outputs import infotext as infotext_mod
from modules.outputs.naming import (
    DEFAULT_DIRECTORY_PATTERN,
    NameValues,
    apply_directory_pattern,
    apply_pattern,
    default_filename_pattern,
    sanitize_filename_part,
    user_folder,
)

GRID_BASENAME = "grid"  # grids are `grid-NNNN.<ext>`, A1111's short names

log = logging.getLogger(__name__)

_MAX_NAME_BYTES = 255  # the common per-name limit (ext4, NTFS in UTF-16 units, APFS)
_LEADING_NUMBER = re.compile(r"^(\d+)")
# JPEG keeps EXIF in one APP1 segment of at most 64 KiB.
_MAX_JPEG_EXIF = 65533

# errno values meaning "this file system cannot hard-link"; then a rename is used.
_NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK)

_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}

# zlib level for PNG files and API pictures. Pillow's default (6, what A1111 gets) spends most
# of a save in deflate's lazy matching: on a 512x512 photo-like picture level 1 took 59 ms
# against 174 ms for a 7.5 % larger file (1024x1024: 187 ms against 783 ms, +11 %), and the
# encode runs on the worker between one job's picture and the next. Still lossless: the same
# pixels and text chunks.
PNG_COMPRESS_LEVEL = 1


def _truncate_utf8(text: str, max_bytes: int) -> str:
    """Cut `text` so its UTF-8 form fits `max_bytes` without splitting a character: a
    128-character CJK prompt is ~384 bytes, over most file systems' 255-byte name limit."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore").rstrip(" .")


def next_sequence_number(directory: Path, basename: str = "") -> int:
    """1 + the highest leading number among the files in `directory` (0 when there is
    none). With a basename (e.g. "grid") only `basename-NNNN...` files count."""
    prefix = f"{basename}-" if basename else ""
    highest = -1
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    for name in names:
        if not name.startswith(prefix):
            continue
        match = _LEADING_NUMBER.match(name[len(prefix):])
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


def make_grid(images: Sequence[Image.Image], rows: int | None = None, margin: int = 0) -> Image.Image:
    """Tile images into one picture, row by row, on black.

    Rows default to A1111's rule for its default settings (`n_rows=-1`,
    `grid_prevent_empty_spots` off): rows = round(sqrt(n)), cols = ceil(n / rows). So 2
    images give 1x2, 3 and 4 give 2x2, 5 and 6 give 2x3, 8 and 9 give 3x3. Cells are as
    large as the largest image, so mixed sizes are never cropped. `margin` puts that many
    white pixels between cells (the scripts' "Grid margins"); the cells stay black.
    """
    if not images:
        raise ValueError("A grid needs at least one image.")
    if margin < 0:
        raise ValueError(f"Grid margin must be 0 or more, got {margin}.")
    count = len(images)
    if rows is None:
        rows = max(1, round(math.sqrt(count)))
    if rows < 1:
        raise ValueError(f"Grid rows must be at least 1, got {rows}.")
    rows = min(rows, count)
    cols = math.ceil(count / rows)
    cell_w = max(image.width for image in images)
    cell_h = max(image.height for image in images)
    grid = Image.new("RGB", (cols * cell_w + margin * (cols - 1), rows * cell_h + margin * (rows - 1)), "white" if margin else "black")
    for index in range(rows * cols):
        x, y = (index % cols) * (cell_w + margin), (index // cols) * (cell_h + margin)
        if margin:
            grid.paste((0, 0, 0), (x, y, x + cell_w, y + cell_h))
        if index < count:
            grid.paste(images[index], (x, y))
    return grid


@dataclass(frozen=True)
class SaveSettings:
    """Where and how one kind of output (e.g. txt2img images, or txt2img grids) is saved.
    Defaults are A1111's (`save_to_dirs`, `[date]` folders, `jpeg_quality=80`)."""

    directory: Path
    file_format: str = "png"  # png, jpg/jpeg or webp
    save_to_dirs: bool = True  # A1111 "Save images to a subdirectory" (directory_pattern folders)
    date_format: str = "%Y-%m-%d"  # what [date] prints
    filename_pattern: str = ""  # A1111 samples_filename_pattern; "" = [seed], or [seed]-[prompt_spaces] without folders
    directory_pattern: str = DEFAULT_DIRECTORY_PATTERN  # A1111 directories_filename_pattern
    max_prompt_words: int = 8  # A1111 directories_max_prompt_words, for [prompt_words]
    user_folders: bool = False  # log-ins are on: each user's images go to <directory>/<user>/...
    embed_infotext: bool = True  # A1111 `enable_pnginfo`
    jpeg_quality: int = 80  # also used for lossy WebP, as A1111 does
    webp_lossless: bool = False
    save_txt: bool = False  # A1111 `save_txt`: `<same name>.txt` with the infotext beside each image

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", Path(self.directory))
        fmt = self.file_format.lower().lstrip(".")
        if fmt not in _FORMATS:
            raise ValueError(
                f"Unsupported image format {self.file_format!r}; use one of png, jpg, webp."
            )
        object.__setattr__(self, "file_format", fmt)
        if isinstance(self.jpeg_quality, bool) or not isinstance(self.jpeg_quality, int) or not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"JPEG/WebP quality must be a whole number from 1 to 100, got {self.jpeg_quality!r}")


class OutputWriter:
    """Saves images into one output directory. Create one per directory (images, grids)
    and share it between threads; `clock` is injectable so tests can pin the date."""

    def __init__(self, settings: SaveSettings, clock: Callable[[], datetime] = datetime.now):
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()

    # -- public -------------------------------------------------------------------------

    def target_directory(self, now: datetime | None = None, values: NameValues | None = None) -> Path:
        """The folder a file saved at `now` goes to: the directory pattern's subfolder(s)
        when `save_to_dirs` is on (a `[date]` folder by default), inside the user's own
        folder when per-user folders are on (unless the pattern places `[user]` itself)."""
        st = self.settings
        values = values or NameValues()
        patterned = st.save_to_dirs and "[user]" in st.directory_pattern
        parts: tuple[str, ...] = (user_folder(values.user),) if st.user_folders and values.user and not patterned else ()
        if st.save_to_dirs:
            parts += apply_directory_pattern(st.directory_pattern, values, self._clock() if now is None else now,
                                             max_prompt_words=st.max_prompt_words, date_format=st.date_format)
        return st.directory.joinpath(*(_truncate_utf8(part, _MAX_NAME_BYTES) for part in parts))

    def file_decoration(self, values: NameValues, now: datetime, image: Image.Image | None = None) -> str:
        """What follows `NNNNN-` in an image's name: the filename pattern applied, or
        A1111's default for it when the pattern is empty."""
        st = self.settings
        pattern = st.filename_pattern or default_filename_pattern(st.save_to_dirs)
        return apply_pattern(pattern, values, now, image=image, max_prompt_words=st.max_prompt_words, date_format=st.date_format)

    def save_image(
        self,
        image: Image.Image,
        *,
        seed: int | None = None,
        prompt: str = "",
        infotext: str | None = None,
        values: NameValues | None = None,
    ) -> Path:
        """Save one generated image as `NNNNN-<decoration>` and return its path. `values`
        describes the image for the patterns; `seed`/`prompt` are a shorthand that also fills
        them in where `values` leaves them unknown. Width and height default to the image's."""
        values = _complete(values or NameValues(), seed=seed, prompt=prompt or None, width=image.width, height=image.height)
        now = self._clock()
        decoration = self.file_decoration(values, now, image)
        return self._save(image, basename="", digits=5, decoration=decoration, infotext=infotext,
                          directory=self.target_directory(now, values))

    def save_grid(
        self,
        images: Sequence[Image.Image],
        *,
        infotext: str | None = None,
        rows: int | None = None,
        only_if_multiple: bool = True,
        values: NameValues | None = None,
    ) -> Path | None:
        """Tile `images` and save them as `grid-NNNN`, in the folder the directory pattern
        gives for `values` (e.g. the first image's). Returns None without saving for a
        single image (A1111 `grid_only_if_multiple`): the grid would repeat the image."""
        if not images or (only_if_multiple and len(images) < 2):
            return None
        grid = make_grid(images, rows)
        directory = self.target_directory(self._clock(), values)
        return self._save(grid, basename=GRID_BASENAME, digits=4, decoration="", infotext=infotext, directory=directory)

    def save_as(self, image: Image.Image, stem: str, *, infotext: str | None = None, values: NameValues | None = None) -> Path:
        """Save under a chosen name, `<stem>.<ext>`, or `<stem>-1.<ext>`, `-2`, ... when that
        is taken (A1111's img2img batch keeps the input's name): never over an existing file,
        so a batch whose output folder is its input folder cannot overwrite an init image."""
        stem = _truncate_utf8(sanitize_filename_part(stem) or "image", _MAX_NAME_BYTES - 60)

        def claim(temp: Path, directory: Path) -> Path:
            n = 0
            while not _link_new(temp, final := directory / f"{stem}{f'-{n}' if n else ''}.{self.extension}"):
                n += 1
            return final

        return self._write(image, infotext, claim, self.target_directory(values=values))

    # -- internals ----------------------------------------------------------------------

    @property
    def extension(self) -> str:
        return "jpg" if self.settings.file_format == "jpeg" else self.settings.file_format

    def _file_name(self, number: int, basename: str, digits: int, decoration: str) -> str:
        stem = f"{basename}-{number:0{digits}d}" if basename else f"{number:0{digits}d}"
        if decoration:
            stem = f"{stem}-{decoration}"
        suffix = f".{self.extension}"
        # Room for the suffix and for the hidden temp name built from it.
        return _truncate_utf8(stem, _MAX_NAME_BYTES - len(suffix) - 40) + suffix

    def _save(
        self,
        image: Image.Image,
        *,
        basename: str,
        digits: int,
        decoration: str,
        infotext: str | None,
        directory: Path,
    ) -> Path:
        return self._write(image, infotext, lambda temp, folder: self._claim(temp, folder, basename, digits, decoration), directory)

    def _write(self, image: Image.Image, infotext: str | None, claim: Callable[[Path, Path], Path], directory: Path) -> Path:
        """Encode into a temp file in `directory`, then `claim(temp, directory)` links it
        to its final name under the writer's lock."""
        directory.mkdir(parents=True, exist_ok=True)
        # Encode outside the lock (it is the slow part), into a hidden temp file that the
        # number scan ignores because it does not start with a digit or the basename.
        fd, temp = _create_temp_file(directory, self.extension)
        try:
            with os.fdopen(fd, "wb") as handle:
                self._encode(image, handle, infotext)
                handle.flush()
                os.fsync(handle.fileno())
            with self._lock:
                final = claim(temp, directory)
        finally:
            temp.unlink(missing_ok=True)
        if self.settings.save_txt and infotext:
            write_text_atomic(final.with_suffix(".txt"), infotext)
        _fsync_directory(directory)
        return final

    def _claim(
        self, temp: Path, directory: Path, basename: str, digits: int, decoration: str
    ) -> Path:
        """Give the finished temp file the next free number. A hard link never replaces an
        existing file, so a name taken by another writer or process makes us rescan."""
        floor = 0  # never retry a number that already failed, even if the scan misses it
        while True:
            number = max(next_sequence_number(directory, basename), floor)
            floor = number + 1
            final = directory / self._file_name(number, basename, digits, decoration)
            if _link_new(temp, final):
                return final

    def _encode(self, image: Image.Image, handle, infotext: str | None) -> None:
        st = self.settings
        encode_image(image, handle, st.file_format, infotext if st.embed_infotext else None, st.jpeg_quality, st.webp_lossless)


def _complete(values: NameValues, **known) -> NameValues:
    """`values` with the fields it leaves unknown (None) taken from `known`."""
    missing = {key: value for key, value in known.items() if value is not None and getattr(values, key) is None}
    return replace(values, **missing) if missing else values


def encode_image(image: Image.Image, handle, file_format: str = "png", infotext: str | None = None,
                 jpeg_quality: int = 80, webp_lossless: bool = False) -> None:
    """Write `image` to a binary handle as png/jpg/webp with the infotext embedded the way
    A1111 does (PNG `parameters` chunk, EXIF UserComment otherwise). Files and API responses
    both go through here."""
    fmt = _FORMATS[file_format.lower().lstrip(".")]
    embed = bool(infotext)
    if fmt == "PNG":
        pnginfo = PngInfo()
        # Keep text chunks the image already carries (A1111 does, e.g. for extras), then the infotext.
        for key, value in _png_texts(image, infotext if embed else None).items():
            pnginfo.add_text(key, value)  # tEXt if Latin-1, else iTXt
        image.save(handle, format="PNG", pnginfo=pnginfo, compress_level=PNG_COMPRESS_LEVEL)
        return

    if image.mode not in ("RGB", "L") and not (fmt == "WEBP" and image.mode == "RGBA"):
        image = image.convert("RGB")
    options: dict = {"quality": jpeg_quality}
    if fmt == "WEBP":
        options["lossless"] = webp_lossless
    if embed:
        exif = infotext_mod.exif_with_user_comment(infotext)
        if fmt == "JPEG" and len(exif) > _MAX_JPEG_EXIF:
            log.warning("infotext too long for JPEG EXIF (%d chars); saved without it", len(infotext))
        else:
            options["exif"] = exif
    image.save(handle, format=fmt, **options)


def _png_texts(image: Image.Image, infotext: str | None) -> dict[str, str]:
    """The text chunks `encode_image` writes into a PNG of `image` with `infotext`."""
    texts = {key: value for key, value in (image.info or {}).items() if isinstance(key, str) and isinstance(value, str) and key != "parameters"}
    if infotext:
        texts["parameters"] = infotext
    return texts


def saved_png(path: Path | None, image: Image.Image, infotext: str | None) -> bytes | None:
    """The bytes of `path` when it is the PNG `encode_image` writes for `image` with `infotext`
    (same size, mode, text chunks and pixels), else None. Lets the API answer with a saved
    picture's file instead of encoding it again: decoding to check the pixels (a file changed
    since, by anyone) costs a fraction of an encode."""
    if path is None or Path(path).suffix.lower() != ".png":
        return None
    try:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as saved:  # reads the chunks before the pixel data: the text is there
            texts = {key: str(value) for key, value in saved.info.items() if isinstance(key, str) and isinstance(value, str)}
            same = saved.format == "PNG" and saved.size == image.size and saved.mode == image.mode and texts == _png_texts(image, infotext)
            same = same and saved.tobytes() == image.tobytes()
    except (OSError, ValueError, SyntaxError):  # gone, unreadable or not a PNG any more: encode instead
        return None
    return data if same else None


def _link_new(temp: Path, final: Path) -> bool:
    """Give `temp` the name `final` unless that exists (False then). A hard link never
    replaces a file; where hard links are not possible (some network or FAT file systems) a
    rename is used, still atomic, and safe against our own threads thanks to the caller's lock."""
    try:
        os.link(temp, final)
        return True
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
    if final.exists():
        return False
    os.replace(temp, final)
    return True


def write_text_atomic(path: Path, text: str) -> Path:
    """Write UTF-8 text so that `path` only ever holds the whole of it (A1111's `save_txt`
    file, the Save button's log), through modules.files.atomic_path."""
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8", newline="")
    return path


def _create_temp_file(directory: Path, extension: str) -> tuple[int, Path]:
    """Create a uniquely named hidden file. Unlike `tempfile.mkstemp` (mode 0600) this
    honours the umask, and the saved image inherits the temp file's permissions."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        path = directory / f".saving-{secrets.token_hex(8)}.{extension}.tmp"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue


def _fsync_directory(directory: Path) -> None:
    """Persist the new directory entry too, so a crash right after saving keeps the file.
    Not possible on Windows, where opening a directory fails; the rename is still atomic."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class SaveFailures:
    """Saving that cannot lose a picture: a write that fails (disk full, a folder that is
    read-only or not a folder) leaves the image in the job's result and adds one note per
    folder and reason to `notes`, which the page and the API show as a warning."""

    def __init__(self, notes: list[str]):
        self.notes = notes
        self._said: set[tuple[str, str]] = set()

    def attempt(self, writer: OutputWriter, paths: list[Path], save: Callable[[], Path | None]) -> None:
        """Run `save`; its path joins `paths`, or a failure becomes a note."""
        try:
            path = save()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            key = (str(writer.settings.directory), reason)
            log.warning("Could not save an image in %s: %s", writer.settings.directory, exc)
            if key not in self._said:
                self._said.add(key)
                self.notes.append(f"Could not save to {writer.settings.directory}: {reason}. The picture is kept in this result only: "
                                  "download it from here.")
            return
        if path is not None:
            paths.append(path)
