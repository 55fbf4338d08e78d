"""The ControlNet accordion's logic without a browser: units as the extension numbers and ids
them, the values a user sets becoming the job's units, the preview button, a pasted
`ControlNet N` infotext filling its unit, and the detected maps after the images."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.controlnet.models import ControlNetLibrary
from modules.controlnet.preprocessors import Preprocessors
from modules.controlnet.service import ControlNetService
from modules.controlnet.units import UnitSettings, infotext_value
from modules.jobs.queue import JobQueue, JobStatus
from modules.ui.common import JobRunner
from modules.ui.controlnet import build_controlnet
from tests import aio

MODEL_STEM = "control_v11p_sd15_canny"


@pytest.fixture
def queue():
    jobs = JobQueue()
    yield jobs
    jobs.shutdown()


@pytest.fixture
def service(tmp_path) -> ControlNetService:
    folder = tmp_path / "ControlNet"
    folder.mkdir()
    (folder / f"{MODEL_STEM}.safetensors").write_bytes(b"\x00" * 2048)  # listed by name; nothing here loads it
    library = ControlNetLibrary([folder], tmp_path / "configs")
    return ControlNetService(library, Preprocessors(tmp_path / "annotators"), unit_count=2)


def build(service, img2img=False, picture=None, queue=None, max_pixels=None):
    with gr.Blocks() as blocks:
        width = gr.Slider(64, 2048, value=64, label="Width")
        height = gr.Slider(64, 2048, value=64, label="Height")
        panel = build_controlnet("img2img" if img2img else "txt2img", service, queue, width, height, img2img=img2img, picture=picture,
                                 max_pixels=lambda: max_pixels)
    return blocks, panel


REQUEST = SimpleNamespace(session_hash="s1", username=None, client=None)


def preview(blocks, *values):
    """The 💥 handler, as gradio calls it (a coroutine: the work is a queue job)."""
    run = _handler(blocks, "run_preprocessor")
    return aio.run(run(REQUEST, *values))


def square() -> Image.Image:
    picture = Image.new("RGB", (64, 64), (0, 0, 0))
    ImageDraw.Draw(picture).rectangle((8, 16, 31, 39), fill=(255, 255, 255))
    return picture


def values_of(panel, **changes_by_unit) -> list:
    """The panel's input values as built, with `u<i>_<field>` changed (field: a UnitControls attribute)."""
    out = []
    for unit in panel.units:
        for control in unit.inputs():
            name = next(n for n, v in vars(unit).items() if v is control)
            out.append(changes_by_unit.get(f"u{unit.index}_{name}", control.value))
    return out


def test_units_are_tabs_numbered_and_ided_as_the_extensions(service):
    blocks, panel = build(service)
    assert [u.index for u in panel.units] == [0, 1]  # control_net_unit_count
    unit = panel.units[1]
    assert unit.enabled.elem_id == "txt2img_controlnet_ControlNet-1_controlnet_enable_checkbox"
    assert unit.image.elem_id == "txt2img_controlnet_ControlNet-1_input_image"
    assert unit.preview.elem_id == "txt2img_controlnet_ControlNet-1_generated_image"
    assert unit.module.elem_id == "txt2img_controlnet_ControlNet-1_controlnet_preprocessor_dropdown"
    assert unit.model.choices[0][0] == "None" and unit.model.choices[1][0].startswith(f"{MODEL_STEM} [")
    assert [c[0] for c in unit.resize_mode.choices] == ["Just Resize", "Crop and Resize", "Resize and Fill"]
    assert [c[0] for c in unit.control_mode.choices] == ["Balanced", "My prompt is more important", "ControlNet is more important"]
    assert [c[0] for c in unit.hr_option.choices] == ["Both", "Low res only", "High res only"]
    assert unit.type_filter.value == "All" and "Canny" in [c[0] for c in unit.type_filter.choices]
    assert unit.independent is None  # txt2img has no img2img input to use
    tabs = [b.label for b in blocks.blocks.values() if isinstance(b, gr.Tab)]
    assert tabs == ["ControlNet Unit 0", "ControlNet Unit 1"]


def test_the_values_become_units_each_in_its_place(service):
    _, panel = build(service)
    assert panel.units_from(values_of(panel)) == []  # nothing enabled: no ControlNet for the job
    picture = square()
    model = panel.model_choices()[1]
    units = panel.units_from(values_of(panel, u1_enabled=True, u1_image=picture, u1_module="canny", u1_model=model, u1_weight=0.5,
                                      u1_threshold_a=50, u1_threshold_b=150, u1_guidance_end=0.6, u1_hr_option="Low res only",
                                      u1_control_mode="ControlNet is more important", u1_resize_mode="Just Resize"))
    assert [u.settings.enabled for u in units] == [False, True]  # unit 1 stays unit 1 ("ControlNet 1" in the infotext)
    s = units[1].settings
    assert (s.module, s.model, s.weight, s.threshold_a, s.threshold_b, s.guidance_end) == ("canny", model, 0.5, 50, 150, 0.6)
    assert (s.hr_option, s.control_mode, s.resize_mode, s.use_img2img_input) == ("Low res only", "ControlNet is more important", "Just Resize", False)
    assert units[1].image is picture and units[1].mask is None
    service.check(units, img2img=False)  # what Generate checks before queueing: fine

    # A preprocessor without thresholds sends the extension's "default" (-1), whatever the hidden sliders hold.
    [_, unit] = panel.units_from(values_of(panel, u1_enabled=True, u1_image=picture, u1_module="invert (from white bg & black line)",
                                           u1_model=model, u1_threshold_a=50))
    assert (unit.settings.processor_res, unit.settings.threshold_a, unit.settings.threshold_b) == (-1, -1, -1)


def test_bad_values_are_refused_with_the_units_name(service):
    _, panel = build(service)
    with pytest.raises(ValueError, match="ControlNet Unit 0.*Starting Control Step"):
        panel.units_from(values_of(panel, u0_enabled=True, u0_guidance_start=0.8, u0_guidance_end=0.2))
    units = panel.units_from(values_of(panel, u0_enabled=True, u0_module="canny", u0_model=panel.model_choices()[1]))
    with pytest.raises(ValueError, match="no image"):
        panel.check(units)  # what the page shows as a visible error instead of queueing
    units = panel.units_from(values_of(panel, u0_enabled=True, u0_image=square(), u0_model="nonexistent"))
    with pytest.raises(ValueError, match=MODEL_STEM):
        panel.check(units)  # unknown model: the choices are named


def test_img2img_units_use_the_img2img_input_unless_given_their_own(service):
    _, panel = build(service, img2img=True)
    assert panel.units[0].independent.label == "Upload independent control image"
    assert panel.units[0].hr_option is None
    model = panel.model_choices()[1]
    [unit, _] = panel.units_from(values_of(panel, u0_enabled=True, u0_image=square(), u0_module="canny", u0_model=model))
    assert unit.settings.use_img2img_input and unit.image is None  # the hidden upload is not used
    service.check([unit], img2img=True)
    own = square()
    [unit, _] = panel.units_from(values_of(panel, u0_enabled=True, u0_independent=True, u0_image=own, u0_model=model))
    assert not unit.settings.use_img2img_input and unit.image is own


def _handler(blocks, name: str, unit_index: int = 0):
    return [f.fn for f in blocks.fns.values() if f.fn.__name__ == name][unit_index]


def test_the_preview_button_shows_the_canny_edges_beside_the_picture(service, queue):
    blocks, panel = build(service, queue=queue, max_pixels=512 * 512)
    # image, use mask, mask, module, resolution, threshold a, threshold b, pixel perfect, resize mode, width, height
    shown, column, allow = preview(blocks, square(), False, None, "canny", 512, 100, 200, True, "Crop and Resize", 64, 64)
    edges = np.asarray(shown["value"].convert("L")) > 127
    assert edges.shape == (64, 64)  # pixel perfect: the generation's size
    ys, xs = np.nonzero(edges)
    assert 40 < edges.sum() < 400 and xs.min() >= 6 and xs.max() <= 33 and ys.min() >= 14 and ys.max() <= 41  # the square's outline
    assert column["visible"] is True and allow["value"] is True
    # Nothing to preprocess: a message (gr.Warning), the page unchanged.
    with pytest.warns(UserWarning, match="no picture to preprocess"):
        assert preview(blocks, None, False, None, "canny", 512, 100, 200, False, "Crop and Resize", 64, 64) == ({"__type__": "update"},) * 3
    with pytest.warns(UserWarning, match="Preprocessor Resolution 1024 .* over this server's"):
        assert preview(blocks, square(), False, None, "canny", 1024, 100, 200, False, "Crop and Resize", 64, 64) == ({"__type__": "update"},) * 3
    # A preprocessor whose annotator weights are missing fails in its job: the message names the file.
    with pytest.warns(UserWarning, match="needs the annotator weights"):
        assert preview(blocks, square(), False, None, "softedge_pidinet", 512, 100, 200, False, "Crop and Resize", 64, 64) == ({"__type__": "update"},) * 3


def test_img2img_preview_uses_the_img2img_input(service, queue):
    source = square()
    blocks, panel = build(service, img2img=True, picture=([gr.State(0)], lambda mode: source), queue=queue)
    shown, _, _ = preview(blocks, None, False, None, False, "invert (from white bg & black line)", 512, 100, 200, False, "Crop and Resize",
                          64, 64, 0)
    assert np.asarray(shown["value"].convert("L"))[20, 10] < 128  # the square inverted: black where it was white


def test_a_pasted_infotext_fills_the_unit_it_names_and_switches_off_the_others(service):
    _, panel = build(service)
    model = panel.model_choices()[1]
    settings = UnitSettings(module="canny", model=model, weight=0.7, resize_mode="Resize and Fill", processor_res=256, threshold_a=80,
                            threshold_b=160, guidance_start=0.1, guidance_end=0.9, pixel_perfect=False, control_mode="My prompt is more important")
    text = f'a cat\nSteps: 6, Sampler: Euler, Seed: 3, Size: 64x64, ControlNet 1: "{infotext_value(settings)}"'
    updates = panel.updates(text)
    assert len(updates) == len(panel.outputs)
    per_unit = len(panel.units[0].pasted())
    unit0, unit1 = updates[:per_unit], updates[per_unit:]
    assert unit0[0]["value"] is False  # not in the infotext: off
    got = dict(zip(["enabled", "module", "model", "weight", "resize_mode", "processor_res", "threshold_a", "threshold_b",
                    "guidance_start", "guidance_end", "pixel_perfect", "control_mode", "type_filter"], unit1))
    assert {k: v["value"] for k, v in got.items()} == {
        "enabled": True, "module": "canny", "model": model, "weight": 0.7, "resize_mode": "Resize and Fill", "processor_res": 256,
        "threshold_a": 80, "threshold_b": 160, "guidance_start": 0.1, "guidance_end": 0.9, "pixel_perfect": False,
        "control_mode": "My prompt is more important", "type_filter": "All"}
    assert got["threshold_a"]["label"] == "Low Threshold" and got["threshold_a"]["visible"] is True

    # A model this server lacks: the unit is left as it is, and the user is told.
    missing = settings.model_copy(update={"model": "control_v11f1p_sd15_depth [cfd03158]"})
    with pytest.warns(UserWarning, match="ControlNet 0"):
        updates = panel.updates(f'a cat\nSteps: 6, Sampler: Euler, Seed: 3, Size: 64x64, ControlNet 0: "{infotext_value(missing)}"')
    assert all(u == {"__type__": "update"} for u in updates[:per_unit])


def test_detected_maps_follow_the_images_in_the_gallery():
    picture, detected = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "white")
    result = SimpleNamespace(images=[picture], paths=[], infotexts=["a cat"], seeds=[5], grid_path=None, notes=[], detected_maps=[detected])
    job = SimpleNamespace(status=JobStatus.DONE, result=result, run_seconds=1.0, recorded=True)
    files, _, log, seeds, _, infotexts, _ = JobRunner._shown(job)
    assert files == [picture, detected] and seeds == [5, 5] and infotexts == ["a cat", ""]
    assert "1 image(s)" in log


def test_a_preprocessor_from_ui_config_shapes_its_sliders_when_the_accordion_opens(service, tmp_path):
    import json

    from modules.ui.ui_config import UiConfig

    blocks, panel = build(service)
    (tmp_path / "ui-config.json").write_text(json.dumps({"txt2img_controlnet_unit_0/Preprocessor/value": "canny"}))  # no page tab here
    assert UiConfig(tmp_path / "ui-config.json").apply(blocks) == []
    unit = panel.units[0]
    assert unit.module.value == "canny" and unit.threshold_a.visible is False  # built for "none"
    accordion = next(b for b in blocks.blocks.values() if isinstance(b, gr.Accordion))
    [on_open] = [f for f in blocks.fns.values() if (accordion._id, "expand") in f.targets and unit.module in f.inputs]
    res, a, b = on_open.fn(*(c.value for c in on_open.inputs))
    assert (a["label"], a["visible"], a["value"], b["label"], b["value"]) == ("Low Threshold", True, 100, "High Threshold", 200)


def test_the_control_type_filter_offers_that_types_preprocessors_and_models(service):
    blocks, panel = build(service)
    pick_type = _handler(blocks, "pick_type")
    modules, models = pick_type("Canny")
    assert modules["value"] == "canny" and "canny" in modules["choices"] and "depth_midas" not in modules["choices"]
    assert models["value"].startswith(f"{MODEL_STEM} [") and models["choices"][0] == "None"  # its model, by name
    modules, models = pick_type("Depth")
    assert "canny" not in modules["choices"] and models == {"__type__": "update", "choices": ["None"], "value": "None"}
    modules, _ = pick_type("All")
    assert modules["value"] == "none" and len(modules["choices"]) == len(panel.module_choices())
