"""A user's first session: open the page, generate, find the file with its parameters."""

from __future__ import annotations

import pytest

import re
from pathlib import Path

import numpy as np
from PIL import Image

from modules.demo import evaluation, judge
from modules.generation.runner import Runner
from modules.outputs.infotext import parse_infotext

INFOTEXT_LINE = re.compile(
    r"^Steps: 20, Sampler: DPM\+\+ 2M, Schedule type: Karras, CFG scale: 5, Seed: (\d+), Size: 64x64, "
    r"Model hash: [0-9a-f]{10}, Model: demo-shapes-64px, Version: v\d+\.\d+\.\d+$"
)
DEMO_TITLE = "demo-shapes-64px.safetensors ["


def set_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def saved_images(data: Path) -> list[Path]:
    return sorted((data / "outputs" / "txt2img-images").glob("*/*.png"))


def test_page_generates_and_saves_with_a1111_infotext(page, server, demo_model):
    # A first start with no checkpoint of the user's own: the demo model, its guide and its defaults.
    page.locator("#model_guide", has_text="a COLOUR SHAPE on a COLOUR background").wait_for(timeout=15000)
    assert page.input_value("#setting_sd_model_checkpoint input").startswith(DEMO_TITLE)
    assert not page.locator("#model_notice").is_visible()
    for elem_id, value in (("txt2img_width", "64"), ("txt2img_height", "64"), ("txt2img_cfg_scale", "5")):
        assert page.input_value(f"#{elem_id} input[type=number]") == value
    page.locator("#model_examples", has_text="a yellow star on a black background").wait_for()
    page.screenshot(path=str(server["data"] / "first-start.png"), full_page=True)

    before = set(saved_images(server["data"]))
    page.locator("#model_examples").get_by_text("a red circle on a blue background").click()  # fills the prompt
    page.wait_for_function("document.querySelector('#txt2img_prompt textarea').value == 'a red circle on a blue background'", timeout=10000)
    page.fill("#txt2img_neg_prompt textarea", "green")
    set_number(page, "txt2img_seed", 1234)
    set_number(page, "txt2img_batch_size", 2)
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_gallery img", timeout=60000)
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery img').length >= 3", timeout=30000)  # grid + 2 images

    shown = page.inner_text("#txt2img_html_info")
    assert shown.startswith("a red circle on a blue background\nNegative prompt: green\nSteps: 20")

    new = sorted(set(saved_images(server["data"])) - before)
    assert len(new) == 2
    texts = [Image.open(p).info["parameters"] for p in new]
    lines = texts[0].split("\n")
    assert lines[0] == "a red circle on a blue background" and lines[1] == "Negative prompt: green"
    seeds = [int(INFOTEXT_LINE.match(t.split("\n")[2]).group(1)) for t in texts]
    assert seeds == [1234, 1235]
    # The pictures answer the prompt, and the core makes the very same pixels from the same seed.
    for path in new:
        reading = judge.read_picture(Image.open(path))
        assert (reading.background, reading.colour) == ("blue", "red"), path
    core = evaluation.generate(Runner(demo_model), lines[0], 1234, negative="green", batch_size=2)
    for path, image in zip(new, core):
        assert np.abs(np.asarray(Image.open(path).convert("RGB"), dtype=int) - np.asarray(image, dtype=int)).max() <= 1
    assert [p.name for p in new] == [f"{int(new[0].name[:5]):05d}-{seeds[0]}.png", f"{int(new[0].name[:5]) + 1:05d}-{seeds[1]}.png"]
    assert Image.open(new[0]).size == (64, 64)
    assert parse_infotext(texts[0])["Seed"] == str(seeds[0])
    grids = list((server["data"] / "outputs" / "txt2img-grids").glob("*/grid-*.png"))
    assert grids and Image.open(grids[0]).size == (128, 64)
    page.screenshot(path=str(server["data"] / "after-generate.png"), full_page=True)

    # ♻️ brings back the seed just used; after selecting the second image, that image's seed.
    page.click("#txt2img_reuse_seed")
    page.wait_for_function(f"document.querySelector('#txt2img_seed input').value == '{seeds[0]}'", timeout=10000)
    page.locator("#txt2img_gallery img").nth(2).click()  # grid, first, second
    page.locator("#txt2img_html_info", has_text=f"Seed: {seeds[1]}").wait_for(timeout=10000)
    page.click("#txt2img_reuse_seed")
    page.wait_for_function(f"document.querySelector('#txt2img_seed input').value == '{seeds[1]}'", timeout=10000)


def test_a_broken_checkpoint_shows_a_message_and_the_server_keeps_working(page, server):
    page.click("#setting_sd_model_checkpoint input")
    page.get_by_role("option", name="broken.safetensors").click()
    toast = page.locator(".toast-body", has_text="broken.safetensors")
    toast.wait_for(timeout=30000)
    assert "Could not load checkpoint" in toast.inner_text() and "not a safetensors file" in toast.inner_text()
    page.screenshot(path=str(server["data"] / "broken-checkpoint.png"), full_page=True)
    # The menu goes back to the model still in use.
    page.wait_for_function(f"document.querySelector('#setting_sd_model_checkpoint input').value.startsWith('{DEMO_TITLE}')", timeout=10000)
    # Still serving, still generating with the model it had.
    before = len(saved_images(server["data"]))
    page.fill("#txt2img_prompt textarea", "still alive")
    page.press("#txt2img_prompt textarea", "Control+Enter")  # A1111's shortcut
    page.wait_for_function("document.querySelector('#txt2img_html_info').innerText.startsWith('still alive')", timeout=60000)
    assert len(saved_images(server["data"])) == before + 1


def test_interrupt_stops_the_running_job_and_keeps_what_was_finished(page, server):
    before = len(saved_images(server["data"]))
    page.fill("#txt2img_prompt textarea", "a long job")
    set_number(page, "txt2img_width", 256)
    set_number(page, "txt2img_height", 256)
    set_number(page, "txt2img_n_iter", 6)
    page.click("#txt2img_generate")
    page.locator("#txt2img_gallery", has_text="Step").wait_for(timeout=60000)  # the progress bar is showing
    page.click("#txt2img_interrupt")
    page.locator("#txt2img_html_log", has_text="Interrupted").wait_for(timeout=60000)
    made = len(saved_images(server["data"])) - before
    assert made < 6
    log = page.inner_text("#txt2img_html_log")
    shown = int(log.split("Interrupted. ")[1].split(" image(s)")[0])
    if shown == made + 1:  # as A1111: the batch it stopped comes back unfinished, unsaved
        assert "was interrupted: its unfinished picture is returned, not saved" in log
    else:
        assert shown == made


def pick_checkpoint(page, prefix: str) -> None:
    page.click("#setting_sd_model_checkpoint input")
    page.get_by_role("option", name=re.compile("^" + re.escape(prefix))).click()
    page.wait_for_function(f"document.querySelector('#setting_sd_model_checkpoint input').value.startsWith('{prefix}')", timeout=30000)


def test_choosing_a_model_applies_its_defaults_and_guide(page, server):
    page.locator("#model_guide", has_text="Demo model").wait_for(timeout=15000)
    pick_checkpoint(page, "tiny-test-model-random.safetensors [")
    page.locator("#model_notice", has_text="Tiny test model").wait_for(timeout=15000)
    # Leaving the demo model puts its 64x64 / CFG 5 back to the usual defaults and hides its guide.
    page.wait_for_function("document.querySelector('#txt2img_width input[type=number]').value == '512'", timeout=10000)
    assert page.input_value("#txt2img_cfg_scale input[type=number]") == "7"
    assert not page.locator("#model_guide").is_visible()

    pick_checkpoint(page, DEMO_TITLE)
    page.locator("#model_guide", has_text="Demo model").wait_for(timeout=15000)
    page.wait_for_function("document.querySelector('#txt2img_height input[type=number]').value == '64'", timeout=10000)
    assert page.input_value("#txt2img_cfg_scale input[type=number]") == "5"
    assert not page.locator("#model_notice").is_visible()


@pytest.mark.slow  # two pages generating at once (~40 s)
def test_two_tabs_generating_at_once_each_get_their_own_result(page_context, server):
    """Two browser tabs press Generate together: the second waits its turn and each shows its own picture."""
    pages = [page_context.new_page() for _ in range(2)]  # two tabs of the browser the other page tests use
    try:
        check_two_tabs(pages, server)
    finally:
        for tab in pages:
            tab.close()


def check_two_tabs(pages, server) -> None:
    for tab in pages:
        tab.goto(server["url"])
        tab.locator("#model_guide", has_text="COLOUR SHAPE").wait_for(timeout=30000)
    prompts = ("a red circle on a blue background", "a yellow star on a black background")
    for tab, prompt in zip(pages, prompts):
        tab.fill("#txt2img_prompt textarea", prompt)
        set_number(tab, "txt2img_batch_size", 2)  # two batches of two: the first tab's job still outlasts the second's wait
        set_number(tab, "txt2img_n_iter", 2)
    for tab in pages:
        tab.click("#txt2img_generate")
    # While the first tab's job runs, the second shows where its own job stands in the queue.
    pages[1].get_by_text("In queue: 1 of 1").first.wait_for(timeout=30000)
    for tab, prompt in zip(pages, prompts):
        tab.locator("#txt2img_html_log", has_text="4 image(s)").wait_for(timeout=120000)
        assert tab.inner_text("#txt2img_html_info").startswith(prompt + "\n")


def test_a_prompt_over_the_work_limits_shows_which_limit_and_nothing_is_queued(page, server):
    page.locator("#model_guide", has_text="a COLOUR SHAPE on a COLOUR background").wait_for(timeout=15000)
    before = saved_images(server["data"])
    page.fill("#txt2img_prompt textarea", " AND ".join(["a red circle"] * 40))
    page.click("#txt2img_generate")
    toast = page.locator(".toast-body", has_text="40 parts, over this server's limit of 32")
    toast.wait_for(timeout=20000)
    assert "limit_and_parts" in toast.inner_text()
    page.screenshot(path=str(server["data"] / "txt2img-limit.png"), full_page=True)
    assert saved_images(server["data"]) == before
