"""ui-config.json: control defaults keyed as A1111 keys them, what the browser is served after
applying them, and how a hand-edited file with bad values or broken JSON is handled."""

from __future__ import annotations

import json

import gradio as gr
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modules.ui.ui_config import UiConfig, describe

SAMPLERS = ["Euler a", "Euler", "DPM++ 2M"]


def build(extra: bool = False) -> gr.Blocks:
    """A small page shaped like ours: a quicksetting, then txt2img and img2img tabs."""
    with gr.Blocks() as page:
        gr.Dropdown(["model.safetensors"], value="model.safetensors", label="Stable Diffusion checkpoint", elem_id="setting_sd_model_checkpoint")
        gr.Checkbox(label="Dark corner", value=False, elem_id="dark_corner")
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("txt2img", id="txt2img"):
                gr.Textbox(label="Prompt", elem_id="txt2img_prompt")
                gr.HTML("<p>counter</p>", elem_id="txt2img_token_counter")
                gr.Button("Generate")
                with gr.Row():
                    gr.Dropdown(SAMPLERS, value="DPM++ 2M", label="Sampling method", elem_id="txt2img_sampling")
                    gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id="txt2img_steps")
                with gr.Accordion("Hires. fix", open=False):
                    gr.Checkbox(label="Hires. fix", value=False, elem_id="txt2img_enable_hr")
                    gr.Slider(0, 150, value=0, step=1, label="Sampling steps", elem_id="txt2img_hires_steps")
                gr.Dropdown(["cinematic", "anime"], value=[], multiselect=True, label="Styles", elem_id="txt2img_styles")
                gr.Number(label="Seed", value=-1, precision=0, elem_id="txt2img_seed")
                if extra:
                    gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id="txt2img_batch_size")
            with gr.Tab("img2img", id="img2img"):
                with gr.Tabs():
                    with gr.Tab("Inpaint", elem_id="img2img_inpaint_tab"):
                        gr.Radio(["fill", "original"], value="original", type="index", label="Masked content")
                gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id="img2img_steps")
                gr.Slider(0.0, 1.0, value=0.75, step=0.01, label="Denoising strength", elem_id="img2img_denoising_strength")
            with gr.Tab("Settings", id="settings"):
                gr.Checkbox(label="Always save all generated images", value=True, elem_id="settings_samples_save")
                gr.Textbox(label="Notes").do_not_save_to_config = True
    return page


def served(page: gr.Blocks) -> dict[str, dict]:
    """What the browser gets: the mounted app's /config, component props by elem_id."""
    client = TestClient(gr.mount_gradio_app(FastAPI(), page, path="/"))
    response = client.get("/config")
    assert response.status_code == 200
    return {c["props"]["elem_id"]: c["props"] for c in response.json()["components"] if c.get("props", {}).get("elem_id")}


def edit(path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=4))


@pytest.fixture
def path(tmp_path):
    return tmp_path / "ui-config.json"


def test_first_start_writes_every_control_with_a1111_keys(path):
    assert UiConfig(path).apply(build()) == []
    data = json.loads(path.read_text())
    assert data["txt2img/Sampling steps/value"] == 20
    assert data["txt2img/Sampling steps/minimum"] == 1
    assert data["txt2img/Sampling steps/maximum"] == 150
    assert data["txt2img/Sampling steps/step"] == 1
    assert data["txt2img/Sampling steps/visible"] is True
    assert data["img2img/Sampling steps/value"] == 20
    assert data["img2img/Denoising strength/value"] == 0.75
    assert data["txt2img/Sampling method/value"] == "DPM++ 2M"
    assert data["txt2img/Prompt/value"] == ""
    assert data["txt2img/Hires. fix/value"] is False
    assert data["txt2img/Styles/value"] == []
    assert data["txt2img/Seed/value"] == -1
    # a nested tab belongs to its top-level tab; outside the tabs is "webui"
    assert data["img2img/Masked content/value"] == "original"
    assert data["webui/Dark corner/value"] is False
    # a repeated label in one tab gets its elem_id, so the two sliders never share a key
    assert data["txt2img/Sampling steps@txt2img_hires_steps/value"] == 0
    # no fields for buttons, HTML or sliders-only fields on other kinds; settings belong to config.json
    assert "txt2img/Prompt/minimum" not in data and "txt2img/Generate/value" not in data
    assert not any(k.startswith(("webui/Stable Diffusion checkpoint", "settings/")) for k in data)
    assert path.read_text().startswith('{\n    "')  # indent 4, as A1111 writes it
    assert describe(build()) == data


def test_hand_edited_values_survive_a_restart_and_reach_the_served_page(path):
    UiConfig(path).apply(build())
    edit(path, **{
        "txt2img/Sampling steps/value": 30, "txt2img/Sampling steps/maximum": 200, "txt2img/Sampling method/value": "Euler a",
        "txt2img/Prompt/value": "a lighthouse", "txt2img/Hires. fix/value": True, "txt2img/Styles/value": ["anime"],
        "txt2img/Seed/value": 1234, "img2img/Denoising strength/visible": False, "img2img/Masked content/value": "fill",
        "img2img/Sampling steps/value": 42,
    })
    before = path.read_text()
    page = build()  # a restart: a fresh page, the file read again
    assert UiConfig(path).apply(page) == []
    props = served(page)
    assert props["txt2img_steps"]["value"] == 30 and props["txt2img_steps"]["maximum"] == 200
    assert props["txt2img_sampling"]["value"] == "Euler a"
    assert props["txt2img_prompt"]["value"] == "a lighthouse"
    assert props["txt2img_enable_hr"]["value"] is True
    assert props["txt2img_styles"]["value"] == ["anime"]
    assert props["txt2img_seed"]["value"] == 1234
    assert props["img2img_denoising_strength"]["visible"] is False
    assert props["img2img_steps"]["value"] == 42
    assert props["txt2img_hires_steps"]["value"] == 0  # its own key, untouched
    assert path.read_text() == before  # nothing new: not rewritten
    assert page.config is not None and any(c["props"].get("value") == 30 for c in page.config["components"] if "props" in c)


def test_bad_values_fall_back_to_the_default_with_a_warning_and_the_rest_applies(path, caplog):
    UiConfig(path).apply(build())
    edit(path, **{
        "txt2img/Sampling steps/value": "abc", "img2img/Sampling steps/value": 999, "txt2img/Sampling method/value": "Heun",
        "txt2img/Hires. fix/value": "yes", "txt2img/Styles/value": ["anime", "noir"], "txt2img/Seed/value": 1.5,
        "img2img/Masked content/value": "latent noise", "txt2img/Prompt/visible": "no",
        "txt2img/Prompt/value": "still applied", "img2img/Denoising strength/value": 0.5,
    })
    page = build()
    with caplog.at_level("WARNING", logger="modules.ui.ui_config"):
        warnings = UiConfig(path).apply(page)
    assert len(warnings) == 8, warnings
    text = "\n".join(warnings)
    assert "'txt2img/Sampling steps/value' = \"abc\" is not used (not a number); kept the default 20." in text
    assert "'img2img/Sampling steps/value' = 999 is not used (above the maximum 150); kept the default 20." in text
    assert "'txt2img/Sampling method/value' = \"Heun\"" in text and "kept the default \"DPM++ 2M\"" in text
    assert "'txt2img/Hires. fix/value' = \"yes\" is not used (not true or false); kept the default false." in text
    assert "'txt2img/Styles/value'" in text and "'noir'" in text
    assert "'txt2img/Seed/value' = 1.5 is not used (not a whole number); kept the default -1." in text
    assert "'img2img/Masked content/value'" in text and "'txt2img/Prompt/visible'" in text
    assert all(w in caplog.text for w in warnings)
    props = served(page)
    assert props["txt2img_steps"]["value"] == 20 and props["img2img_steps"]["value"] == 20
    assert props["txt2img_sampling"]["value"] == "DPM++ 2M" and props["txt2img_enable_hr"]["value"] is False
    assert props["txt2img_styles"]["value"] == [] and props["txt2img_seed"]["value"] == -1
    assert props["txt2img_prompt"]["value"] == "still applied" and props["txt2img_prompt"]["visible"] is True
    assert props["img2img_denoising_strength"]["value"] == 0.5
    # the bad values stay for the user to fix, and are warned about again next start
    assert json.loads(path.read_text())["txt2img/Sampling steps/value"] == "abc"
    assert len(UiConfig(path).apply(build())) == 8


def test_a_slider_range_that_cannot_hold_its_value_is_refused(path):
    UiConfig(path).apply(build())
    edit(path, **{"txt2img/Sampling steps/minimum": 50, "txt2img/Sampling steps/maximum": 10, "img2img/Sampling steps/maximum": 10,
                  "img2img/Denoising strength/step": 0})
    page = build()
    warnings = UiConfig(path).apply(page)
    text = "\n".join(warnings)
    assert "the minimum 50 is not below the maximum 10" in text and "kept the default 1..150" in text
    assert "the value 20 would lie outside it" in text
    assert "'img2img/Denoising strength/step' = 0 is not used (not a positive number); kept the default 0.01." in text
    props = served(page)
    assert (props["txt2img_steps"]["minimum"], props["txt2img_steps"]["maximum"], props["txt2img_steps"]["value"]) == (1, 150, 20)
    assert (props["img2img_steps"]["maximum"], props["img2img_steps"]["value"]) == (150, 20)
    assert props["img2img_denoising_strength"]["step"] == 0.01


def test_a_new_range_and_a_value_inside_it_apply_together(path):
    UiConfig(path).apply(build())
    edit(path, **{"img2img/Sampling steps/minimum": 30, "img2img/Sampling steps/maximum": 60, "img2img/Sampling steps/value": 40})
    page = build()
    assert UiConfig(path).apply(page) == []
    steps = served(page)["img2img_steps"]
    assert (steps["minimum"], steps["maximum"], steps["value"]) == (30, 60, 40)


@pytest.mark.parametrize("broken", ["{not json", "[1, 2]", "\xff\xfe"])
def test_a_corrupt_file_is_backed_up_and_the_defaults_are_used(path, broken):
    path.write_bytes(broken.encode("latin-1"))
    page = build()
    warnings = UiConfig(path).apply(page)
    assert len(warnings) == 1 and "not a JSON object" in warnings[0] and "ui-config.json.bad" in warnings[0]
    assert path.with_name("ui-config.json.bad").read_bytes() == broken.encode("latin-1")
    assert json.loads(path.read_text())["txt2img/Sampling steps/value"] == 20  # rewritten from the defaults
    assert served(page)["txt2img_steps"]["value"] == 20


def test_a_new_control_is_added_and_hand_edits_are_kept(path):
    UiConfig(path).apply(build())
    edit(path, **{"txt2img/Sampling steps/value": 33, "txt2img/Sampling method/value": "Heun", "my/own/key": 1})
    UiConfig(path).apply(build(extra=True))
    data = json.loads(path.read_text())
    assert data["txt2img/Batch size/value"] == 1 and data["txt2img/Batch size/maximum"] == 8
    assert data["txt2img/Sampling steps/value"] == 33
    assert data["txt2img/Sampling method/value"] == "Heun"  # bad, but the user's to fix
    assert data["my/own/key"] == 1
    assert list(data)[-1].startswith("txt2img/Batch size/")  # new keys go at the end


def test_a_missing_folder_is_created(tmp_path):
    path = tmp_path / "data" / "ui-config.json"
    assert UiConfig(path).apply(build()) == []
    assert json.loads(path.read_text())["img2img/Sampling steps/value"] == 20
    assert [p.name for p in path.parent.iterdir()] == ["ui-config.json"]  # no temporary file left


def test_tab_of_names_a_prefix_of_its_own(path):
    def tab_of(component):
        return "customscript/hires.py" if component.elem_id == "txt2img_hires_steps" else None

    UiConfig(path).apply(build(), tab_of=tab_of)
    data = json.loads(path.read_text())
    assert data["customscript/hires.py/Sampling steps/value"] == 0
    assert data["txt2img/Sampling steps/value"] == 20
    assert not any("@txt2img_hires_steps" in k for k in data)
