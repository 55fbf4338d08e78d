"""The Models tab: a URL pasted by the user is fetched into models/Stable-diffusion with its
progress shown, and the checkpoint then appears in the checkpoint menu; a catalog entry whose
file does not match its SHA-256 is refused and nothing is left where the loader would look."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def shop(second_server):
    """The server on an empty data folder whose hub is a loopback file server (tests/e2e/conftest.py)."""
    return second_server


def test_download_a_url_then_pick_it(browser, shop):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(shop["url"])
    page.wait_for_selector("#txt2img_prompt textarea", timeout=30000)
    page.get_by_role("tab", name="Models").click()
    page.fill("#models_url textarea, #models_url input", f"{shop['files']}/files/my-model.safetensors")
    page.click("#models_download_url")
    page.locator("#models_downloads tr[data-state='done']", has_text="my-model.safetensors").wait_for(timeout=30000)
    assert (shop["data"] / "models" / "Stable-diffusion" / "my-model.safetensors").exists()
    page.locator("#models_downloads tr[data-state='done']", has_text="my-model.safetensors").wait_for(timeout=5000)
    menu = page.locator("#quicksettings input").first
    menu.click()
    page.get_by_role("option", name="my-model.safetensors").wait_for(timeout=10000)  # the new checkpoint is in the menu
    page.keyboard.press("Escape")

    page.click("#models_download_catalog")  # SD 1.5 from the "hub": the served bytes do not match its SHA-256
    page.locator("#models_downloads tr[data-state='failed']", has_text="v1-5-pruned-emaonly").wait_for(timeout=30000)
    assert "expected sha256" in page.locator("#models_downloads tr[data-state='failed']").inner_text()
    assert not list((shop["data"] / "models" / "Stable-diffusion").glob("v1-5-pruned-emaonly*"))
    context.close()
