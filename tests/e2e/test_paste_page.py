"""A1111's ↙ on the page: an infotext pasted into the prompt box fills the controls, and
generating with them makes the same picture, bit for bit."""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from tests.e2e.test_txt2img_page import saved_images, set_number


def generate_and_wait(page, data):
    """Press Generate and return the one image file it saves."""
    before = set(saved_images(data))
    page.click("#txt2img_generate")
    deadline = time.monotonic() + 60
    while not set(saved_images(data)) - before and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    [new] = sorted(set(saved_images(data)) - before)
    return new


def test_pasted_infotext_fills_the_controls_and_reproduces_the_image(page, server):
    data = server["data"]
    page.locator("#model_guide", has_text="a COLOUR SHAPE").wait_for(timeout=15000)
    page.fill("#txt2img_prompt textarea", "a blue square on a (yellow:1.1) background")
    page.fill("#txt2img_neg_prompt textarea", "red")
    set_number(page, "txt2img_seed", 555)
    set_number(page, "txt2img_steps", 12)
    before = set(saved_images(data))
    page.click("#txt2img_generate")
    page.locator("#txt2img_html_info", has_text="Seed: 555").wait_for(timeout=60000)
    [first] = sorted(set(saved_images(data)) - before)
    text = Image.open(first).info["parameters"]

    # A new user pastes it after changing everything.
    set_number(page, "txt2img_seed", -1)
    set_number(page, "txt2img_steps", 30)
    page.fill("#txt2img_neg_prompt textarea", "")
    page.fill("#txt2img_prompt textarea", text)
    page.click("#txt2img_paste")
    page.wait_for_function("document.querySelector('#txt2img_seed input').value == '555'", timeout=10000)
    assert page.input_value("#txt2img_steps input[type=number]") == "12"
    assert page.input_value("#txt2img_prompt textarea") == "a blue square on a (yellow:1.1) background"
    assert page.input_value("#txt2img_neg_prompt textarea") == "red"
    page.screenshot(path=str(data / "after-paste.png"), full_page=True)

    second = generate_and_wait(page, data)
    assert Image.open(second).info["parameters"] == text
    assert np.array_equal(np.asarray(Image.open(second)), np.asarray(Image.open(first)))


def test_pasting_an_nvidia_made_infotext_uses_its_noise_settings(page, server, demo_model):
    """An infotext from A1111 with NV noise and Eta noise seed delta: ↙ says the tab now uses
    them, and the picture comes out as the generation core makes it from the same text."""
    from modules.generation.params import GenerationParams
    from modules.generation.runner import Runner
    from modules.outputs.paste import params_from_infotext

    data = server["data"]
    text = ("a yellow star on a black background\nSteps: 10, Sampler: Euler a, Schedule type: Automatic, CFG scale: 5, Seed: 42, "
            "Size: 64x64, ENSD: 31337, RNG: NV, Version: v1.10.1")
    params = GenerationParams.create(**params_from_infotext(text).values)
    [batch] = list(Runner(demo_model).txt2img(params, 42))
    page.locator("#model_guide", has_text="a COLOUR SHAPE").wait_for(timeout=15000)
    page.fill("#txt2img_prompt textarea", text)
    page.click("#txt2img_paste")
    page.locator(".toast-body", has_text="This tab's next jobs use RNG NV, ENSD 31337").wait_for(timeout=10000)
    saved = generate_and_wait(page, data)
    assert "ENSD: 31337, RNG: NV" in Image.open(saved).info["parameters"]
    assert np.array_equal(np.asarray(Image.open(saved).convert("RGB")), np.asarray(batch.images[0].convert("RGB")))
