"""The buttons under txt2img's output, as a user meets them after one generation: pick a picture,
send it to inpaint, save a copy (with its log.csv row), copy its infotext, open its folder in
the Gallery. (Extras' own Send to img2img is tested in tests/ui/test_output_buttons.py.)"""

from __future__ import annotations

import csv
import io
import time

import numpy as np
from PIL import Image

import pytest

from tests.e2e.test_txt2img_page import set_number

SEED = 770001


@pytest.fixture
def clip_page(browser, server):
    """A page whose context may use the clipboard (the Copy button's Clipboard API path)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(server["url"])
    page.wait_for_selector("#txt2img_prompt textarea", timeout=30000)
    yield page
    context.close()


def editor_shows_a_picture(page, selector: str, timeout: float = 40.0) -> bool:
    """Whether the image editor's canvas shows a colourful picture (the empty editor is white and
    grey): its WebGL canvas cannot be read back, so its screenshot is. It draws late on a CPU."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shot = Image.open(io.BytesIO(page.locator(f"{selector} canvas").first.screenshot())).convert("RGB")
        pixels = np.asarray(shot).astype(int)
        saturated = (pixels.max(axis=2) - pixels.min(axis=2)) > 80
        if saturated.mean() > 0.1:
            return True
        page.wait_for_timeout(500)
    return False


def test_send_to_inpaint_save_copy_and_open_folder(clip_page, server):
    page = clip_page
    page.locator("#model_guide", has_text="a COLOUR SHAPE").wait_for(timeout=15000)
    page.fill("#txt2img_prompt textarea", "a blue star on a yellow background")
    set_number(page, "txt2img_seed", SEED)
    set_number(page, "txt2img_steps", 4)
    set_number(page, "txt2img_batch_size", 2)
    page.click("#txt2img_generate")
    page.locator("#txt2img_html_log", has_text="2 image(s)").wait_for(timeout=60000)
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery .thumbnail-item img, #txt2img_gallery button img').length >= 3",
                           timeout=15000)  # the grid, then the two pictures

    # The user picks the second picture (after the grid and the first): the buttons act on it.
    page.locator("#txt2img_gallery .thumbnail-item, #txt2img_gallery button:has(img)").nth(2).click()
    page.locator("#txt2img_html_info", has_text=f"Seed: {SEED + 1}").wait_for(timeout=10000)

    page.click("#txt2img_send_inpaint")
    page.wait_for_function(f"document.querySelector('#img2img_seed input')?.value == '{SEED + 1}'", timeout=15000)
    assert page.input_value("#img2img_prompt textarea") == "a blue star on a yellow background"
    assert page.input_value("#img2img_steps input[type=number]") == "4"
    page.locator("#img2maskimg").wait_for(state="visible", timeout=10000)  # the Inpaint mode's editor is the one shown
    assert editor_shows_a_picture(page, "#img2maskimg")  # the picture is drawn on the editor's canvas

    # 💾 Save: a copy of the chosen picture in log/images, its row in log.csv, offered as a download.
    page.get_by_role("tab", name="txt2img", exact=True).first.click()
    page.click("#txt2img_save")
    page.locator("#txt2img_download_files a, #txt2img_download_files .file-preview", has_text=f"{SEED + 1}").first.wait_for(timeout=15000)
    folder = server["data"] / "log" / "images"
    copies = list(folder.glob(f"*-{SEED + 1}.png"))
    assert len(copies) == 1
    with open(folder / "log.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:8] == ["prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename"]
    assert ["a blue star on a yellow background", str(SEED + 1), "64", "64"] == rows[-1][:4] and rows[-1][7] == copies[0].name

    # 📋 Copy infotext: the shown infotext on the clipboard, and a message saying so.
    page.click("#txt2img_copy_infotext")
    page.get_by_text("Copied the generation parameters.").first.wait_for(timeout=10000)
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("a blue star on a yellow background\n") and f"Seed: {SEED + 1}," in copied

    # 📂: the Gallery on the picture's folder and date, the picture picked.
    page.click("#txt2img_open_folder")
    page.locator("#gallery_selected_info", has_text=f"Seed: {SEED + 1}").wait_for(timeout=15000)
    assert page.input_value("#gallery_folder input") == "txt2img-images"
    page.locator("#gallery_selected_image img").first.wait_for(timeout=10000)
    page.screenshot(path=str(server["data"] / "output-open-folder.png"), full_page=True)
