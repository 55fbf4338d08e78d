"""SD upscale and the outpainting scripts through A1111's API: /sdapi/v1/img2img with
script_name and the positional script_args A1111's clients send (the info placeholder first
where A1111's ui() has one, the upscaler by index or by name)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

SMALL = {"prompt": "a field", "width": 64, "height": 64, "steps": 2, "seed": 11, "denoising_strength": 0.6}


@pytest.fixture(scope="module")
def server(scripts_app):
    """The in-process app shared by the script API tests (tests/conftest.py)."""
    return scripts_app


def init_b64() -> str:
    pixels = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def unb64(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


@pytest.mark.parametrize("script, args, size", [
    ("SD upscale", ["", 16, "Lanczos", 2.0], (128, 128)),
    ("sd upscale", [None, 32, 2, 1.5], (96, 96)),
    ("Outpainting mk2", ["", 32, 0, ["left", "right"], 1.0, 0.05], (128, 64)),
    ("Poor man's outpainting", [32, 0, 1, ["down"]], (64, 128)),
])
def test_img2img_scripts_answer_with_the_grown_picture(server, script, args, size):
    _, client = server
    r = client.post("/sdapi/v1/img2img", json={**SMALL, "init_images": [init_b64()], "script_name": script, "script_args": args})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [unb64(i).size for i in body["images"]] == [size]
    info = json.loads(body["info"])
    assert info["seed"] == 11
    assert f"Size: {size[0]}x{size[1]}" in info["infotexts"][0]


@pytest.mark.parametrize("script, args, words", [
    ("SD upscale", ["", 16, 99, 2.0], ["argument 2", "upscaler_index"]),
    ("Outpainting mk2", ["", 32, 0, []], ["argument 3", "direction", "choose at least one"]),
    ("Poor man's outpainting", [32, 0, 9, ["left"]], ["argument 2", "inpainting_fill"]),
])
def test_bad_script_args_are_a_400_naming_the_argument(server, script, args, words):
    app, client = server
    before = len(app.queue.list())
    r = client.post("/sdapi/v1/img2img", json={**SMALL, "init_images": [init_b64()], "script_name": script, "script_args": args})
    assert r.status_code == 400, r.text
    for word in words:
        assert word in r.json()["detail"]
    assert len(app.queue.list()) == before
