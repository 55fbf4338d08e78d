"""The shipped upscaler model in the page, as a new user meets it: Hires. fix's upscaler menu
offers it and the saved picture records it, Extras enlarges with it, and Restore faces is a
checkbox beside Hires. fix."""

from __future__ import annotations

import time

from PIL import Image

from tests.e2e.test_txt2img_page import saved_images, set_number

MODEL = "4x-demo-shapes-compact"


def pick(page, menu: str, option: str) -> None:
    page.locator(f"#{menu} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_hires_fix_with_the_shipped_upscaler_model(page, server):
    data = server["data"]
    page.locator("#model_guide", has_text="a COLOUR SHAPE").wait_for(timeout=15000)
    assert page.locator("#txt2img_restore_faces").is_visible()
    page.fill("#txt2img_prompt textarea", "a red circle on a blue background")
    set_number(page, "txt2img_seed", 7)
    set_number(page, "txt2img_steps", 8)
    page.locator("#txt2img_hr").click()  # open the accordion
    page.locator("#txt2img_enable_hr input").check()
    pick(page, "txt2img_hr_upscaler", MODEL)
    before = set(saved_images(data))
    page.click("#txt2img_generate")
    page.locator("#txt2img_html_info", has_text=f"Hires upscaler: {MODEL}").wait_for(timeout=120000)
    deadline = time.monotonic() + 20
    while not set(saved_images(data)) - before and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    [saved] = sorted(set(saved_images(data)) - before)
    page.screenshot(path=str(data / "hires-upscaler-done.png"), full_page=True)
    with Image.open(saved) as picture:
        assert picture.size == (128, 128)  # hires scale 2 of 64 px
        assert f"Hires upscaler: {MODEL}" in picture.info["parameters"]


def test_extras_upscales_with_the_shipped_model(page, server, tmp_path):
    source = tmp_path / "small.png"
    Image.new("RGB", (40, 32), (30, 60, 200)).save(source)
    page.get_by_role("tab", name="Extras").click()
    page.set_input_files("#extras_image input[type=file]", str(source))
    page.locator("#extras_image img").first.wait_for(timeout=15000)
    box = page.locator("#extras_upscaling_resize input[type=number]")
    box.fill("4")
    box.press("Enter")
    pick(page, "extras_upscaler_1", MODEL)
    page.click("#extras_generate")
    page.locator("#extras_html_info", has_text=f"Postprocess upscaler: {MODEL}").wait_for(timeout=60000)
    saved = sorted((server["data"] / "outputs" / "extras-images").glob("*.png"))[-1]
    with Image.open(saved) as result:
        assert result.size == (160, 128)
        assert f"Postprocess upscaler: {MODEL}" in result.info["postprocessing"]
