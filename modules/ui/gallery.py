"""The Gallery tab: the images in outputs/, newest first, a page at a time, by folder and date
and searchable; one picked image shown large with its infotext, to download, delete (to
the trash, undoable) or send to a generation tab.

All the work is the index's (modules/outputs/gallery.py); this only turns its pages into
widgets. The index is refreshed incrementally on each view, so files saved or removed
outside the page show up without a rescan.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr
from fastapi.concurrency import run_in_threadpool

from modules.ui.common import infotext_html

if TYPE_CHECKING:
    from modules.outputs.gallery import GalleryIndex, GalleryPage
    from modules.ui.send_to import SendTargets

ALL = "All"
MAX_REVEAL_PAGES = 200  # pages searched for a revealed picture (it is new: nearly always page 1)


@dataclass(frozen=True)
class GalleryTab:
    """What an output's 📂 button needs: the components `reveal` updates, and `reveal`."""

    outputs: list
    reveal: Callable[[str, "gr.Request | None"], list]  # a saved file's path -> the tab showing its folder, the file picked


def _caption(entry) -> str:
    seed = f" · seed {entry.seed}" if entry.seed is not None else ""
    return f"{entry.prompt[:60]}{seed}" if entry.prompt else entry.rel


def _page_html(page: "GalleryPage", folder: str, date: str, search: str) -> str:
    where = " · ".join(x for x in (folder if folder != ALL else "", date if date != ALL else "", f"“{search}”" if search else "") if x)
    return (f"<p id='gallery_page_text'>{page.total} image{'s' if page.total != 1 else ''}{f' ({html.escape(where)})' if where else ''}"
            f" · page {page.page} of {page.pages}</p>")


def build_gallery_tab(index: "GalleryIndex", per_page: Callable[[], int], send: "SendTargets", tab: gr.Tab,
                      owner: Callable[["gr.Request | None"], str | None] = lambda request: None) -> GalleryTab:
    """`owner(request)` names the user folder whose images this visitor sees (per-user
    outputs when log-ins are on), or None for every image."""
    with gr.Row():
        folder = gr.Dropdown([ALL], value=ALL, label="Folder", elem_id="gallery_folder", scale=1)
        date = gr.Dropdown([ALL], value=ALL, label="Date", elem_id="gallery_date", scale=1)
        search = gr.Textbox(label="Search", placeholder="prompt words, \"a phrase\", seed:1234, model:name", elem_id="gallery_search", scale=3)
        refresh = gr.Button("🔄", elem_id="gallery_refresh", size="sm", scale=0, min_width=40)
    with gr.Row():
        first = gr.Button("⏮ First", elem_id="gallery_first_page", size="sm", scale=0, min_width=80)
        prev = gr.Button("◀ Previous", elem_id="gallery_prev_page", size="sm", scale=0, min_width=100)
        page_no = gr.Number(value=1, precision=0, minimum=1, label="Page", elem_id="gallery_page", scale=0, min_width=100)
        nxt = gr.Button("Next ▶", elem_id="gallery_next_page", size="sm", scale=0, min_width=100)
        status = gr.HTML(elem_id="gallery_status")
    with gr.Row():
        with gr.Column(scale=3):
            images = gr.Gallery(label="Images", columns=6, fit_columns=False, height=560, object_fit="contain", allow_preview=False, show_label=False,
                                elem_id="gallery_images")
        with gr.Column(scale=2):
            picked = gr.Image(label="Selected image", type="filepath", interactive=False, height=360, elem_id="gallery_selected_image")
            info = gr.HTML(elem_id="gallery_selected_info")
            text = gr.Textbox(visible=False, elem_id="gallery_generation_info")
            buttons = send.buttons("gallery")
            with gr.Row():
                download = gr.DownloadButton("Download", elem_id="gallery_download", size="sm", visible=False)
                delete = gr.Button("🗑️ Delete", elem_id="gallery_delete", size="sm", variant="stop")
                undo = gr.Button("↶ Undo delete", elem_id="gallery_undo", size="sm")
    rels = gr.State([])  # the shown page's images, in order
    chosen = gr.State("")  # the rel of the picked image

    def show(folder_value: str, date_value: str, query: str, number, mine: str | None = None) -> list:
        """One page of images (`mine`: only that user folder's), and the folder and date
        menus as the index now has them."""
        chosen_folder = None if folder_value in (ALL, None) else folder_value
        chosen_date = None if date_value in (ALL, None) else date_value
        try:
            page = index.query(chosen_folder, chosen_date, (query or "").strip(), int(number or 1), per_page(), owner=mine)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        folders = [ALL, *(f for f in index.folders(refresh=False, owner=mine) if f)]
        dates = [ALL, *index.dates(chosen_folder, refresh=False, owner=mine)]
        return [
            [(str(e.path), _caption(e)) for e in page.entries], [e.rel for e in page.entries], page.page,
            _page_html(page, folder_value or ALL, date_value or ALL, query or ""),
            gr.update(choices=folders, value=folder_value if folder_value in folders else ALL),
            gr.update(choices=dates, value=date_value if date_value in dates else ALL),
        ]

    async def show_async(folder_value, date_value, query, number, mine):
        return await run_in_threadpool(show, folder_value, date_value, query, number, mine)

    listing = [images, rels, page_no, status, folder, date]
    filters = [folder, date, search]

    def wire(trigger, number: Callable[[float], float] | None, **kw) -> None:
        """Show a page: the one `number(current)` names, or the first after a filter change."""
        step = number or (lambda _n: 1)

        async def handler(folder_value, date_value, query, current, request: gr.Request):
            return await show_async(folder_value, date_value, query, step(current or 1), owner(request))

        trigger(handler, [*filters, page_no], listing, api_name=False, **kw)

    wire(refresh.click, lambda n: n)
    wire(first.click, None)
    wire(prev.click, lambda n: max(1, n - 1))
    wire(nxt.click, lambda n: n + 1)
    wire(page_no.submit, lambda n: n)
    wire(search.submit, None)
    wire(folder.input, None)
    wire(date.input, None)
    wire(tab.select, lambda n: n)

    def pick(page_rels: list[str], evt: gr.SelectData, request: gr.Request):
        rel = page_rels[evt.index] if page_rels and 0 <= evt.index < len(page_rels) else ""
        entry = index.get(rel, refresh=False, owner=owner(request)) if rel else None
        if entry is None:
            return [None, "<p>This image is gone.</p>" if rel else "", "", "", gr.update(visible=False)]
        return pick_entry(entry)

    def pick_entry(entry) -> list[Any]:
        """The picked image's panel: the picture, its details and infotext, its download."""
        rel = entry.rel
        details = (f"<p class='gallery-file notranslate'>{html.escape(entry.rel)} · {entry.width}x{entry.height} · {entry.size // 1024} KB</p>"
                   + (infotext_html(entry.infotext) or "<p>This image holds no generation parameters.</p>"))
        return [str(entry.path), details, entry.infotext, rel, gr.update(value=str(entry.path), visible=True)]

    images.select(pick, rels, [picked, info, text, chosen, download], api_name=False)
    send.wire(buttons, text, picked)

    def remove(rel: str, folder_value, date_value, query, number, request: gr.Request):
        if not rel:
            gr.Warning("Pick an image first.")
            return [gr.update()] * (len(listing) + 5)
        mine = owner(request)
        try:
            index.delete(rel, owner=mine)
        except ValueError as exc:
            gr.Warning(str(exc))
            return [gr.update()] * (len(listing) + 5)
        gr.Info(f"Moved {rel} to the trash. Undo delete puts it back.")
        return [*show(folder_value, date_value, query, number, mine), None, "", "", "", gr.update(visible=False)]

    def restore(folder_value, date_value, query, number, request: gr.Request):
        mine = owner(request)
        try:
            rel = index.undo_delete(owner=mine)
        except ValueError as exc:
            gr.Warning(str(exc))
            return [gr.update()] * len(listing)
        gr.Info(f"Restored {rel}.")
        return show(folder_value, date_value, query, number, mine)

    delete.click(remove, [chosen, *filters, page_no], [*listing, picked, info, text, chosen, download], concurrency_limit=None, api_name=False)
    undo.click(restore, [*filters, page_no], listing, concurrency_limit=None, api_name=False)

    def reveal(path: str, request: "gr.Request | None") -> list:
        """The tab on the folder and date of `path` (a file in outputs/), on the page that
        holds it, with it picked; ValueError with a sentence when the Gallery cannot show it."""
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(index.root):
            raise ValueError(f"This picture is saved outside the outputs folder the Gallery shows: {real.parent}.")
        mine = owner(request)
        entry = index.get(real.relative_to(index.root).as_posix(), owner=mine)
        if entry is None:
            raise ValueError("This picture is no longer in the outputs folder.")
        number = 1
        while True:
            shown = show(entry.folder, entry.date or ALL, "", number, mine)
            spot = shown[1].index(entry.rel) if entry.rel in shown[1] else -1
            if spot >= 0 or shown[2] < number or number >= MAX_REVEAL_PAGES:  # found, past the last page (shown clamps to it), or far
                break
            number += 1
        picked_values = pick_entry(entry)
        shown[0] = gr.Gallery(value=shown[0], selected_index=spot if spot >= 0 else None)
        return [*shown, gr.update(value=""), *picked_values]

    return GalleryTab([*listing, search, picked, info, text, chosen, download], reveal)
