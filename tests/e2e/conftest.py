"""Start the real server (through launch.py, as a user would) and drive it with headless Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.servers import data_dir_with_tiny_model, launched

CHROMIUM = "/usr/bin/chromium"
SHIPPED_UPSCALER = Path(__file__).resolve().parents[2] / "models" / "ESRGAN" / "4x-demo-shapes-compact.safetensors"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_checkpoint):
    """A running server on a free loopback port, data in a temp folder holding a broken file and
    the tiny random model; the embedded demo model ships with the app and is the one loaded."""
    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("webui-data"), tiny_checkpoint)
    (data / "models" / "Stable-diffusion" / "broken.safetensors").write_bytes(b"\x00" * 64)
    (data / "models" / "ESRGAN").mkdir(parents=True, exist_ok=True)
    shutil.copy(SHIPPED_UPSCALER, data / "models" / "ESRGAN")  # the repo's own upscaler, as a user would copy one in
    with launched(data) as url:
        yield {"url": url + "/", "data": data, "log": data / "server.log"}


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed at /usr/bin/chromium (.ci/run installs it with apt)")
        pytest.skip("Chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.goto(server["url"])
    pg.wait_for_selector("#txt2img_prompt textarea", timeout=30000)
    yield pg
    context.close()
