"""UI translations in A1111's format: `<name>.json` files, each a flat JSON object that maps an
English string of the page to its translation (`{"Generate": "생성"}`); the name is the file's
stem (`ko_KR`). Strings that carry values use `{0}`, `{1}`, ... for them, in both the key and
the translation (see modules/ui/ui_strings.py).

Files come from three places, read in this order, each later one overriding the earlier ones
key by key: the shipped `configs/localizations/`, the user's folder (`--localizations-dir`,
default `<data-dir>/localizations`), then each enabled extension's `localizations/` folder (as
A1111 merges extensions' files over its own). A file that is not a JSON object of strings is
skipped with a warning naming it; the others still count.

No gradio here: the page's translator (modules/ui/localization.py) and the route use this.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

ENGLISH = "None"  # the setting's value for no translation, as in A1111
PLACEHOLDER = re.compile(r"\{(\d+)\}")


def read_file(path: Path) -> dict[str, str]:
    """One localization file's entries; ValueError with a sentence when it is not a JSON object
    of strings (or cannot be read)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path} could not be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold one JSON object of English text to its translation")
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise ValueError(f"{path}: the translation of {bad[0]!r} is not a string")
    return data


def placeholders(text: str) -> set[str]:
    """The `{n}` places in a key or a translation."""
    return set(PLACEHOLDER.findall(text))


def template_pattern(key: str) -> re.Pattern | None:
    """The regular expression a `{n}` key matches text with (None for a key without places),
    as the page's translator builds it: each place takes any text, as little as it can."""
    parts = re.split(r"(\{\d+\})", key)
    if len(parts) == 1:
        return None
    return re.compile("^" + "".join("([\\s\\S]+?)" if PLACEHOLDER.fullmatch(p) else re.escape(p) for p in parts) + "$")


def lookup(table: dict[str, str], text: str, pieces_are_labels: bool = False) -> str | None:
    """`text`'s translation in `table`: its own entry, else the first `{n}` template (the one
    with the most fixed text) it matches, the values put into the translation's places. The
    values are the user's (a style or file name) and stay as they are, unless
    `pieces_are_labels` says they are page strings too (a screen-reader label's "for {0}")."""
    text = text.strip()
    if table.get(text):
        return table[text]
    for key in sorted((k for k in table if "{" in k and table[k]), key=lambda k: -len(PLACEHOLDER.sub("", k))):
        pattern = template_pattern(key)
        found = pattern.match(text) if pattern else None
        if found:
            order = [int(n) for n in PLACEHOLDER.findall(key)]
            pieces = dict(zip(order, ((pieces_are_labels and table.get(piece)) or piece for piece in found.groups())))
            return PLACEHOLDER.sub(lambda m: pieces.get(int(m.group(1)), m.group(0)), table[key])
    return None


def language_code(name: str) -> str:
    """The page's `lang` attribute for a localization name: `ko_KR` -> `ko`, "None" -> `en`."""
    if not name or name == ENGLISH:
        return "en"
    return re.split(r"[_\-]", name, maxsplit=1)[0].lower() or "en"


class Localizations:
    """The localization files the app knows, merged by name and re-read when one changes."""

    def __init__(self, folders: Iterable[Path], extension_folders: Callable[[], Iterable[Path]] = tuple):
        """`folders`: the shipped one and the user's, in that order. `extension_folders` gives
        the enabled extensions' `localizations/` folders at the time of asking."""
        self.folders = tuple(Path(f) for f in folders)
        self.extension_folders = extension_folders
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple, dict[str, str]]] = {}  # name -> (files' stamps, merged entries)
        self._bad: set[tuple] = set()  # (path, mtime) already warned about

    @classmethod
    def for_app(cls, paths, extensions=None) -> "Localizations":
        """Over the app's folders; `extensions` (LoadedExtensions or None) gives the enabled ones."""
        def extension_folders() -> list[Path]:
            if extensions is None:
                return []
            return [e.path / "localizations" for e in extensions.extensions if e.enabled]

        return cls((paths.configs_dir / "localizations", paths.localizations), extension_folders)  # shipped, then yours

    def files(self) -> dict[str, list[Path]]:
        """Name -> its files, earliest first."""
        found: dict[str, list[Path]] = {}
        for folder in (*self.folders, *self.extension_folders()):
            folder = Path(folder)
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.json")):
                if path.is_file():
                    found.setdefault(path.stem, []).append(path)
        return found

    def names(self) -> list[str]:
        """Every localization's name, sorted."""
        return sorted(self.files(), key=str.lower)

    def choices(self) -> list[str]:
        """The setting's choices: "None" (English), then the names."""
        return [ENGLISH, *self.names()]

    def strings(self, name: str) -> dict[str, str]:
        """The merged entries of `name` ({} for "None"); ValueError for a name no file has."""
        if not name or name == ENGLISH:
            return {}
        paths = self.files().get(name)
        if not paths:
            raise ValueError(f"There is no localization named '{name}': the choices are {', '.join(self.choices())}.")
        stamps = tuple((str(p), _mtime(p)) for p in paths)
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached[0] == stamps:
                return cached[1]
        merged: dict[str, str] = {}
        for path, stamp in zip(paths, stamps):
            try:
                merged.update(read_file(path))
            except ValueError as exc:
                if stamp not in self._bad:  # once per version of the file, not on every page load
                    self._bad.add(stamp)
                    log.warning("Skipping a localization file: %s", exc)
        with self._lock:
            self._cache[name] = (stamps, merged)
        return merged

    def translate(self, name: str, text: str) -> str:
        """`text` in the language `name`, or as it is when that has no entry for it (or no such
        localization). Whole texts only: for long Markdown shown as one piece."""
        try:
            return lookup(self.strings(name), text) or text
        except ValueError:
            return text

    def check_setting(self, key: str, value) -> None:
        """A settings guard: the `localization` setting takes "None" or a known name."""
        if key == "localization" and value not in self.choices():
            raise ValueError(f"localization must be one of: {', '.join(self.choices())}; got {value!r}")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1
