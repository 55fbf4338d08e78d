"""The Flux / SD 3 sliders on txt2img and img2img: Distilled CFG Scale (Flux dev's guidance
embedding, Forge's slider) and Shift (the flow schedule's shift, 0 = the model's own), so a
pasted infotext's "Distilled CFG Scale" and "Shift" land in a control instead of being dropped."""

from __future__ import annotations

import gradio as gr

from modules.ui.common import slider

FLOW_FIELDS = ("distilled_cfg_scale", "shift")


def build_flow_controls(prefix: str) -> dict[str, gr.Slider]:
    """The two sliders side by side, by GenerationParams field name (ranges and defaults from there)."""
    with gr.Row():
        return {name: slider(prefix, name) for name in FLOW_FIELDS}
