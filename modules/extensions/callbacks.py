"""A1111's script_callbacks, held per app: each registration belongs to the extension whose
scripts were loading when it was made, so a callback that raises is named and switched off
without touching anyone else's.

Registration happens while an extension's scripts/*.py import (the loader sets `loading`); a
ContextVar (not a module-level list) says which extension that is, so two apps in one process
(the tests) never share callbacks.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

KINDS = ("app_started", "ui_tabs", "ui_settings", "before_image_saved", "image_saved", "cfg_denoiser", "infotext_pasted")


@dataclass
class ImageSaveParams:
    """What on_before_image_saved / on_image_saved get: the picture, the job's processing object
    `p`, the file name (final in on_image_saved) and `pnginfo` whose "parameters" is the infotext.
    Before saving, a callback may replace `image` or change `pnginfo["parameters"]`."""

    image: Any
    p: Any
    filename: str
    pnginfo: dict


@dataclass
class CFGDenoiserParams:
    """What on_cfg_denoiser gets before each UNet call: `x` the latents going in (one copy per
    conditioning block), `sigma` the timestep, `sampling_step` from 0, `total_sampling_steps`,
    `text_cond` and `text_uncond` the text embeddings (uncond None without CFG), `p` the job's
    processing object (also as A1111's `denoiser.p`). A callback may replace `x`, `text_cond` or
    `text_uncond` with tensors of the same shape."""

    x: Any
    image_cond: Any
    sigma: Any
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    text_uncond: Any
    p: Any = None

    @property
    def denoiser(self) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(p=self.p)


@dataclass(frozen=True)
class Registered:
    extension: str
    fn: Callable


@dataclass
class Callbacks:
    """Every extension's callbacks by kind, in load order, and the failures of the app-wide ones
    (app_started, ui_tabs, ui_settings) by extension, for the Extensions tab."""

    by_kind: dict[str, list[Registered]] = field(default_factory=lambda: {k: [] for k in KINDS})
    failures: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, extension: str, fn: Callable) -> None:
        if kind not in self.by_kind:
            raise ValueError(f"Unknown callback kind {kind!r}")
        if not callable(fn):
            raise TypeError(f"on_{kind} needs a function, got {fn!r}")
        self.by_kind[kind].append(Registered(extension, fn))

    def of(self, kind: str) -> list[Registered]:
        return list(self.by_kind[kind])

    def failed(self, extension: str, where: str) -> str:
        """Log the exception being handled, naming the extension; returns the traceback text."""
        text = traceback.format_exc()
        log.error("Extension '%s' failed in %s:\n%s", extension, where, text)
        self.failures.setdefault(extension, []).append(f"{where}:\n{text}")
        return text

    def call_each(self, kind: str, *args: Any) -> list[tuple[str, Any]]:
        """Call every callback of `kind`; one that raises is logged and skipped. Returns
        (extension, result) of those that returned."""
        results = []
        for item in self.of(kind):
            try:
                results.append((item.extension, item.fn(*args)))
            except BaseException as exc:  # sys.exit() in a callback must not stop the server
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.failed(item.extension, f"on_{kind} ({getattr(item.fn, '__qualname__', item.fn)})")
        return results

    def app_started(self, page: Any, app: Any) -> None:
        """A1111's on_app_started(demo, app): `app` is the FastAPI app, for the extension's routes."""
        self.call_each("app_started", page, app)

    def ui_tabs(self) -> list[tuple[str, Any, str, str]]:
        """(extension, blocks, title, elem_id) of every tab the extensions' on_ui_tabs return."""
        tabs = []
        for extension, returned in self.call_each("ui_tabs"):
            for entry in returned or []:
                try:
                    blocks, title, elem_id = entry
                except (TypeError, ValueError):
                    log.error("Extension '%s': on_ui_tabs must return [(blocks, title, elem_id)], got %r", extension, entry)
                    continue
                tabs.append((extension, blocks, str(title), str(elem_id)))
        return tabs

    def infotext_pasted(self, infotext: str, params: dict) -> dict:
        """Let each on_infotext_pasted callback read the infotext and add to or change `params`."""
        self.call_each("infotext_pasted", infotext, params)
        return params


@dataclass
class Loading:
    """The extension whose scripts are importing: where its registrations go."""

    extension: str
    callbacks: Callbacks
    settings: list = field(default_factory=list)  # modules.settings.Setting from add_setting
    path: Any = None  # the extension's folder (A1111's scripts.basedir())


_LOADING: ContextVar[Loading | None] = ContextVar("extension_loading", default=None)


@contextlib.contextmanager
def loading(extension: str, callbacks: Callbacks, settings: list, path: Any = None) -> Iterator[Loading]:
    """Registrations made inside this block belong to `extension`."""
    state = Loading(extension, callbacks, settings, path)
    token = _LOADING.set(state)
    try:
        yield state
    finally:
        _LOADING.reset(token)


def current(what: str) -> Loading:
    state = _LOADING.get()
    if state is None:
        raise RuntimeError(f"{what} can only be called while an extension's scripts load (at import time of scripts/*.py, "
                           f"or inside an on_ui_settings callback).")
    return state


def register(kind: str, fn: Callable) -> None:
    state = current(f"on_{kind}")
    state.callbacks.add(kind, state.extension, fn)
