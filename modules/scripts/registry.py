"""The scripts the Script menu and the API's script_name offer, in A1111's menu order."""

from __future__ import annotations

import importlib
from typing import Iterable

from modules.scripts.base import Script


def builtin_scripts() -> list[Script]:
    """One instance of each selectable script of the built-in classic-scripts extension, its
    files in name order (A1111's img2img menu order), imported as the extension loader imports
    them (package sdext_classic_scripts). Stands in where no loaded extensions' registry is given."""
    from modules.extensions.layout import BUILTIN_DIR
    from modules.extensions.loader import import_package, scripts_of

    folder = BUILTIN_DIR / "classic-scripts"
    package = import_package(folder)
    found: list[Script] = []
    for path in sorted((folder / "scripts").glob("*.py")):
        found += scripts_of(importlib.import_module(f"{package}.scripts.{path.stem}"))
    return found


class ScriptRegistry:
    """The selectable scripts by title. Extensions add theirs with `add` (issue 22)."""

    def __init__(self, scripts: Iterable[Script] = ()):
        self._scripts: list[Script] = []
        for script in scripts:
            self.add(script)

    def add(self, script: Script) -> None:
        if not script.title:
            raise ValueError(f"{type(script).__name__} has no title")
        if any(s.name == script.name for s in self._scripts):
            raise ValueError(f"A script titled '{script.title}' is already registered")
        self._scripts.append(script)

    def for_kind(self, kind: str) -> list[Script]:
        """The scripts a tab ("txt2img" or "img2img") offers, in menu order."""
        return [s for s in self._scripts if s.shows_on(kind)]

    def find(self, title: str, kind: str) -> Script:
        """The script called `title` (in any case) on that tab; ValueError listing the tab's scripts."""
        wanted = str(title).strip().lower()
        for script in self.for_kind(kind):
            if script.name == wanted:
                return script
        names = ", ".join(f"'{s.name}'" for s in self.for_kind(kind)) or "none"
        elsewhere = [s for s in self._scripts if s.name == wanted]
        where = f" ('{elsewhere[0].title}' is for the other tab)" if elsewhere else ""
        raise ValueError(f"Script '{title}' not found for {kind}{where}. Scripts for {kind}: {names}.")
