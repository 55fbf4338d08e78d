"""Start the real server (through launch.py, as a user would) and drive it with headless Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.fileserver import Served, file_server
from tests.servers import data_dir_with_tiny_model, launched

CHROMIUM = "/usr/bin/chromium"
SHIPPED_UPSCALER = Path(__file__).resolve().parents[2] / "models" / "ESRGAN" / "4x-demo-shapes-compact.safetensors"
TEST_EXTENSIONS = Path(__file__).resolve().parents[1] / "extensions" / "data"
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


@pytest.fixture(scope="package")
def second_server(tmp_path_factory, tiny_checkpoint):
    """A second server, one start shared by three test files that each need something the first
    server must not have: the test extensions installed (test_extension_page.py: hello-ext, and
    raising-ext whose always-on script fails every job), --theme dark (test_theme_page.py), and
    a loopback file server as the hub (HF_ENDPOINT), holding the tiny checkpoint under a URL
    and a wrong file where the catalog's SD 1.5 should be (test_models_page.py). Its data
    folder holds the tiny random model; the embedded demo model is the one loaded."""
    served = Served(files={
        "/files/my-model.safetensors": tiny_checkpoint.read_bytes(),
        "/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned-emaonly.safetensors": b"not the real thing" * 100,
    })
    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("second-server"), tiny_checkpoint)
    shutil.copytree(TEST_EXTENSIONS / "hello-ext", data / "extensions" / "hello-ext")
    shutil.copytree(TEST_EXTENSIONS / "raising-ext", data / "extensions" / "raising-ext")
    with file_server(served) as base, launched(data, "--theme", "dark", env_extra={"HF_ENDPOINT": base}) as url:
        yield {"url": url + "/", "data": data, "files": base}


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


@pytest.fixture(scope="session")
def page_context(browser):
    """One browser context for the tests' pages on the first server: each test still gets a
    page of its own (its own DOM and gradio session); the page's scripts and styles come from
    the context's cache after the first load, which saves ~0.6 s a test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context
    context.close()


@pytest.fixture
def page(page_context, server):
    pg = page_context.new_page()
    pg.goto(server["url"])
    pg.wait_for_selector("#txt2img_prompt textarea", timeout=30000)
    yield pg
    pg.close()
