"""The PNG Info tab: drop an image, read how it was made (PNG `parameters`, or the EXIF
UserComment A1111 writes into JPEG and WebP files), and send those parameters, with the image
for img2img, inpaint or extras, to another tab."""

from __future__ import annotations

import html

import gradio as gr

from typing import TYPE_CHECKING

from modules.outputs.infotext import read_infotext
from modules.ui.common import infotext_html

if TYPE_CHECKING:
    from modules.ui.send_to import SendTargets


def _describe(image) -> tuple[str, str]:
    """(HTML to show, the infotext) for an uploaded image; other text chunks are listed too."""
    if image is None:
        return "", ""
    text = read_infotext(image) or ""
    others = {k: v for k, v in (getattr(image, "info", None) or {}).items() if isinstance(v, str) and k != "parameters"}
    parts = [f"<h4>parameters</h4>{infotext_html(text)}" if text else "<p>This image holds no generation parameters.</p>"]
    parts += [f"<h4>{html.escape(k)}</h4><p>{html.escape(v)}</p>" for k, v in others.items()]
    return "".join(parts), text


def build_pnginfo_tab(send: "SendTargets") -> None:
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Source", type="pil", format="png", sources=["upload", "clipboard"], elem_id="pnginfo_image", height=400)
        with gr.Column():
            info = gr.HTML(elem_id="pnginfo_html_info")
            text = gr.Textbox(visible=False, elem_id="pnginfo_generation_info")
            buttons = send.buttons("pnginfo")

    image.change(_describe, image, [info, text], queue=False, api_name=False)
    send.wire(buttons, text, image)
