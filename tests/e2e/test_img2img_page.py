"""img2img in the browser: upload an image and a mask, generate, find the result on the page
and in outputs/ with A1111's img2img keys; bad uploads give a visible message."""

from __future__ import annotations

import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from modules.demo import judge, shapes
from modules.outputs.infotext import parse_infotext

from .test_txt2img_page import set_number


def img2img_images(data):
    return sorted((data / "outputs" / "img2img-images").glob("*/*.png"))


MODE_TABS = {"img2img": "img2img_img2img_tab", "Sketch": "img2img_img2img_sketch_tab", "Inpaint": "img2img_inpaint_tab",
             "Inpaint upload": "img2img_inpaint_upload_tab", "Batch": "img2img_batch_tab"}


def open_img2img(page, mode: str) -> None:
    page.locator("#model_guide", has_text="a COLOUR SHAPE on a COLOUR background").wait_for(timeout=15000)  # the model's defaults are in
    page.get_by_role("tab", name="img2img", exact=True).first.click()
    page.locator("#img2img_prompt textarea").wait_for(timeout=10000)
    page.click(f"#{MODE_TABS[mode]}-button")


def test_inpaint_upload_recolours_the_masked_shape_and_keeps_the_rest(page, server, tmp_path):
    init = shapes.draw(shapes.Scene("red", "circle", "blue"), (32.0, 32.0), 18.0)
    init_path, mask_path = tmp_path / "init.png", tmp_path / "mask.png"
    init.save(init_path)
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).ellipse((8, 8, 56, 56), fill=255)
    mask.save(mask_path)

    open_img2img(page, "Inpaint upload")
    page.locator("#img2img_inpaint_controls").first.wait_for(state="visible", timeout=10000)  # mask blur & co. show for inpainting
    page.locator("#img_inpaint_base input[type=file]").set_input_files(str(init_path))
    page.locator("#img_inpaint_mask input[type=file]").set_input_files(str(mask_path))
    page.locator("#img_inpaint_mask img").wait_for(timeout=15000)
    page.fill("#img2img_prompt textarea", "a green circle on a blue background")
    set_number(page, "img2img_seed", 4)
    set_number(page, "img2img_denoising_strength", 1)
    assert page.input_value("#img2img_width input[type=number]") == "64"  # the demo model's defaults reach this tab too
    before = set(img2img_images(server["data"]))
    page.click("#img2img_generate")
    page.wait_for_selector("#img2img_gallery img", timeout=60000)
    page.locator("#img2img_html_info", has_text="Mask blur: 4").wait_for(timeout=30000)
    page.screenshot(path=str(server["data"] / "img2img-inpaint.png"), full_page=True)

    [saved] = sorted(set(img2img_images(server["data"])) - before)
    text = Image.open(saved).info["parameters"]
    fields = parse_infotext(text)
    assert fields["Prompt"] == "a green circle on a blue background"
    assert (fields["Seed"], fields["Size"], fields["Denoising strength"], fields["Mask blur"]) == ("4", "64x64", "1", "4")
    out = Image.open(saved).convert("RGB")
    reading = judge.read_picture(out)
    assert (reading.background, reading.colour) == ("blue", "green"), reading
    untouched = np.asarray(mask.filter(ImageFilter.GaussianBlur(4))) == 0
    assert (np.asarray(out)[untouched] == np.asarray(init)[untouched]).all()


def test_img2img_without_an_image_says_so(page, server):
    open_img2img(page, "img2img")
    page.click("#img2img_generate")
    toast = page.locator(".toast-body", has_text="Upload an image")
    toast.wait_for(timeout=20000)


def test_a_non_image_upload_is_refused_and_the_page_keeps_working(page, server, tmp_path):
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is not a picture")
    open_img2img(page, "img2img")
    page.locator("#img2img_image input[type=file]").set_input_files(str(bogus))
    toast = page.locator(".toast-body", has_text="Image for img2img: notes.png is not an image that can be read")
    toast.wait_for(timeout=20000)
    page.screenshot(path=str(server["data"] / "img2img-bad-upload.png"), full_page=True)
    page.click("#img2img_generate")  # the bad file was dropped, so this asks for an image
    page.locator(".toast-body", has_text="Upload an image to the img2img tab").wait_for(timeout=20000)
    # A good picture afterwards still works.
    good = tmp_path / "good.png"
    shapes.draw(shapes.Scene("white", "square", "green"), (32.0, 32.0), 18.0).save(good)
    page.locator("#img2img_image input[type=file]").set_input_files(str(good))
    page.locator("#img2img_image img").wait_for(timeout=15000)
    before = len(img2img_images(server["data"]))
    page.fill("#img2img_prompt textarea", "a white square on a green background")
    page.click("#img2img_generate")
    page.locator("#img2img_html_log", has_text="1 image(s)").wait_for(timeout=60000)
    assert len(img2img_images(server["data"])) == before + 1


def test_a_cmyk_jpeg_and_a_lab_tiff_upload_generate_with_their_colours(page, server, tmp_path):
    """Print workflows' CMYK JPEGs and LAB TIFFs: converted when they arrive, shown in their
    colours, and img2img runs on them (gradio's own conversion fails on LAB)."""
    from PIL import ImageCms

    picture = shapes.draw(shapes.Scene("white", "square", "green"), (32.0, 32.0), 18.0).convert("RGB")
    cmyk, lab = tmp_path / "print.jpg", tmp_path / "scan.tif"
    picture.convert("CMYK").save(cmyk, quality=95)
    ImageCms.applyTransform(picture, ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")).save(lab)
    open_img2img(page, "img2img")
    page.fill("#img2img_prompt textarea", "a white square on a green background")
    set_number(page, "img2img_denoising_strength", 0)  # strength 0 keeps the init: its colours show what the server read
    for upload in (cmyk, lab):
        before = set(img2img_images(server["data"]))
        page.locator("#img2img_image input[type=file]").set_input_files(str(upload))
        page.locator("#img2img_image img").wait_for(timeout=15000)
        page.wait_for_timeout(500)  # the upload's conversion replaces the picture
        page.click("#img2img_generate")
        deadline = time.monotonic() + 60
        while not set(img2img_images(server["data"])) - before and time.monotonic() < deadline:
            page.wait_for_timeout(200)
        [saved] = sorted(set(img2img_images(server["data"])) - before)
        reading = judge.read_picture(Image.open(saved).convert("RGB"))
        assert (reading.colour, reading.background) == ("white", "green"), (upload.name, reading)
    page.screenshot(path=str(server["data"] / "img2img-cmyk-lab.png"), full_page=True)
