"""The built-in classic-scripts extension registered as the extension loader registers an
extension (package `sdext_classic_scripts`, see modules.extensions.loader.import_package), so
tests reach its scripts (`sdext_classic_scripts.scripts.xyz_grid`) and helpers
(`sdext_classic_scripts.lib_classic.ranges`). Imports nothing heavy: the no-torch tests run it
in a fresh interpreter."""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parents[2] / "extensions-builtin" / "classic-scripts"


def register() -> None:
    """Put the extension's package in sys.modules (the app's own registration is reused)."""
    from modules.extensions.loader import import_package

    import_package(FOLDER)
