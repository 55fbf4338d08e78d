"""Extras in the page: an image sent from PNG Info is upscaled and saved to outputs/extras-images
with its generation parameters kept and the postprocessing recorded."""

from __future__ import annotations

from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

TEXT = "a red circle\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 99, Size: 64x64, Model: someone-elses, Version: v1.10.1"


def test_send_to_extras_and_upscale_by_two_with_nearest(page, server, tmp_path):
    source = tmp_path / "small.png"
    picture = Image.new("RGB", (64, 48), "white")
    ImageDraw.Draw(picture).rectangle((0, 0, 31, 23), fill=(200, 0, 0))
    meta = PngInfo()
    meta.add_text("parameters", TEXT)
    picture.save(source, pnginfo=meta)

    page.locator("#model_guide", has_text="a COLOUR SHAPE").wait_for(timeout=15000)
    page.get_by_role("tab", name="PNG Info").click()
    page.set_input_files("#pnginfo_image input[type=file]", str(source))
    page.locator("#pnginfo_html_info", has_text="Seed: 99").wait_for(timeout=20000)
    page.click("#pnginfo_send_extras")
    page.locator("#extras_image img").first.wait_for(timeout=15000)

    box = page.locator("#extras_upscaling_resize input[type=number]")
    box.fill("2")
    box.press("Enter")
    upscaler = page.locator("#extras_upscaler_1 input")
    upscaler.click()
    page.get_by_role("option", name="Nearest").click()
    folder = server["data"] / "outputs" / "extras-images"
    before = set(folder.glob("*.png"))  # the session's server: another file's test may have saved extras already
    page.click("#extras_generate")
    page.locator("#extras_gallery img").first.wait_for(timeout=30000)
    page.locator("#extras_html_info", has_text="Postprocess upscaler: Nearest").wait_for(timeout=10000)
    page.screenshot(path=str(server["data"] / "extras-done.png"), full_page=True)

    saved = sorted(set(folder.glob("*.png")) - before)
    assert len(saved) == 1  # one picture in, one saved
    with Image.open(saved[0]) as result:
        assert result.size == (128, 96)
        assert result.info["parameters"] == TEXT  # how the picture was made is kept
        assert "Postprocess upscale by: 2" in result.info["postprocessing"] and result.info["extras"] == result.info["postprocessing"]
        assert result.convert("RGB").getpixel((63, 47)) == (200, 0, 0) and result.convert("RGB").getpixel((64, 48)) == (255, 255, 255)
