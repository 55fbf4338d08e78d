"""The Refiner accordion and the hires checkpoint dropdown: A1111's choices and ranges, and ↙
filling them from an infotext."""

from __future__ import annotations

import gradio as gr

from modules.ui.common import PasteTarget
from modules.ui.refiner import build_refiner
from modules.ui.txt2img import build_hires

REFINED = ("a lighthouse\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 8, Size: 64x64, Denoising strength: 0.5, Hires upscale: 2, "
           "Hires checkpoint: xl-refiner [0123456789], Hires upscaler: Latent, Refiner: xl-refiner [0123456789], Refiner switch at: 0.6, Version: v")
PLAIN = "a lighthouse\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 8, Size: 64x64, Version: v"


class Models:
    def __init__(self):
        self.names = ["xl-base.safetensors [aaaa]", "xl-refiner.safetensors [0123456789]"]

    def titles(self):
        return list(self.names)


def build():
    models = Models()
    with gr.Blocks():
        refiner = build_refiner("txt2img", models)
        hires = build_hires("txt2img", checkpoints=tuple(models.titles()))
    hires.pop("_target")
    fields = {**hires, **refiner}
    return models, refiner, hires, PasteTarget(fields, gr.State({})), list(fields)


def test_the_controls_offer_none_and_the_checkpoints_with_a1111s_switch_range():
    models, refiner, hires, _, _ = build()
    checkpoint, switch = refiner["refiner_checkpoint"], refiner["refiner_switch_at"]
    assert checkpoint.elem_id == "txt2img_refiner_checkpoint" and checkpoint.value == "None"
    assert [c[0] for c in checkpoint.choices] == ["None", *models.titles()]
    assert (switch.minimum, switch.maximum, switch.step, switch.value, switch.label) == (0.01, 1.0, 0.01, 0.8, "Switch at")
    assert hires["hr_checkpoint_name"].value == "Use same checkpoint"
    assert [c[0] for c in hires["hr_checkpoint_name"].choices] == ["Use same checkpoint", *models.titles()]


def test_paste_fills_the_refiner_and_the_hires_checkpoint_and_a_plain_infotext_clears_them():
    _, _, _, target, names = build()
    values = {name: update.get("value") for name, update in zip(names, target.updates(REFINED)) if "value" in update}
    assert values["refiner_checkpoint"] == "xl-refiner [0123456789]" and values["refiner_switch_at"] == 0.6
    assert values["hr_checkpoint_name"] == "xl-refiner [0123456789]"
    values = {name: update.get("value") for name, update in zip(names, target.updates(PLAIN)) if "value" in update}
    assert values["refiner_checkpoint"] == "None"
