"""A1111's "Send to txt2img / img2img / inpaint / extras" buttons, shared by PNG Info and the
Gallery: the infotext fills the target tab's controls (as ↙ does), the picture goes to its
image box, and the page switches to that tab."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from modules.ui.common import PasteTarget

if TYPE_CHECKING:
    from modules.ui.img2img import Img2ImgControls

TARGETS = ("txt2img", "img2img", "inpaint", "extras")
LABELS = {"txt2img": "Send to txt2img", "img2img": "Send to img2img", "inpaint": "Send to inpaint", "extras": "Send to extras"}


@dataclass(frozen=True)
class SendTargets:
    tabs: gr.Tabs  # the page's top-level tabs
    txt2img: PasteTarget
    img2img: "Img2ImgControls"
    extras_image: Any | None = None  # the Extras tab's single-image box, once that tab exists

    def buttons(self, prefix: str, targets: tuple[str, ...] = TARGETS) -> dict[str, gr.Button]:
        """A row of buttons, elem_id `<prefix>_send_<target>`."""
        available = [t for t in targets if t != "extras" or self.extras_image is not None]
        with gr.Row():
            return {t: gr.Button(LABELS[t], elem_id=f"{prefix}_send_{t}", size="sm") for t in available}

    def wire(self, buttons: dict[str, gr.Button], infotext: Any, image: Any) -> None:
        """`infotext` and `image` are the source's components (text, and an image or file path)."""
        from modules.ui.img2img import MODE_IDS

        i2i = self.img2img
        for target, button in buttons.items():
            if target == "txt2img":
                button.click(lambda text: [*self.txt2img.updates(text), gr.Tabs(selected="txt2img")], infotext,
                             [*self.txt2img.outputs, self.tabs], concurrency_limit=None, api_name=False)  # queued: gr.Info needs it
            elif target == "img2img":
                button.click(lambda text, picture: [*i2i.paste.updates(text), picture, 0, gr.update(visible=False),
                                                    gr.Tabs(selected=MODE_IDS[0]), gr.Tabs(selected="img2img")],
                             [infotext, image], [*i2i.paste.outputs, i2i.image, i2i.mode, i2i.inpaint_controls, i2i.mode_tabs, self.tabs],
                             concurrency_limit=None, api_name=False)
            elif target == "inpaint":
                button.click(lambda text, picture: [*i2i.paste.updates(text), _editor_value(picture), 2, gr.update(visible=True),
                                                    gr.Tabs(selected=MODE_IDS[2]), gr.Tabs(selected="img2img")],
                             [infotext, image], [*i2i.paste.outputs, i2i.inpaint, i2i.mode, i2i.inpaint_controls, i2i.mode_tabs, self.tabs],
                             concurrency_limit=None, api_name=False)
            elif target == "extras":
                button.click(lambda picture: [picture, gr.Tabs(selected="extras")], image, [self.extras_image, self.tabs],
                             concurrency_limit=None, api_name=False)


def _editor_value(picture) -> Any:
    """An image as the inpaint editor's value: the background, nothing painted yet."""
    if picture is None:
        return gr.update()
    return {"background": picture, "layers": [], "composite": picture}
