"""Where extensions live and what each one holds: A1111's folder layout, read without running
anything, so the Extensions tab, launch.py and the loader agree on one list."""

from __future__ import annotations

import configparser
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from modules.options import REPO_DIR

BUILTIN_DIR = REPO_DIR / "extensions-builtin"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
DISABLE_ALL_MODES = ("none", "extra", "all")


def check_name(name: str) -> str:
    """`name` when it is a plain folder name (so it cannot escape extensions/), else ValueError."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name.endswith(".") or ".." in name:
        raise ValueError(f"'{name}' is not a usable extension folder name: use letters, digits, '.', '_' and '-', "
                         f"starting with a letter or digit (no '/', no '..').")
    return name


@dataclass(frozen=True)
class Manifest:
    """metadata.ini's [Extension] section, as A1111 reads it, plus Version and Description."""

    name: str = ""
    version: str = ""
    requires: tuple[str, ...] = ()
    description: str = ""

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        """The manifest of `folder`; an absent or unreadable file is an empty manifest (A1111 too)."""
        path = Path(folder) / "metadata.ini"
        if not path.is_file():
            return cls()
        parser = configparser.ConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError, OSError):
            return cls()
        section = parser["Extension"] if parser.has_section("Extension") else {}
        requires = tuple(n.strip() for n in section.get("Requires", "").split(",") if n.strip())
        return cls(section.get("Name", "").strip(), section.get("Version", "").strip(), requires, section.get("Description", "").strip())


@dataclass
class Extension:
    """One extension folder. `enabled` is what config.json and the flags say, not whether it loaded."""

    name: str
    path: Path
    builtin: bool
    enabled: bool = True
    manifest: Manifest = field(default_factory=Manifest)

    @property
    def title(self) -> str:
        return self.manifest.name or self.name

    def _files(self, folder: str, pattern: str) -> list[Path]:
        directory = self.path / folder
        return sorted(p for p in directory.glob(pattern) if p.is_file()) if directory.is_dir() else []

    @property
    def scripts(self) -> list[Path]:
        return self._files("scripts", "*.py")

    @property
    def javascript(self) -> list[Path]:
        return self._files("javascript", "*.js")

    @property
    def localizations(self) -> list[Path]:
        return self._files("localizations", "*.json")

    def _file(self, name: str) -> Path | None:
        path = self.path / name
        return path if path.is_file() else None

    @property
    def style(self) -> Path | None:
        return self._file("style.css")

    @property
    def install_script(self) -> Path | None:
        return self._file("install.py")

    @property
    def requirements(self) -> Path | None:
        return self._file("requirements.txt")


@dataclass(frozen=True)
class ExtensionDirs:
    builtin: Path
    user: Path

    @classmethod
    def for_paths(cls, paths) -> "ExtensionDirs":
        return cls(BUILTIN_DIR, paths.extensions_dir)


def discover(dirs: ExtensionDirs, disabled: Collection[str] = (), disable_all: str = "none") -> list[Extension]:
    """Every extension folder: the built-in ones first, then the user's, each sorted by name.
    Dot folders (a half-finished install's temporary clone) and plain files are skipped; a user
    folder with a built-in one's name is skipped too (the built-in one is what runs)."""
    found: list[Extension] = []
    for root, builtin in ((dirs.builtin, True), (dirs.user, False)):
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir(), key=lambda p: p.name.lower()):
            if not folder.is_dir() or folder.name.startswith((".", "_")) or not NAME_PATTERN.match(folder.name):
                continue
            if any(e.name == folder.name for e in found):
                continue
            off = folder.name in disabled or disable_all == "all" or (disable_all == "extra" and not builtin)
            found.append(Extension(folder.name, folder, builtin, not off, Manifest.read(folder)))
    return found


def switches(settings_values: Mapping, args=None) -> tuple[frozenset[str], str]:
    """(names switched off, the disable-all mode) from config.json and A1111's flags; the flags win."""
    disabled = settings_values.get("disabled_extensions") or []
    mode = settings_values.get("disable_all_extensions") or "none"
    if mode not in DISABLE_ALL_MODES:
        mode = "none"
    if args is not None and getattr(args, "disable_all_extensions", False):
        mode = "all"
    elif args is not None and getattr(args, "disable_extra_extensions", False) and mode == "none":
        mode = "extra"
    return frozenset(n for n in disabled if isinstance(n, str)), mode
