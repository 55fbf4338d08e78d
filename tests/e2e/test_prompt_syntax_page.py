"""A prompt pasted from a model site, through the page: weights, past 75 tokens, a LoRA picked
from its card, a style; the counter, the picture and the saved infotext."""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

from modules.demo import evaluation
from modules.generation.runner import Runner
from modules.outputs.infotext import parse_infotext
from tests.e2e.test_extra_networks_page import card, show_cards
from tests.e2e.test_txt2img_page import saved_images, set_number
from tests.models.test_lora import write_test_lora

FILLER = ", ".join(["highly detailed", "sharp focus", "studio lighting", "clean edges", "flat colours"] * 9)
PROMPT = f"a (red:1.3) circle on a [blue:0.9] background, {FILLER}"


def test_weighted_long_prompt_with_a_lora_and_a_style(page, server, demo_model):
    data = server["data"]
    write_test_lora(data / "models" / "Lora" / "shapes-glow.safetensors", demo_model, layout="kohya", strength=0.6)
    (data / "styles.csv").write_text("name,prompt,negative_prompt\nclean,\"{prompt}\",\"blurry, noisy\"\n", encoding="utf-8")
    page.locator("#model_guide", has_text="a COLOUR SHAPE").wait_for(timeout=15000)

    page.fill("#txt2img_prompt textarea", PROMPT)
    page.wait_for_function("document.querySelector('#txt2img_token_counter').innerText.trim().endsWith('/150')", timeout=10000)
    tokens = int(page.inner_text("#txt2img_token_counter").strip().split("/")[0])
    assert 75 < tokens <= 150

    show_cards(page, "txt2img")  # Extra networks, rescanned, on its Lora tab
    card(page, "txt2img", "lora", "shapes-glow").click()
    page.wait_for_function("document.querySelector('#txt2img_prompt textarea').value.endsWith('<lora:shapes-glow:1>')", timeout=10000)

    page.click("#txt2img_style_refresh")
    page.click("#txt2img_styles input")
    page.get_by_role("option", name="clean").click()
    page.keyboard.press("Escape")
    set_number(page, "txt2img_seed", 77)
    before = set(saved_images(data))
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_gallery img", timeout=90000)
    page.locator("#txt2img_html_info", has_text="Lora hashes").wait_for(timeout=30000)
    page.screenshot(path=str(data / "prompt-syntax.png"), full_page=True)

    [new] = sorted(set(saved_images(data)) - before)
    text = Image.open(new).info["parameters"]
    fields = parse_infotext(text)
    assert fields["Prompt"] == PROMPT + " <lora:shapes-glow:1>"
    assert fields["Negative prompt"] == "blurry, noisy"  # the style's negative prompt
    assert re.fullmatch(r"shapes-glow: [0-9a-f]{12}", fields["Lora hashes"])
    assert "not found" not in page.inner_text("#txt2img_html_log")  # no warning about the tag

    # Without the LoRA the core draws something else from the same seed and prompt.
    plain = evaluation.generate(Runner(demo_model), PROMPT, 77, negative="blurry, noisy")[0]
    assert np.abs(np.asarray(Image.open(new).convert("RGB"), dtype=int) - np.asarray(plain, dtype=int)).max() > 8
