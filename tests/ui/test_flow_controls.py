"""The Flux / SD 3 sliders on txt2img and img2img, and ↙ filling them from a Forge infotext."""

from __future__ import annotations

import gradio as gr

from modules.ui.common import PasteTarget
from modules.ui.flow_controls import build_flow_controls

FORGE = ("a lighthouse\nSteps: 4, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 2.5, Shift: 3, "
         "Seed: 8, Size: 64x64, Version: v")
PLAIN = "a lighthouse\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 8, Size: 64x64, Version: v"


def test_shift_and_distilled_cfg_have_sliders_that_paste_fills():
    with gr.Blocks():
        fields = build_flow_controls("txt2img")
    shift = fields["shift"]
    assert (shift.elem_id, shift.minimum, shift.step, shift.value) == ("txt2img_shift", 0.0, 0.1, 0.0)
    assert shift.label.startswith("Shift") and fields["distilled_cfg_scale"].value == 3.5
    target, names = PasteTarget(fields, gr.State({})), list(fields)
    values = {name: update.get("value") for name, update in zip(names, target.updates(FORGE)) if "value" in update}
    assert values == {"distilled_cfg_scale": 2.5, "shift": 3.0}
    values = {name: update.get("value") for name, update in zip(names, target.updates(PLAIN)) if "value" in update}
    assert values["shift"] == 0.0  # a picture without Shift ran the model's own
