"""A1111's row under an output gallery: 📂 (this app's Gallery on the output's folder: the server
is often remote, so no file manager is opened), 💾 Save (a copy in `outdir_save`, with log.csv),
📋 Copy infotext (to the browser's clipboard), Send to img2img / inpaint / extras.

The buttons act on the picture the user chose in the gallery, else the first picture (a grid
shown first stands for the pictures after it, so it is skipped). The panel is built with its
tab; the page wires it once every target tab exists (`wire_output_buttons`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
from fastapi.concurrency import run_in_threadpool

from modules.outputs.saving import GRID_BASENAME
from modules.ui.send_to import LABELS

if TYPE_CHECKING:
    from modules.outputs.save_button import SaveFolders
    from modules.ui.common import OutputPanel
    from modules.ui.gallery import GalleryTab
    from modules.ui.send_to import SendTargets

SEND_TARGETS = ("img2img", "inpaint", "extras")

# The browser copies the shown infotext: the Clipboard API where the page may use it (https,
# localhost), else a selected textarea and execCommand('copy') (plain http on a LAN).
COPY_JS = """
async (ignored) => {
  const box = document.querySelector('#%s_html_info .infotext');
  const text = box ? box.innerText.trim() : '';
  if (!text) return 'empty';
  try {
    if (navigator.clipboard && window.isSecureContext) { await navigator.clipboard.writeText(text); return 'copied'; }
  } catch (e) { /* refused: try the old way */ }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.opacity = '0';
  document.body.appendChild(area);
  area.select();
  let done = false;
  try { done = document.execCommand('copy'); } catch (e) { done = false; }
  area.remove();
  return done ? 'copied' : 'failed';
}
"""


@dataclass(frozen=True)
class OutputButtons:
    prefix: str
    folder: gr.Button  # 📂
    save: gr.Button
    copy: gr.Button
    send: dict[str, gr.Button]  # target -> its button
    download: gr.File  # the saved copies, shown after Save
    chosen: gr.State  # the gallery entry the user picked since the last result (-1: none)
    copy_result: gr.Textbox  # hidden: what the browser's copy did, for the message


def build_output_buttons(prefix: str, gallery: gr.Gallery, targets: tuple[str, ...] = SEND_TARGETS) -> OutputButtons:
    """The row under `gallery`; elem_ids `<prefix>_open_folder`, `<prefix>_save`,
    `<prefix>_copy_infotext`, `<prefix>_send_<target>`."""
    with gr.Row(elem_id=f"{prefix}_output_buttons"):
        folder = gr.Button("📂", elem_id=f"{prefix}_open_folder", size="sm", scale=0, min_width=40)
        save = gr.Button("💾 Save", elem_id=f"{prefix}_save", size="sm", scale=0, min_width=90)
        copy = gr.Button("📋 Copy infotext", elem_id=f"{prefix}_copy_infotext", size="sm", scale=0, min_width=130)
        send = {t: gr.Button(LABELS[t], elem_id=f"{prefix}_send_{t}", size="sm", min_width=120) for t in targets}
    download = gr.File(label="Saved files", file_count="multiple", interactive=False, visible=False, elem_id=f"{prefix}_download_files")
    copy_result = gr.Textbox(visible=False, elem_id=f"{prefix}_copy_result")
    chosen = gr.State(-1)
    gallery.select(_picked, None, chosen, queue=False, api_name=False)
    gallery.change(lambda: -1, None, chosen, queue=False, api_name=False)  # a new result: nothing chosen yet
    return OutputButtons(prefix, folder, save, copy, send, download, chosen, copy_result)


def _picked(evt: gr.SelectData) -> int:
    return evt.index if isinstance(evt.index, int) else -1


def _is_grid(path: str | None) -> bool:
    return bool(path) and Path(path).name.startswith(f"{GRID_BASENAME}-")


def chosen_index(entries: list, files: list, chosen: int) -> int:
    """The entry the buttons act on: the chosen one, else the first that is not a grid (the
    grids, shown first, stand for the pictures after them), else the first. -1: none."""
    if not entries:
        return -1
    if 0 <= chosen < len(entries):
        return chosen
    files = list(files or []) + [None] * len(entries)
    return next((i for i in range(len(entries)) if not _is_grid(files[i])), 0)


def _entry_path(entry: Any) -> str | None:
    """A gallery value's entry, (path, caption) or a path, as the path of the file the page shows."""
    value = entry[0] if isinstance(entry, (tuple, list)) else entry
    return str(value) if value is not None else None


def chosen_output(entries: list | None, infotexts: list, files: list, chosen: int) -> tuple[str, str]:
    """(infotext, picture path) of the entry the buttons act on; gr.Error when there is none."""
    entries = entries or []
    index = chosen_index(entries, files, chosen)
    if index < 0:
        raise gr.Error("Nothing to send: generate a picture first.")
    texts = list(infotexts or [])
    return (texts[index] if index < len(texts) else ""), _entry_path(entries[index])


@dataclass(frozen=True)
class OutputActions:
    """What the buttons need of the app."""

    settings: Any  # the settings store: outdir_save, save_txt, save_selected_only
    data_dir: Path  # outdir_save is relative to it
    folders: "SaveFolders"
    send: "SendTargets"
    gallery: "GalleryTab | None" = None  # 📂 opens it
    logins: bool = False  # then Save keeps each user's copies in their own folder
    served: tuple[Path, ...] = ()  # folders gradio serves files from as they are (besides the working folder and temp)

    def save_folder(self, request: "gr.Request | None") -> Path:
        from modules.outputs.naming import user_folder

        folder = Path(self.settings["outdir_save"] or "log/images")
        folder = folder if folder.is_absolute() else self.data_dir / folder
        user = getattr(request, "username", None)
        return folder / user_folder(user) if self.logins and user else folder


def save_outputs(actions: OutputActions, entries: list | None, infotexts: list, files: list, chosen: int,
                 request: "gr.Request | None" = None) -> list[Path]:
    """Save's work: the chosen picture (or every picture but the grids, with
    `save_selected_only` off) copied to the save folder; the files written. ValueError with a sentence."""
    from PIL import Image

    from modules.outputs.save_button import Output

    entries = entries or []
    if not entries:
        raise ValueError("Nothing to save: generate a picture first.")
    files = list(files or []) + [None] * len(entries)
    texts = list(infotexts or []) + [""] * len(entries)
    if actions.settings["save_selected_only"]:
        indexes = [chosen_index(entries, files, chosen)]
    else:
        indexes = [i for i in range(len(entries)) if not _is_grid(files[i]) or i == chosen] or [0]
    outputs = []
    for i in indexes:
        saved = files[i] if files[i] and Path(files[i]).is_file() else None
        image = None
        if saved is None:
            shown = _entry_path(entries[i])
            if not shown or not Path(shown).is_file():
                raise ValueError("This picture is no longer on the server: generate it again to save it.")
            with Image.open(shown) as picture:
                picture.load()
                image = picture.copy()
        outputs.append(Output(texts[i], Path(saved) if saved else None, image))
    return actions.folders.get(actions.save_folder(request)).save(outputs, save_txt=bool(actions.settings["save_txt"]))


def downloadable(paths: list[Path], served: tuple[Path, ...]) -> list[str]:
    """`paths` as gradio may hand them to the browser: those outside the folders it serves from
    (a --data-dir elsewhere, an absolute outdir_save) are copied into its upload folder first."""
    from gradio.utils import get_upload_folder, is_in_or_equal

    roots = [Path.cwd(), Path(tempfile.gettempdir()), *served]
    if all(any(is_in_or_equal(str(p), str(root)) for root in roots) for p in paths):
        return [str(p) for p in paths]
    folder = Path(tempfile.mkdtemp(dir=get_upload_folder()))
    return [shutil.copy2(p, folder / p.name) for p in paths]


def wire_output_buttons(panel: "OutputPanel", actions: OutputActions) -> None:
    """Give the panel's buttons their handlers (the send targets and the Gallery exist now)."""
    buttons = panel.buttons
    if buttons is None:
        return
    source = [panel.gallery, panel.infotexts, panel.files, buttons.chosen]
    actions.send.wire_from(buttons.send if actions.send.extras_image is not None else {k: v for k, v in buttons.send.items() if k != "extras"},
                           chosen_output, source)
    if actions.send.extras_image is None and "extras" in buttons.send:
        buttons.send["extras"].visible = False

    async def save(entries, infotexts, files, chosen, request: gr.Request):
        try:
            written = await run_in_threadpool(save_outputs, actions, entries, infotexts, files, chosen, request)
        except (ValueError, OSError) as exc:
            raise gr.Error(str(exc) if isinstance(exc, ValueError) else f"Could not save: {exc.strerror or exc}.") from None
        pictures = [p for p in written if p.suffix.lower() != ".txt"]
        gr.Info(f"Saved {len(pictures)} picture(s) to {pictures[0].parent}.")
        return gr.File(value=downloadable(written, actions.served), visible=True)

    buttons.save.click(save, source, buttons.download, concurrency_limit=None, api_name=False)

    def copied(result: str) -> None:
        if result == "copied":
            gr.Info("Copied the generation parameters.")
        elif result == "empty":
            gr.Warning("Nothing to copy: generate a picture first.")
        else:
            gr.Warning("The browser did not allow copying: select the text under the picture and copy it.")

    buttons.copy.click(copied, buttons.copy_result, None, js=COPY_JS % buttons.prefix, concurrency_limit=None, api_name=False)

    gallery = actions.gallery
    if gallery is None:
        buttons.folder.visible = False
        return

    def open_folder(entries, infotexts, files, chosen, request: gr.Request):
        index = chosen_index(entries or [], files, chosen)
        if index < 0:
            raise gr.Error("Nothing to show: generate a picture first.")
        path = (list(files or []) + [None] * (index + 1))[index]
        if not path:
            raise gr.Error("This picture was not saved (saving is off), so it is in no folder: press Save to keep it.")
        try:
            shown = gallery.reveal(os.fspath(path), request)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        return [*shown, gr.Tabs(selected="gallery")]

    buttons.folder.click(open_folder, source, [*gallery.outputs, actions.send.tabs], concurrency_limit=None, api_name=False)

