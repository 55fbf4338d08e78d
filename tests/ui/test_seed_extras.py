"""The seed row's "Extra" (variation seed, strength, seed resize) and the Tiling checkbox: ↙
fills them from an infotext and opens Extra, closing Extra turns them off, ♻️ brings back a
picture's variation seed."""

from __future__ import annotations

import gradio as gr

from modules.generation.params import GenerationParams
from modules.ui.common import PasteTarget, build_output_panel, build_seed, reused_subseed, show_seed_extras

VARIED = ("a lighthouse\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 8, Size: 64x64, Variation seed: 301, "
          "Variation seed strength: 0.4, Seed resize from: 64x48, Tiling: True, Version: v")
PLAIN = "a lighthouse\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 8, Size: 64x64, Version: v"


def build():
    with gr.Blocks():
        row = build_seed("txt2img")
        tiling = gr.Checkbox(label=GenerationParams.field_meta("tiling")["label"], elem_id="txt2img_tiling")
        row.wire(build_output_panel("txt2img"))
    fields = {"seed": row.seed, **row.fields, "tiling": tiling}
    return row, PasteTarget(fields, gr.State({}), extras=(row,)), list(fields)


def values(updates: list, names: list[str]) -> dict:
    return {name: update.get("value") for name, update in zip(names, updates) if "value" in update}


def test_paste_fills_the_extra_controls_and_opens_extra():
    row, target, names = build()
    assert [c.elem_id for c in (row.extra, row.subseed, row.subseed_strength, row.resize_w, row.resize_h)] == [
        "txt2img_subseed_show", "txt2img_subseed", "txt2img_subseed_strength", "txt2img_seed_resize_from_w", "txt2img_seed_resize_from_h"]
    assert (row.subseed_strength.label, row.resize_w.label, row.subseed_strength.maximum) == ("Variation strength", "Resize seed from width", 1.0)
    updates = target.updates(VARIED)
    assert values(updates, names) == {"seed": 8, "subseed": 301, "subseed_strength": 0.4, "seed_resize_from_w": 64,
                                      "seed_resize_from_h": 48, "tiling": True}
    assert updates[-1].get("value") is True  # Extra opens

    updates = target.updates(PLAIN)  # a picture made without them: they go off, as its infotext means
    assert values(updates, names) == {"seed": 8, "subseed_strength": 0.0, "seed_resize_from_w": 0, "seed_resize_from_h": 0, "tiling": False}
    assert "value" not in updates[-1]


def test_closing_extra_turns_variation_and_resize_off_and_reuse_reads_the_infotext():
    box, *controls = show_seed_extras(False)
    assert box["visible"] is False and all(c["value"] == 0 for c in controls)
    box, *controls = show_seed_extras(True)
    assert box["visible"] is True and all("value" not in c for c in controls)
    assert reused_subseed([PLAIN, VARIED], 1, -1) == 301
    assert reused_subseed([PLAIN, VARIED], 0, 12) == 12  # no variation seed in that picture: keep what is there
    assert reused_subseed([], 0, 12) == 12
