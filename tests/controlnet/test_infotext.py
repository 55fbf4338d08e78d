"""The ControlNet extension's infotext (`ControlNet 0: "Module: canny, Model: ..., ..."`) read
back by PNG Info and paste: every unit setting but the picture comes back, a malformed one is
reported, and the rest of the infotext still applies."""

from __future__ import annotations

from fastapi.testclient import TestClient

from modules.controlnet.units import UnitSettings, infotext_value
from modules.generation.params import GenerationParams, infotext_fields
from modules.outputs.infotext import format_infotext, parse_infotext
from modules.outputs.paste import params_from_infotext

# What the extension itself writes (v1.1.455, two units; the picture's other keys as A1111 writes them).
EXTENSION_WRITTEN = (
    "a house\nNegative prompt: blurry\n"
    "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1234, Size: 512x512, Model hash: 6ce0161689, "
    'Model: v1-5-pruned-emaonly, ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, '
    "Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, "
    'Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced", '
    'ControlNet 2: "Module: depth_midas, Model: control_v11f1p_sd15_depth [cfd03158], Weight: 0.65, Resize Mode: Just Resize, '
    "Processor Res: 384, Threshold A: -1.0, Threshold B: -1.0, Guidance Start: 0.1, Guidance End: 0.8, Pixel Perfect: True, "
    'Control Mode: ControlNet is more important", Version: v1.10.1'
)


def test_the_extensions_infotext_comes_back_unit_by_unit():
    pasted = params_from_infotext(EXTENSION_WRITTEN)
    assert set(pasted.controlnet) == {0, 2}  # the unit's index, as written (unit 1 was off)
    canny, depth = pasted.controlnet[0], pasted.controlnet[2]
    assert (canny.module, canny.model, canny.weight, canny.resize_mode) == ("canny", "control_v11p_sd15_canny [d14c016b]", 1.0, "Crop and Resize")
    assert (canny.processor_res, canny.threshold_a, canny.threshold_b) == (512, 100.0, 200.0)
    assert (canny.guidance_start, canny.guidance_end, canny.pixel_perfect, canny.control_mode) == (0.0, 1.0, False, "Balanced")
    assert canny.enabled
    assert (depth.module, depth.weight, depth.resize_mode, depth.processor_res) == ("depth_midas", 0.65, "Just Resize", 384)
    assert (depth.guidance_start, depth.guidance_end, depth.pixel_perfect) == (0.1, 0.8, True)
    assert depth.control_mode == "ControlNet is more important"
    # ControlNet keys are not "settings this program lacks", and the picture's own keys still apply
    assert not [k for k in pasted.skipped if k.startswith("ControlNet")], pasted.report()
    assert (pasted.values["seed"], pasted.values["steps"], pasted.values["sampler_name"]) == (1234, 20, "Euler a")


def test_what_this_server_writes_reads_back_to_the_same_settings():
    unit = UnitSettings(module="invert", model="demo-shapes-canny [0123abcd]", weight=0.55, resize_mode="Resize and Fill",
                        processor_res=256, threshold_a=12.5, guidance_start=0.2, guidance_end=0.7, pixel_perfect=True,
                        control_mode="My prompt is more important")
    value = infotext_value(unit)
    assert value == ("Module: invert, Model: demo-shapes-canny [0123abcd], Weight: 0.55, Resize Mode: Resize and Fill, Processor Res: 256, "
                     "Threshold A: 12.5, Threshold B: -1.0, Guidance Start: 0.2, Guidance End: 0.7, Pixel Perfect: True, "
                     "Control Mode: My prompt is more important")
    params = GenerationParams.create(prompt="a square", seed=3, steps=4, width=64, height=64)
    fields = infotext_fields(params, seed=3, model_hash="abcdef0123", model_name="m", version="v1", extras=[("ControlNet 1", value)])
    text = format_infotext(params.prompt, params.negative_prompt, fields)
    assert f'ControlNet 1: "{value}"' in text  # quoted, as A1111 writes a value with commas
    assert parse_infotext(text)["ControlNet 1"] == value
    pasted = params_from_infotext(text)
    fields_back = pasted.controlnet[1].model_dump(exclude={"low_vram", "hr_option", "save_detected_map", "use_img2img_input"})
    assert fields_back == unit.model_dump(exclude={"low_vram", "hr_option", "save_detected_map", "use_img2img_input"})
    assert GenerationParams.create(**pasted.values) == params


def test_a_malformed_unit_is_reported_and_the_rest_still_applies():
    text = (EXTENSION_WRITTEN.replace("Weight: 0.65", "Weight: 7")  # out of 0..2
            .replace("Version: v1.10.1", 'ControlNet 3: "garbage without keys", Version: v1.10.1'))
    pasted = params_from_infotext(text)
    assert set(pasted.controlnet) == {0}
    assert "ControlNet 2" in pasted.skipped and "weight" in pasted.skipped["ControlNet 2"].lower()
    assert "ControlNet 3" in pasted.skipped and "not 'Key: value'" in pasted.skipped["ControlNet 3"]
    assert pasted.values["seed"] == 1234


def test_img2img_paste_reads_units_too():
    pasted = params_from_infotext(EXTENSION_WRITTEN.replace("Seed: 1234", "Seed: 1234, Denoising strength: 0.5"), img2img=True)
    assert set(pasted.controlnet) == {0, 2} and pasted.values["denoising_strength"] == 0.5


def test_png_info_route_lists_the_unit_value(tmp_path):
    """/sdapi/v1/png-info gives the `ControlNet N` value as one text, as A1111 parses it."""
    import base64
    import io

    from PIL import Image, PngImagePlugin

    from tests.servers import in_process_api

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", EXTENSION_WRITTEN)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG", pnginfo=info)
    with in_process_api(tmp_path, "--api", "--nowebui") as client:
        assert isinstance(client, TestClient)
        r = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(buffer.getvalue()).decode()})
    assert r.status_code == 200, r.text
    assert r.json()["parameters"]["ControlNet 0"].startswith("Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0")
