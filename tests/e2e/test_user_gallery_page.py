"""A shared studio machine with log-ins: each user's images go to their own folder, and each
user's Gallery shows only their own (the gallery_show_all_users setting is off by default)."""

from __future__ import annotations

import pytest

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.servers import launched

pytestmark = pytest.mark.slow  # a server of its own with log-ins (~70 s); tests/test_user_files.py checks the folders over HTTP

USERS = "alice:apple-pie,bob:blue-moon"


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    data = tmp_path_factory.mktemp("studio")
    bobs = data / "outputs" / "txt2img-images" / "bob" / "2026-01-01"
    bobs.mkdir(parents=True)
    meta = PngInfo()
    meta.add_text("parameters", "bob's own picture\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5555, Size: 64x64, Model: x")
    Image.new("RGB", (64, 64), "green").save(bobs / "00000-5555.png", pnginfo=meta)
    with launched(data, "--gradio-auth", USERS) as url:
        yield {"url": url + "/", "data": data}


def log_in(browser, url: str, user: str, password: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#txt2img_prompt textarea", timeout=30000)
    return context, page


def gallery_text(page) -> str:
    page.get_by_role("tab", name="Gallery").click()
    status = page.locator("#gallery_page_text")
    status.wait_for(timeout=20000)
    return status.inner_text()


def test_each_user_sees_only_their_own_images(browser, studio):
    alice, page = log_in(browser, studio["url"], "alice", "apple-pie")
    page.locator("#model_guide", has_text="a COLOUR SHAPE").wait_for(timeout=15000)
    page.fill("#txt2img_prompt textarea", "a red circle on a blue background")
    page.fill("#txt2img_seed input", "777")
    page.click("#txt2img_generate")
    page.locator("#txt2img_html_info", has_text="Seed: 777").wait_for(timeout=120000)
    saved = list((studio["data"] / "outputs" / "txt2img-images").rglob("*-777.png"))
    assert [p.relative_to(studio["data"] / "outputs" / "txt2img-images").parts[0] for p in saved] == ["alice"]
    assert gallery_text(page).startswith("1 image ")
    page.fill("#gallery_search textarea, #gallery_search input", "seed:5555")
    page.press("#gallery_search textarea, #gallery_search input", "Enter")
    page.locator("#gallery_page_text", has_text="0 images").wait_for(timeout=10000)  # bob's picture is not hers to see
    alice.close()

    bob, page = log_in(browser, studio["url"], "bob", "blue-moon")
    assert gallery_text(page).startswith("1 image ")
    page.locator("#gallery_images img").first.click()
    page.locator("#gallery_selected_info", has_text="Seed: 5555").wait_for(timeout=10000)
    bob.close()
