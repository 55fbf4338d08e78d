"""Extra networks in the browser: a LoRA card with its preview, a click that writes its tag (and
trigger words) into the prompt and a second that takes them out, a picture made with it, the
editor's Save and Replace preview; a hostile file name stays text."""

from __future__ import annotations

import json

from PIL import Image

from tests.e2e.test_txt2img_page import set_number
from tests.models.test_lora import write_test_lora

EVIL = "<img src=x onerror=window.__pwned=1>"


def show_cards(page, prefix: str, tab: str = "Lora") -> None:
    """Open the Extra networks accordion, rescan the folders, and show `tab`."""
    if not page.locator(f"#{prefix}_extra_refresh").is_visible():
        page.locator(f"#{prefix}_extra_networks > button").first.click()
    page.click(f"#{prefix}_extra_refresh")
    page.locator(f"#{prefix}_extra_tabs").get_by_role("tab", name=tab, exact=True).click()


def card(page, prefix: str, kind: str, name: str):
    return page.locator(f"#{prefix}_{kind}_cards .extra-network-card[data-name={json.dumps(name)}]")


def prompt_is(page, prefix: str, text: str) -> None:
    page.wait_for_function("([id, text]) => document.querySelector(id).value === text", arg=[f"#{prefix}_prompt textarea", text], timeout=10000)


def test_a_lora_card_with_its_preview_goes_into_the_prompt_and_the_picture(page, server, demo_model):
    lora_dir = server["data"] / "models" / "Lora"
    path = write_test_lora(lora_dir / "glow-card.safetensors", demo_model, layout="kohya", strength=0.6)
    Image.new("RGB", (300, 200), (255, 0, 255)).save(lora_dir / "glow-card.preview.png")
    (lora_dir / "glow-card.json").write_text(json.dumps({"activation text": "glowing", "description": "Makes shapes glow", "sd version": "SD1"}))
    evil = lora_dir / f"{EVIL}.safetensors"
    evil.write_bytes(path.read_bytes())
    try:
        page.fill("#txt2img_prompt textarea", "a red circle on a blue background")
        show_cards(page, "txt2img")
        glow = card(page, "txt2img", "lora", "glow-card")
        glow.wait_for(timeout=10000)
        page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=glow.locator("img.card-preview").element_handle(), timeout=10000)
        assert "Makes shapes glow" in glow.inner_text() and "glowing" in glow.inner_text()

        hostile = card(page, "txt2img", "lora", EVIL)
        assert hostile.locator(".card-name").inner_text() == EVIL  # shown as text, never as markup
        assert page.evaluate("window.__pwned") is None

        glow.locator(".card-name").click()
        prompt_is(page, "txt2img", "a red circle on a blue background <lora:glow-card:1> glowing")
        glow.click()  # A1111 toggles: the second click takes the tag and its trigger words out
        prompt_is(page, "txt2img", "a red circle on a blue background")
        glow.click()
        prompt_is(page, "txt2img", "a red circle on a blue background <lora:glow-card:1> glowing")

        set_number(page, "txt2img_seed", 5)
        set_number(page, "txt2img_steps", 6)  # enough to show the LoRA ran; quick on the CPU
        page.click("#txt2img_generate")
        page.locator("#txt2img_html_info", has_text="Lora hashes").wait_for(timeout=90000)
        assert "glow-card: " in page.inner_text("#txt2img_html_info")
        assert "not found" not in page.inner_text("#txt2img_html_log")

        # 🛠: the editor shows the file's metadata; Replace preview takes the output, Save writes the json.
        before = glow.locator("img.card-preview").get_attribute("src")
        glow.locator(".card-edit").click()
        page.locator("#txt2img_extra_activation textarea").wait_for(timeout=10000)
        assert page.input_value("#txt2img_extra_activation textarea") == "glowing"
        page.click("#txt2img_extra_replace_preview")
        page.wait_for_function("([sel, before]) => { const img = document.querySelector(sel); return img && img.getAttribute('src') !== before && img.complete && img.naturalWidth > 0; }",
                               arg=["#txt2img_lora_cards .extra-network-card[data-name='glow-card'] img.card-preview", before], timeout=10000)
        preview = Image.open(lora_dir / "glow-card.preview.png")
        assert preview.size == (64, 64)  # the demo model's picture, not the magenta one
        page.fill("#txt2img_extra_description textarea", "Glowing shapes, tested")
        page.click("#txt2img_extra_save")
        page.locator("#txt2img_extra_save").wait_for(state="hidden", timeout=10000)
        saved = json.loads((lora_dir / "glow-card.json").read_text(encoding="utf-8"))
        assert saved["description"] == "Glowing shapes, tested" and saved["sd version"] == "SD1" and saved["activation text"] == "glowing"
        glow.filter(has_text="Glowing shapes, tested").wait_for(timeout=10000)
    finally:
        evil.unlink(missing_ok=True)


def test_search_filters_the_cards_as_you_type(page, server):
    lora_dir = server["data"] / "models" / "Lora"
    lora_dir.mkdir(parents=True, exist_ok=True)
    for name in ("alpha-search", "beta-search"):
        (lora_dir / f"{name}.pt").write_bytes(b"")
    (lora_dir / "beta-search.json").write_text(json.dumps({"description": "watercolour wash"}))
    show_cards(page, "txt2img")
    card(page, "txt2img", "lora", "alpha-search").wait_for(timeout=10000)
    page.locator("#txt2img_extra_search :is(input, textarea)").press_sequentially("watercolour")  # typed, as a user does
    card(page, "txt2img", "lora", "alpha-search").wait_for(state="detached", timeout=10000)
    assert card(page, "txt2img", "lora", "beta-search").is_visible()
