"""ControlNet on the page, as a user meets it: the accordion under txt2img's controls, a
picture put in Unit 0, canny picked, its edges previewed beside the picture, the shipped demo
ControlNet picked after 🔄, and a picture generated with the shape where the edges are, whose
infotext records the unit."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from modules.demo import controlnet_eval
from tests.e2e.test_txt2img_page import saved_images, set_number

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "ControlNet" / "demo-shapes-canny"
UNIT = "txt2img_controlnet_ControlNet-0"
SCREENSHOT = Path("/tmp/cn/ui.png")


def put_controlnet(models: Path) -> str:
    """The shipped demo ControlNet in the server's models/ControlNet, as a user copies one in."""
    folder = models / "ControlNet"
    if not (folder / SHIPPED.name).exists():
        shutil.copytree(SHIPPED, folder / SHIPPED.name)
    return SHIPPED.name


def square_picture(path: Path) -> Path:
    """A white square on black in the left half, drawn as the demo's pictures are."""
    controlnet_eval.condition_picture().save(path)
    return path


def pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def shown_picture(page, selector: str) -> Image.Image:
    src = page.locator(selector).first.get_attribute("src")
    response = page.request.get(src if src.startswith("http") else page.url.rstrip("/") + "/" + src.lstrip("/"))
    assert response.ok, src
    return Image.open(io.BytesIO(response.body())).convert("L")


def assert_square_outline(lit: np.ndarray) -> None:
    """The drawn square's outline (at the preprocessor's resolution): thin lines, in the left half."""
    assert 0.001 < lit.mean() < 0.06, lit.mean()  # an outline, not a filled or empty picture
    assert np.nonzero(lit)[1].max() < lit.shape[1] * 0.55


def test_controlnet_unit_previews_canny_and_steers_a_generation(page, server, tmp_path):
    stem = put_controlnet(server["data"] / "models")
    page.locator("#model_guide", has_text="a COLOUR SHAPE").wait_for(timeout=15000)
    page.locator("#txt2img_controlnet_accordion").click()
    tabs = page.locator("#txt2img_controlnet_tabs")
    for i in range(3):  # control_net_unit_count's default
        tabs.get_by_role("tab", name=f"ControlNet Unit {i}").wait_for(timeout=10000)

    page.set_input_files(f"#{UNIT}_input_image input[type=file]", str(square_picture(tmp_path / "square.png")))
    page.locator(f"#{UNIT}_input_image img").first.wait_for(timeout=15000)
    page.wait_for_function(f"document.querySelector('#{UNIT}_controlnet_enable_checkbox input').checked", timeout=10000)

    pick(page, f"{UNIT}_controlnet_preprocessor_dropdown", "canny")
    page.locator(f"#{UNIT}_controlnet_threshold_A_slider", has_text="Low Threshold").wait_for(timeout=10000)
    assert page.locator(f"#{UNIT}_controlnet_threshold_B_slider", has_text="High Threshold").is_visible()
    page.locator(f"#{UNIT}_controlnet_pixel_perfect_checkbox input").check()  # the map at the picture's 64 px, as trained
    page.locator(f"#{UNIT}_controlnet_preprocessor_resolution_slider").wait_for(state="hidden", timeout=10000)

    page.click(f"#{UNIT}_controlnet_trigger_preprocessor")  # 💥
    page.locator(f"#{UNIT}_generated_image img").first.wait_for(timeout=30000)
    assert page.locator(f"#{UNIT}_controlnet_preprocessor_preview_checkbox input").is_checked()
    edges = np.asarray(shown_picture(page, f"#{UNIT}_generated_image img"))
    assert edges.shape == (64, 64)  # pixel perfect
    assert_square_outline(edges > 127)

    page.click(f"#{UNIT}_controlnet_refresh_models")  # 🔄 finds the model copied in
    page.locator(f"#{UNIT}_controlnet_model_dropdown input").click()
    option = page.get_by_role("option", name=stem, exact=False).first
    option.wait_for(timeout=10000)
    model_name = option.inner_text().strip()
    option.click()
    page.wait_for_timeout(400)  # the menu's closing fade
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.locator("#txt2img_controlnet").screenshot(path=str(SCREENSHOT))

    page.fill("#txt2img_prompt textarea", "a red square on a blue background")
    set_number(page, "txt2img_seed", 13)  # the demo model's 20 steps at 64 px; without the unit: IoU 0.21, right of centre
    before = set(saved_images(server["data"]))
    page.click("#txt2img_generate")
    page.locator("#txt2img_html_info", has_text="ControlNet 0: ").wait_for(timeout=60000)
    deadline = time.monotonic() + 20
    while not set(saved_images(server["data"])) - before and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    [saved] = sorted(set(saved_images(server["data"])) - before)
    with Image.open(saved) as picture:
        assert picture.size == (64, 64)
        text = picture.info["parameters"]
        shape = controlnet_eval.shape_mask(picture.convert("RGB"))
    assert f'ControlNet 0: "Module: canny, Model: {model_name}, Weight: 1.0, Resize Mode: Crop and Resize, Processor Res: 64, ' in text
    assert "Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: True" in text
    # Drawn where the unit's edges are (the demo ControlNet's held-out figure: IoU 0.68 on average, 0.24 without).
    assert controlnet_eval.in_left_half(shape) and controlnet_eval.iou(shape, controlnet_eval.silhouette()) >= 0.6
    # The picture, then the unit's detected map, as A1111 shows them.
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery img').length >= 2", timeout=10000)

    # ↙ with the saved infotext brings the unit's settings back (all but the picture).
    set_number(page, f"{UNIT}_controlnet_control_weight_slider", 0.3)
    set_number(page, f"{UNIT}_controlnet_threshold_A_slider", 20)
    assert page.input_value(f"#{UNIT}_controlnet_threshold_A_slider input[type=number]") == "20"
    page.fill("#txt2img_prompt textarea", text)
    page.click("#txt2img_paste")
    page.wait_for_function(f"document.querySelector('#{UNIT}_controlnet_control_weight_slider input[type=number]').value == '1'",
                           timeout=10000)
    assert page.input_value(f"#{UNIT}_controlnet_threshold_A_slider input[type=number]") == "100"
    assert page.input_value(f"#{UNIT}_controlnet_preprocessor_dropdown input") == "canny"
    assert page.input_value(f"#{UNIT}_controlnet_model_dropdown input") == model_name


def test_an_enabled_unit_without_a_picture_is_refused_visibly(page, server):
    page.locator("#model_guide", has_text="a COLOUR SHAPE").wait_for(timeout=15000)
    page.locator("#txt2img_controlnet_accordion").click()
    unit = "txt2img_controlnet_ControlNet-1"
    page.locator("#txt2img_controlnet_tabs").get_by_role("tab", name="ControlNet Unit 1").click()
    page.locator(f"#{unit}_controlnet_enable_checkbox input").check()
    before = set(saved_images(server["data"]))
    page.click("#txt2img_generate")
    page.locator(".toast-body", has_text="ControlNet unit 1").wait_for(timeout=20000)
    assert set(saved_images(server["data"])) == before
    page.click(f"#{unit}_controlnet_trigger_preprocessor")  # 💥 with nothing to preprocess: said, not crashed
    page.locator(".toast-body", has_text="no picture to preprocess").wait_for(timeout=20000)


def test_img2img_unit_previews_the_img2img_input(page, server, tmp_path):
    """Without "Upload independent control image", a unit works on img2img's own picture."""
    from tests.e2e.test_img2img_page import open_img2img

    open_img2img(page, "img2img")
    page.locator("#img2img_image input[type=file]").set_input_files(str(square_picture(tmp_path / "square.png")))
    page.locator("#img2img_image img").first.wait_for(timeout=15000)
    page.locator("#img2img_controlnet_accordion").click()
    unit = "img2img_controlnet_ControlNet-0"
    assert not page.locator(f"#{unit}_input_image").is_visible()  # no upload of its own until asked for
    pick(page, f"{unit}_controlnet_preprocessor_dropdown", "canny")
    page.click(f"#{unit}_controlnet_trigger_preprocessor")
    page.locator(f"#{unit}_generated_image img").first.wait_for(timeout=30000)
    assert_square_outline(np.asarray(shown_picture(page, f"#{unit}_generated_image img")) > 127)  # the img2img picture's square
    page.locator(f"#{unit}_controlnet_same_img2img_checkbox input").check()
    page.locator(f"#{unit}_input_image").wait_for(timeout=10000)  # now its own upload shows
