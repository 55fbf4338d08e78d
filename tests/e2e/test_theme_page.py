"""--theme dark in a real browser that prefers light: gradio draws the page dark, and an address
that names its own theme keeps it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def dark_server(second_server):
    """The server started with --theme dark, shared with the Models tab test (tests/e2e/conftest.py)."""
    return second_server["url"].rstrip("/")


def is_dark(browser, url: str) -> tuple[bool, str]:
    context = browser.new_context(color_scheme="light")
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("#txt2img_prompt textarea", timeout=30000)
        return page.evaluate("document.body.classList.contains('dark')"), page.url
    finally:
        context.close()


def test_theme_dark_is_forced(browser, dark_server):
    dark, address = is_dark(browser, dark_server + "/")
    assert dark and address.endswith("/?__theme=dark")


def test_address_theme_wins(browser, dark_server):
    dark, address = is_dark(browser, dark_server + "/?__theme=light")
    assert not dark and address.endswith("/?__theme=light")
