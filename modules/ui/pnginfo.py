"""The PNG Info tab: drop an image, read how it was made (PNG `parameters`, or the EXIF
UserComment A1111 writes into JPEG and WebP files), and send those parameters, with the image
for img2img, to a generation tab."""

from __future__ import annotations

import html

import gradio as gr

from modules.outputs.infotext import read_infotext
from modules.ui.common import PasteTarget, infotext_html


def _describe(image) -> tuple[str, str]:
    """(HTML to show, the infotext) for an uploaded image; other text chunks are listed too."""
    if image is None:
        return "", ""
    text = read_infotext(image) or ""
    others = {k: v for k, v in (getattr(image, "info", None) or {}).items() if isinstance(v, str) and k != "parameters"}
    parts = [f"<h4>parameters</h4>{infotext_html(text)}" if text else "<p>This image holds no generation parameters.</p>"]
    parts += [f"<h4>{html.escape(k)}</h4><p>{html.escape(v)}</p>" for k, v in others.items()]
    return "".join(parts), text


def build_pnginfo_tab(txt2img: PasteTarget, img2img: PasteTarget, img2img_image: gr.Image, tabs: gr.Tabs) -> None:
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Source", type="pil", sources=["upload", "clipboard"], elem_id="pnginfo_image", height=400)
        with gr.Column():
            info = gr.HTML(elem_id="pnginfo_html_info")
            text = gr.Textbox(visible=False, elem_id="pnginfo_generation_info")
            with gr.Row():
                to_txt2img = gr.Button("Send to txt2img", elem_id="pnginfo_send_txt2img")
                to_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_img2img")

    image.change(_describe, image, [info, text], queue=False, api_name=False)

    def send_txt2img(infotext: str):
        return [*txt2img.updates(infotext), gr.Tabs(selected="txt2img")]

    def send_img2img(infotext: str, picture):
        return [*img2img.updates(infotext), picture, gr.Tabs(selected="img2img")]

    to_txt2img.click(send_txt2img, text, [*txt2img.outputs, tabs], concurrency_limit=None, api_name=False)  # queued: gr.Info only shows from queued events
    to_img2img.click(send_img2img, [text, image], [*img2img.outputs, img2img_image, tabs], concurrency_limit=None, api_name=False)
