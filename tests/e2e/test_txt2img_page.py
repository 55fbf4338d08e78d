"""A user's first session: open the page, generate, find the file with its parameters."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from modules.outputs.infotext import parse_infotext

INFOTEXT_LINE = re.compile(
    r"^Steps: 20, Sampler: DPM\+\+ 2M, Schedule type: Karras, CFG scale: 7, Seed: (\d+), Size: 64x64, "
    r"Model hash: [0-9a-f]{10}, Model: tiny-test-model-random, Version: v\d+\.\d+\.\d+$"
)


def set_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def saved_images(data: Path) -> list[Path]:
    return sorted((data / "outputs" / "txt2img-images").glob("*/*.png"))


def test_page_generates_and_saves_with_a1111_infotext(page, server):
    page.locator("#model_notice", has_text="Tiny test model").wait_for(timeout=15000)
    assert page.input_value("#setting_sd_model_checkpoint input").startswith("tiny-test-model-random.safetensors [")
    before = set(saved_images(server["data"]))
    page.fill("#txt2img_prompt textarea", "a red circle, on blue")
    page.fill("#txt2img_neg_prompt textarea", "blurry")
    set_number(page, "txt2img_width", 64)
    set_number(page, "txt2img_height", 64)
    set_number(page, "txt2img_batch_size", 2)
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_gallery img", timeout=60000)
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery img').length >= 3", timeout=30000)  # grid + 2 images

    shown = page.inner_text("#txt2img_html_info")
    assert shown.startswith("a red circle, on blue\nNegative prompt: blurry\nSteps: 20")

    new = sorted(set(saved_images(server["data"])) - before)
    assert len(new) == 2
    texts = [Image.open(p).info["parameters"] for p in new]
    lines = texts[0].split("\n")
    assert lines[0] == "a red circle, on blue" and lines[1] == "Negative prompt: blurry"
    seeds = [int(INFOTEXT_LINE.match(t.split("\n")[2]).group(1)) for t in texts]
    assert seeds[1] == seeds[0] + 1
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
    page.wait_for_function("document.querySelector('#setting_sd_model_checkpoint input').value.startsWith('tiny-test-model-random')", timeout=10000)
    # Still serving, still generating with the model it had.
    before = len(saved_images(server["data"]))
    set_number(page, "txt2img_width", 64)
    set_number(page, "txt2img_height", 64)
    page.fill("#txt2img_prompt textarea", "still alive")
    page.press("#txt2img_prompt textarea", "Control+Enter")  # A1111's shortcut
    page.wait_for_function(f"document.querySelector('#txt2img_html_info').innerText.startsWith('still alive')", timeout=60000)
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
    assert f"{made} image(s)" in page.inner_text("#txt2img_html_log")
