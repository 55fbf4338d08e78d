"""PNG Info in the page: drop a file A1111 wrote (PNG text chunk, or EXIF in a JPEG), read its
parameters, and send them to txt2img and img2img."""

from __future__ import annotations

from PIL import Image

from modules.outputs.infotext import encode_user_comment

TEXT = (
    "a white circle on a purple background\nNegative prompt: green\n"
    "Steps: 14, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 2024, Size: 64x64, Model hash: 0123456789, "
    "Model: someone-elses-model, Clip skip: 2, Image CFG scale: 1.5, Version: v1.10.1"
)


def test_png_info_reads_and_sends_to_txt2img_and_img2img(page, server, tmp_path):
    png = tmp_path / "from-a1111.png"
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("parameters", TEXT)
    Image.new("RGB", (64, 64), (120, 40, 160)).save(png, pnginfo=meta)

    page.locator("#model_guide", has_text="a COLOUR SHAPE").wait_for(timeout=15000)  # the page has loaded its model's defaults
    page.get_by_role("tab", name="PNG Info").click()
    page.set_input_files("#pnginfo_image input[type=file]", str(png))
    page.locator("#pnginfo_html_info", has_text="Seed: 2024").wait_for(timeout=20000)

    page.click("#pnginfo_send_txt2img")
    page.wait_for_function("document.querySelector('#txt2img_seed input').value == '2024'", timeout=10000)
    assert page.input_value("#txt2img_prompt textarea") == "a white circle on a purple background"
    assert page.input_value("#txt2img_neg_prompt textarea") == "green"
    assert page.input_value("#txt2img_steps input[type=number]") == "14"
    assert page.input_value("#txt2img_cfg_scale input[type=number]") == "6.5"
    page.get_by_text("Not applied: Image CFG scale").first.wait_for(timeout=10000)  # what could not be applied is said
    page.get_by_text("use Clip skip 2").first.wait_for(timeout=10000)  # and the setting it carries over
    page.screenshot(path=str(server["data"] / "pnginfo-sent.png"), full_page=True)

    # a JPEG with the parameters in EXIF UserComment, as A1111 writes JPEGs
    jpg = tmp_path / "from-a1111.jpg"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = encode_user_comment(TEXT.replace("Seed: 2024", "Seed: 77"))
    Image.new("RGB", (64, 64), (120, 40, 160)).save(jpg, exif=exif)
    page.get_by_role("tab", name="PNG Info").click()
    page.set_input_files("#pnginfo_image input[type=file]", str(jpg))
    page.locator("#pnginfo_html_info", has_text="Seed: 77").wait_for(timeout=20000)
    page.click("#pnginfo_send_img2img")
    page.wait_for_function("document.querySelector('#img2img_seed input') && document.querySelector('#img2img_seed input').value == '77'",
                           timeout=10000)
    assert page.input_value("#img2img_prompt textarea") == "a white circle on a purple background"
    page.locator("#img2img_image img").first.wait_for(timeout=10000)  # the picture came along
