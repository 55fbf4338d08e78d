"""Loading the enabled extensions' scripts/*.py at start: each extension is a package of its own
(`sdext_<name>`), so its scripts may import their helper modules relatively and two extensions'
file names never collide. An extension that fails to import is switched off whole, with its
traceback kept for the log and the Extensions tab; the others load as if it were not there."""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import inspect
import logging
import re
import sys
import traceback
import types
from pathlib import Path
from typing import Iterator

from modules.extensions import callbacks as cb
from modules.extensions.hook_scripts import Script
from modules.extensions.layout import Extension, ExtensionDirs, discover, switches
from modules.extensions.loaded import LoadedExtensions
from modules.scripts.base import Script as QueueScript

log = logging.getLogger(__name__)


def package_name(extension_name: str) -> str:
    return "sdext_" + re.sub(r"\W", "_", extension_name)


def _package(name: str, folder: Path) -> types.ModuleType:
    module = sys.modules.get(name)
    if module is not None and list(getattr(module, "__path__", [])) == [str(folder)]:
        return module
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    module = importlib.util.module_from_spec(spec)
    module.__path__ = [str(folder)]
    sys.modules[name] = module
    return module


def import_package(folder: Path, extension_name: str | None = None) -> str:
    """Register the extension at `folder` as package sdext_<name> (and its scripts/ as
    sdext_<name>.scripts); returns the package name. Importing its modules is up to the caller."""
    folder = Path(folder).resolve()
    name = package_name(extension_name or folder.name)
    _package(name, folder)
    _package(f"{name}.scripts", folder / "scripts")
    return name


def _forget(package: str) -> None:
    for key in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
        del sys.modules[key]


@contextlib.contextmanager
def _on_path(folder: Path) -> Iterator[None]:
    """A1111 puts the extension's folder first on sys.path while its scripts load."""
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def scripts_of(module: types.ModuleType) -> list:
    """Instances of the Script and QueueScript classes the module itself defines."""
    found = []
    for _name, obj in vars(module).items():
        if not inspect.isclass(obj) or obj.__module__ != module.__name__ or inspect.isabstract(obj):
            continue
        if issubclass(obj, Script) and obj is not Script:
            found.append(obj())
        elif issubclass(obj, QueueScript) and obj is not QueueScript and getattr(obj, "title", ""):
            found.append(obj())
    return found


def load_one(extension: Extension, loaded: LoadedExtensions) -> None:
    """Import one extension's scripts; on any failure nothing of it stays registered."""
    package = import_package(extension.path, extension.name)
    callbacks = cb.Callbacks()
    settings: list = []
    scripts: list = []
    try:
        with cb.loading(extension.name, callbacks, settings, extension.path), _on_path(extension.path):
            for path in extension.scripts:
                name = f"{package}.scripts.{path.stem}"
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
                for script in scripts_of(module):
                    script.filename = str(path)
                    script.extension = extension.name
                    scripts.append(script)
    except BaseException as exc:  # SystemExit from a script too: the server must start anyway
        if isinstance(exc, KeyboardInterrupt):
            raise
        text = traceback.format_exc()
        log.error("Extension '%s' failed to load and is switched off:\n%s", extension.name, text)
        loaded.errors[extension.name] = text
        _forget(package)
        return
    loaded.add(extension, scripts, callbacks, settings)


def load_extensions(dirs: ExtensionDirs, settings_values: dict, args=None) -> LoadedExtensions:
    """Discover and load every enabled extension (built-in ones first), then run their
    on_ui_settings callbacks so their settings exist before the app reads config.json's values."""
    disabled, mode = switches(settings_values, args)
    loaded = LoadedExtensions(discover(dirs, disabled, mode))
    pending = [e for e in loaded.extensions if e.enabled]
    while pending:  # an extension loads after those its metadata.ini Requires
        ready = [e for e in pending if all(n in loaded.loaded_names for n in e.manifest.requires)]
        if not ready:
            break
        for extension in ready:
            pending.remove(extension)
            load_one(extension, loaded)
    for extension in pending:
        missing = [n for n in extension.manifest.requires if n not in loaded.loaded_names]
        text = (f"Extension '{extension.name}' needs {', '.join(repr(n) for n in missing)} (metadata.ini Requires), which "
                f"{'is' if len(missing) == 1 else 'are'} not installed, not enabled or failed to load: it is switched off.")
        log.error("%s", text)
        loaded.errors[extension.name] = text
    loaded.run_ui_settings()
    loaded.describe_scripts()
    return loaded
