"""A1111's "Send to txt2img / img2img / inpaint / extras" buttons, shared by PNG Info and the
Gallery: the infotext fills the target tab's controls (as ↙ does), the picture goes to its
image box, and the page switches to that tab."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

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
        self.wire_from(buttons, lambda text, picture: (text, picture), [infotext, image])

    def wire_from(self, buttons: dict[str, gr.Button], source: Callable[..., tuple[str, Any]], inputs: list) -> None:
        """Like `wire`, with `source(*values of inputs)` giving the (infotext, picture) to send: an
        output panel's chosen picture. It may raise gr.Error to say there is nothing to send."""
        for target, button in buttons.items():
            button.click(lambda *values, target=target: self.updates(target, *source(*values)), inputs, self.outputs(target),
                         concurrency_limit=None, api_name=False)  # queued: gr.Info needs it

    def outputs(self, target: str) -> list:
        """What sending to `target` changes: the target's controls and picture, and the tabs."""
        i2i = self.img2img
        if target == "txt2img":
            return [*self.txt2img.outputs, self.tabs]
        if target == "extras":
            return [self.extras_image, self.tabs]
        picture = i2i.image if target == "img2img" else i2i.inpaint
        return [*i2i.paste.outputs, picture, i2i.mode, i2i.inpaint_controls, i2i.mode_tabs, self.tabs]

    def updates(self, target: str, text: str, picture: Any) -> list:
        """The values for `outputs(target)`: the infotext's controls filled (as ↙ does), the
        picture in place, the target tab (and img2img's mode) shown."""
        from modules.ui.img2img import MODE_IDS

        if target == "txt2img":
            return [*self.txt2img.updates(text), gr.Tabs(selected="txt2img")]
        if target == "extras":
            return [picture, gr.Tabs(selected="extras")]
        mode = 0 if target == "img2img" else 2
        value = picture if target == "img2img" else _editor_value(picture)
        return [*self.img2img.paste.updates(text), value, mode, gr.update(visible=mode == 2), gr.Tabs(selected=MODE_IDS[mode]),
                gr.Tabs(selected="img2img")]


def _editor_value(picture) -> Any:
    """An image as the inpaint editor's value: the background, nothing painted yet."""
    if picture is None:
        return gr.update()
    return {"background": picture, "layers": [], "composite": picture}
