"""GET /extra-networks/thumb, the cards' pictures: behind the page's log-in, only a listed item's
preview, small, and 404 for anything else (traversal names, paths, unknown kinds)."""

from __future__ import annotations

import io

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import save_file

import webui
from modules.options import parse_args

PATH = "/extra-networks/thumb"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("previews")
    lora = data / "models" / "Lora"
    lora.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(lora / "glow.safetensors"))
    Image.new("RGB", (800, 400), "green").save(lora / "glow.preview.png")
    save_file({"w": torch.zeros(2)}, str(lora / "bare.safetensors"))
    Image.new("RGB", (8, 8), "red").save(data / "secret.png")
    Image.new("RGB", (8, 8), "red").save(lora / "unlisted.png")
    args = parse_args(["--data-dir", str(data), "--gradio-auth", "owner:pw", "--disable-console-progressbars"])
    app = webui.App.create(args)
    try:
        with TestClient(app.build_asgi(args)) as client:
            yield {"client": client, "data": data}
    finally:
        app.queue.shutdown()


def test_a_preview_needs_the_page_log_in_then_comes_small(served):
    client = served["client"]
    refused = client.get(PATH, params={"kind": "lora", "name": "glow"})
    assert refused.status_code == 401 and "log in" in refused.json()["detail"]

    assert client.post("/login", data={"username": "owner", "password": "pw"}).status_code == 200
    r = client.get(PATH, params={"kind": "lora", "name": "glow", "v": "1"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(r.content))
    assert picture.size == (256, 128) and picture.getpixel((10, 10))[1] > 100


@pytest.mark.parametrize("kind,name", [
    ("lora", "../../secret"), ("lora", "../secret.png"), ("lora", "unlisted"), ("lora", "bare"), ("lora", "GLOW"),
    ("lora", "/etc/passwd"), ("checkpoints", "glow"), ("nothing", "glow"), ("lora", ""),
])
def test_anything_but_a_listed_items_preview_is_404(served, kind, name):
    client = served["client"]
    client.post("/login", data={"username": "owner", "password": "pw"})
    r = client.get(PATH, params={"kind": kind, "name": name})
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
