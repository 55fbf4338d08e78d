"""--theme dark in a real browser that prefers light: gradio draws the page dark, and an address
that names its own theme keeps it."""

from __future__ import annotations

import pytest

from tests.servers import launched


@pytest.fixture(scope="module")
def dark_server(tmp_path_factory):
    with launched(tmp_path_factory.mktemp("theme-data"), "--theme", "dark", "--no-download-sd-model") as url:
        yield url


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
