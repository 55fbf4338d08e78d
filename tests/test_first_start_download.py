"""A1111's first start: with no checkpoint of the user's own, the default checkpoint is fetched
in the background while the page runs on the embedded demo model. Loopback only."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.request

import pytest

import webui
from modules.demo.embedded import EMBEDDED_PATH
from modules.models.downloadable import Catalog
from modules.options import parse_args
from tests.fileserver import Served, closed_port, file_server
from tests.servers import launched

HUB_PATH = "/org/tiny/resolve/main/tiny-default.safetensors"


def tiny_catalog(tmp_path, payload: bytes) -> Catalog:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"default": "tiny", "checkpoints": [{
        "name": "tiny", "title": "Tiny", "architecture": "tiny-sd1", "filename": "tiny-default.safetensors", "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(), "url": HUB_PATH.lstrip("/"), "folder": "Stable-diffusion",
    }]}))
    return Catalog.load(path)


def create_app(data, payload: bytes):
    """The app as `webui.main` builds it, its catalog's default being the tiny model."""
    app = webui.App.create(parse_args(["--data-dir", str(data), "--disable-console-progressbars"]))
    app.downloads.catalog = tiny_catalog(data, payload)
    return app


@pytest.fixture
def payload(tiny_checkpoint) -> bytes:
    return tiny_checkpoint.read_bytes()


def test_first_start_fetches_the_default_in_the_background_and_the_next_start_loads_it(tmp_path, payload, monkeypatch):
    gate = threading.Event()
    served = Served(files={HUB_PATH: payload}, hold={HUB_PATH: gate})
    with file_server(served) as base:
        monkeypatch.setenv("HF_ENDPOINT", base)
        app = create_app(tmp_path, payload)
        try:
            assert app.start(fetch_default=True).wait(60)
            # The page starts at once on the demo model while the download waits on the server.
            assert app.models.active.info.path == EMBEDDED_PATH
            progress = app.default_download
            assert progress is not None and not progress.status().finished
            gate.set()
            assert progress.wait(30)
            status = progress.status()
            assert status.state == "done", status.error
            assert status.path == tmp_path / "models" / "Stable-diffusion" / "tiny-default.safetensors"
            # The list includes it as soon as the progress says done, with its verified hash.
            assert "tiny-default" in [c.name for c in app.models.checkpoints]
            assert app.models.hashes.sha256(status.path, compute=False) == hashlib.sha256(payload).hexdigest()
            assert app.models.active.info.path == EMBEDDED_PATH  # nothing switches under the user
        finally:
            app.queue.shutdown()

    again = create_app(tmp_path, payload)
    try:
        assert again.models.has_user_checkpoint()
        assert again.models.startup_order()[0].name == "tiny-default"  # the user's own before the demo
        assert again.start(fetch_default=True).wait(60)
        assert again.default_download is None  # nothing more to fetch
        assert again.models.active.info.name == "tiny-default"
    finally:
        again.queue.shutdown()


def test_no_default_fetch_when_not_asked_or_when_the_user_has_a_checkpoint(tmp_path, payload):
    app = create_app(tmp_path, payload)
    try:
        app.start()  # in-process callers (tests, scripts) fetch nothing unless they ask
        assert app.default_download is None and app.downloads.statuses() == []
    finally:
        app.queue.shutdown()
    (tmp_path / "models" / "Stable-diffusion" / "mine.safetensors").write_bytes(payload)
    app = create_app(tmp_path, payload)
    try:
        app.start(fetch_default=True)
        assert app.default_download is None and app.downloads.statuses() == []
    finally:
        app.queue.shutdown()


def test_the_real_server_without_network_serves_the_page_on_the_demo_model(tmp_path):
    """A flag-less start (no --no-download-sd-model) with the hub unreachable: one clear log
    line, and the page on the embedded demo model."""
    with launched(tmp_path, "--api", fetch_default=True, env_extra={"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}) as url:
        with urllib.request.urlopen(url + "/", timeout=10) as page:
            assert page.status == 200
        deadline, current = time.monotonic() + 60, None
        while time.monotonic() < deadline and not current:
            with urllib.request.urlopen(url + "/sdapi/v1/options", timeout=10) as answer:
                current = json.load(answer).get("sd_model_checkpoint")
            time.sleep(0.3)
        assert current and current.startswith("demo-shapes-64px.safetensors")
        log = ""
        while time.monotonic() < deadline and "Carrying on" not in log:
            log = (tmp_path / "server.log").read_text()
            time.sleep(0.2)
    failures = [line for line in log.splitlines() if "v1-5-pruned-emaonly.safetensors failed" in line]
    assert len(failures) == 1, log
    assert "could not connect to 127.0.0.1:" in failures[0] and "Carrying on with the demo model" in failures[0]
    assert "Traceback" not in log
    assert list((tmp_path / "models" / "Stable-diffusion").iterdir()) == []
