"""The extensions' own tabs (A1111's on_ui_tabs), placed before Settings.

Each callback made its gr.Blocks outside the page (page.py asks for them before building it);
here each is rendered inside a tab of its own. A tab that cannot be shown (not a Blocks, an id
another tab has, a render that raises) is named in the log and the Extensions tab, and left out.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Iterable

import gradio as gr

if TYPE_CHECKING:
    from modules.extensions.loaded import LoadedExtensions

log = logging.getLogger(__name__)

# The page's own tab ids, which an extension's tab cannot take.
PAGE_TABS = frozenset({"txt2img", "img2img", "extras", "pnginfo", "gallery", "models", "settings", "extensions"})


def render_extension_tabs(extensions: "LoadedExtensions | None", tabs: Iterable[tuple[str, Any, str, str]]) -> list[str]:
    """Render each (extension, blocks, title, elem_id) as a tab where this is called (inside the
    page's gr.Tabs); returns the ids of the tabs shown."""
    shown: list[str] = []
    for extension, blocks, title, elem_id in tabs:
        tab_id = re.sub(r"[^A-Za-z0-9_-]", "_", elem_id) or re.sub(r"[^A-Za-z0-9_-]", "_", title)
        if not isinstance(blocks, gr.Blocks):
            log.error("Extension '%s': on_ui_tabs returned %r for tab '%s', not a gr.Blocks; the tab is left out",
                      extension, type(blocks).__name__, title)
            continue
        if tab_id in PAGE_TABS or tab_id in shown:
            log.error("Extension '%s': tab id '%s' of tab '%s' is taken; the tab is left out", extension, tab_id, title)
            continue
        with gr.Tab(title, id=tab_id, elem_id=f"tab_{tab_id}") as tab:
            try:
                blocks.render()
            except Exception:
                if extensions is not None:
                    extensions.callbacks.failed(extension, f"on_ui_tabs (tab '{title}')")
                else:
                    log.exception("Extension '%s': tab '%s' could not be shown", extension, title)
                tab.visible = False
                continue
        shown.append(tab_id)
    return shown
