"""The extension API in the page: always-on scripts' controls on txt2img and img2img (their values
reach the job), an extension's tab, JavaScript and CSS, its setting in the Settings tab, pasting
an infotext through on_infotext_pasted into a script's infotext_fields, and a failing script named
in the job's log. The test extensions (tests/extensions/data: hello-ext, raising-ext) are
installed in a temp data folder; one server (shared with two other files)."""

from __future__ import annotations

import json
import time

import gradio as gr
import pytest
from PIL import Image

from modules.extensions.callbacks import Callbacks
from modules.extensions.job_scripts import AlwaysOnArgs
from modules.outputs.infotext import parse_infotext
from modules.outputs.paste import params_from_infotext
from modules.ui.alwayson import build_alwayson
from tests.e2e.test_extensions_tab import screenshot


class Words:
    extension = "good-ext"

    def title(self):
        return "Words"

    def ui(self, is_img2img):
        with gr.Accordion("Words", open=False):
            on = gr.Checkbox(False, label="On")
            text = gr.Textbox("", label="Text")
        self.infotext_fields = [(on, lambda fields: "Words" in fields), (text, "Words"), (gr.Textbox(render=False), "Elsewhere")]
        return [on, text]


class Broken:
    extension = "bad-ext"

    def title(self):
        return "Broken"

    def ui(self, is_img2img):
        gr.Textbox(label="made before the error", elem_id="broken_half")
        raise RuntimeError("no controls today")


class Loaded:
    """What build_alwayson reads of LoadedExtensions."""

    def __init__(self, *scripts):
        self.scripts, self.callbacks = list(scripts), Callbacks()

    def alwayson(self, kind):
        return self.scripts


def test_alwayson_controls_render_in_place_and_a_failing_ui_is_hidden_with_a_note():
    loaded = Loaded(Broken(), Words())
    with gr.Blocks() as page:
        panel = build_alwayson("txt2img", loaded)
    config = page.get_config_file()
    by_elem = {c["props"].get("elem_id"): c for c in config["components"]}
    assert panel.titles == ["Words"] and [type(c).__name__ for c in panel.inputs] == ["Checkbox", "Textbox"]
    assert "no controls today" in by_elem["txt2img_alwayson_errors"]["props"]["value"]
    assert "bad-ext" in loaded.callbacks.failures and "RuntimeError" in loaded.callbacks.failures["bad-ext"][0]
    half = next(c for c in config["components"] if c["props"].get("elem_id") == "broken_half")
    parents = _parents(config["layout"], half["id"])
    hidden = [p for p in parents if by_id(config, p)["props"].get("visible") is False]
    assert hidden, "the failing script's half-made controls stay visible"
    assert panel.args_from([True, "hi"]) == (AlwaysOnArgs("Words", (True, "hi")),)
    with pytest.raises(ValueError, match="take 2 values"):
        panel.args_from([True])
    assert panel.keys == {"Words"}  # the field for a control ui() did not return is dropped


def test_paste_runs_on_infotext_pasted_then_fills_infotext_fields():
    loaded = Loaded(Words())
    with gr.Blocks():
        panel = build_alwayson("txt2img", loaded)

    def migrate(text, fields):
        fields["Words"] = fields.pop("Old words")

    text = "a cat\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Old words: red circle, Mystery: 1"
    pasted = params_from_infotext(text, on_pasted=migrate, known=panel.keys)
    assert pasted.fields["Words"] == "red circle" and pasted.values["steps"] == 3
    assert "Words" not in pasted.skipped and "Mystery" in pasted.skipped
    assert [u.get("value") for u in panel.updates(pasted.fields)] == [True, "red circle"]
    plain = params_from_infotext("a cat\nSteps: 3, Seed: 1, Size: 64x64", known=panel.keys)
    assert [u.get("value") for u in panel.updates(plain.fields)] == [False, None]  # the text box is left as it is


def test_a_scripts_argument_list_read_while_the_page_is_built_adds_nothing_to_the_page():
    """The Script menu reads a selectable script's ui() during the page build: its throwaway
    components must not show up in the page (a gr.Blocks made inside another renders into it)."""
    from modules.extensions.hook_scripts import ui_args

    with gr.Blocks() as page:
        gr.Markdown("before")
        args = ui_args(Words(), False)
        gr.Markdown("after")
    assert [a.label for a in args] == ["On", "Text"]
    assert sorted(type(c).__name__ for c in page.blocks.values()) == ["Markdown", "Markdown"]


def test_extension_tabs_render_and_a_bad_one_is_left_out():
    from modules.ui.extension_tabs import render_extension_tabs

    with gr.Blocks() as good:
        gr.Textbox(label="Name", elem_id="good_name")
    with gr.Blocks() as clash:
        gr.Textbox(label="Clash", elem_id="clash_name")
    loaded = Loaded()
    with gr.Blocks() as page:
        with gr.Tabs():
            shown = render_extension_tabs(loaded, [("a", good, "Good", "good_tab"), ("b", "not blocks", "Bad", "bad_tab"),
                                                   ("c", clash, "Clash", "settings"), ("d", good, "Again", "again_tab")])
    assert shown == ["good_tab"]
    tabs = [c["props"] for c in page.get_config_file()["components"] if c["type"] == "tabitem"]
    assert [(t["label"], t.get("visible")) for t in tabs] == [("Good", True), ("Again", False)]  # rendering a Blocks twice fails: hidden
    assert "d" in loaded.callbacks.failures
    assert not any(c["props"].get("elem_id") == "clash_name" for c in page.get_config_file()["components"])


# ---------------------------------------------------------------------------------------------- in Chromium

@pytest.fixture(scope="module")
def server(second_server):
    """The server with hello-ext and raising-ext installed, shared with the Models tab and theme
    tests (tests/e2e/conftest.py)."""
    return second_server


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.goto(server["url"])
    pg.wait_for_selector("#txt2img_prompt textarea", timeout=60000)
    yield pg
    context.close()


def set_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_hello_extension_in_the_page(page, server):
    data = server["data"]
    # Its JavaScript ran in the head; its tab is there and works; its CSS styles the tab.
    assert page.evaluate("document.documentElement.dataset.helloExtension") == "loaded"
    page.wait_for_function("document.documentElement.dataset.helloUi === 'found'", timeout=10000)  # A1111's onUiLoaded, gradioApp()
    page.get_by_role("tab", name="Hello", exact=True).click()
    page.wait_for_function("document.documentElement.dataset.helloTab === 'Hello'", timeout=10000)  # onUiTabChange, get_uiCurrentTab()
    page.fill("#hello_ext_name textarea", "Ada")
    page.click("#hello_ext_greet")
    page.wait_for_function("document.querySelector('#hello_ext_greeting textarea').value === 'Hello, Ada!'", timeout=30000)
    assert page.evaluate("getComputedStyle(document.querySelector('#hello_ext_banner')).color") == "rgb(12, 34, 56)"

    # The always-on script's controls on txt2img, in its accordion; its words reach the job.
    page.get_by_role("tab", name="txt2img", exact=True).click()
    page.locator("#model_guide", has_text="a COLOUR SHAPE on a COLOUR background").wait_for(timeout=60000)  # the demo model's defaults
    assert page.locator("label", has_text="Horizontal").filter(visible=True).count() == 0  # Flip's controls wait for Script: Flip
    page.click("#hello_words_txt2img button")  # open the accordion
    page.check("#hello_enabled_txt2img input")
    page.fill("#hello_text_txt2img textarea", "green star")
    page.fill("#txt2img_prompt textarea", "a blue square")
    set_number(page, "txt2img_steps", 2)
    before = set((data / "outputs" / "txt2img-images").glob("*/*.png"))
    page.click("#txt2img_generate")
    page.locator("#txt2img_html_info", has_text="Hello words: green star").wait_for(timeout=120000)
    shown = page.inner_text("#txt2img_html_info")
    assert shown.startswith("a blue square, green star")
    log = page.inner_text("#txt2img_html_log")  # the failing extension is named, and the picture still made
    assert "1 image(s)" in log and "Extension 'raising-ext' failed in Raising.process" in log and "switched off for this job" in log
    made = sorted(set((data / "outputs" / "txt2img-images").glob("*/*.png")) - before)
    assert len(made) == 1
    saved = parse_infotext(Image.open(made[0]).info["parameters"])
    assert saved["Prompt"] == "a blue square, green star" and saved["Hello words"] == "green star"
    screenshot(page, "page_hello.png")

    # A run of the Script menu's Flip (the extension's selectable script): its jobs carry the always-on scripts too.
    page.click("#txt2img_script_list input")
    page.locator("#txt2img_script_list").get_by_role("option", name="Flip", exact=True).click()
    page.click("#txt2img_generate")
    page.locator("#txt2img_html_log", has_text="Flip:").wait_for(timeout=120000)
    assert page.inner_text("#txt2img_html_info").startswith("a blue square, green star")
    page.click("#txt2img_script_list input")
    page.locator("#txt2img_script_list").get_by_role("option", name="None", exact=True).click()

    # The same script on img2img, with its img2img controls.
    picture = server["data"] / "init.png"
    Image.new("RGB", (64, 64), (20, 40, 200)).save(picture)
    page.get_by_role("tab", name="img2img", exact=True).click()
    page.locator("#img2img_image input[type=file]").set_input_files(str(picture))
    page.locator("#img2img_image img").wait_for(timeout=15000)
    page.fill("#img2img_prompt textarea", "a red circle")
    set_number(page, "img2img_steps", 2)
    page.click("#hello_words_img2img button")
    page.check("#hello_enabled_img2img input")
    page.fill("#hello_text_img2img textarea", "on grass")
    page.click("#img2img_generate")
    page.locator("#img2img_html_info", has_text="Hello words: on grass").wait_for(timeout=120000)
    assert page.inner_text("#img2img_html_info").startswith("a red circle, on grass")
    page.get_by_role("tab", name="txt2img", exact=True).click()

    # ↙ with an infotext in the extension's old spelling: on_infotext_pasted renames the key, infotext_fields fill the controls.
    page.uncheck("#hello_enabled_txt2img input")
    page.fill("#hello_text_txt2img textarea", "")
    page.fill("#txt2img_prompt textarea", "a cat\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64, Hello: red circle")
    page.click("#txt2img_paste")
    page.wait_for_function("document.querySelector('#hello_text_txt2img textarea').value === 'red circle'", timeout=30000)
    assert page.is_checked("#hello_enabled_txt2img input")

    # Its setting in the Settings tab, under its own section, saved to config.json.
    page.get_by_role("tab", name="Settings", exact=True).click()
    section = page.get_by_role("tab", name="Hello extension", exact=True)
    if not section.is_visible():  # the section row is full: the rest are under "More tabs"
        page.click("#settings_sections button[aria-label='More tabs']")
        section = page.locator("#settings_sections .overflow-dropdown button", has_text="Hello extension")
    section.click()
    box = page.locator("#settings_hello_words_default textarea")
    assert box.input_value() == "red circle"
    box.fill("yellow moon")
    page.click("#settings_submit")
    page.locator("#settings_result", has_text="hello_words_default").wait_for(timeout=30000)
    deadline = time.monotonic() + 10
    while json.loads((data / "config.json").read_text()).get("hello_words_default") != "yellow moon" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert json.loads((data / "config.json").read_text())["hello_words_default"] == "yellow moon"
    assert page.locator("#settings_disabled_extensions").count() == 0  # the hidden extension settings stay hidden


def by_id(config: dict, block_id: int) -> dict:
    return next((c for c in config["components"] if c["id"] == block_id), {"props": {}})


def _parents(layout: dict, target: int, trail: tuple = ()) -> tuple:
    if layout["id"] == target:
        return trail
    for child in layout.get("children", []):
        found = _parents(child, target, (*trail, layout["id"]))
        if found is not None:
            return found
    return None
