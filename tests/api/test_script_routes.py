"""A1111's script API: script_name / script_args on txt2img and img2img, /scripts and
/script-info, and the errors a client gets for a script it cannot have or arguments that
do not read."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

SMALL = {"width": 64, "height": 64, "steps": 2, "seed": 11, "sampler_name": "Euler"}
TXT2IMG_SCRIPTS = ["prompt matrix", "prompts from file or textbox", "x/y/z plot"]
IMG2IMG_SCRIPTS = [*TXT2IMG_SCRIPTS, "loopback", "outpainting mk2", "poor man's outpainting", "sd upscale"]


@pytest.fixture(scope="module")
def server(scripts_app):
    """The in-process app shared by the script API tests (tests/conftest.py)."""
    return scripts_app


def unb64(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def png_b64(size=(64, 64), colour=(90, 120, 200)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_scripts_lists_a1111s_names_per_tab(server):
    _, client = server
    listed = client.get("/sdapi/v1/scripts").json()
    assert [name for name in listed["txt2img"] if name != "controlnet"] == TXT2IMG_SCRIPTS
    assert sorted(name for name in listed["img2img"] if name != "controlnet") == sorted(IMG2IMG_SCRIPTS)


def test_script_info_gives_each_scripts_arguments_in_script_args_order(server):
    _, client = server
    info = client.get("/sdapi/v1/script-info").json()
    xyz = next(s for s in info if s["name"] == "x/y/z plot" and not s["is_img2img"])
    assert xyz["is_alwayson"] is False
    labels = [a["label"] for a in xyz["args"]]
    assert labels[0] == "X type" and labels[1] == "X values" and "Draw legend" in labels
    assert xyz["args"][0]["choices"][:5] == ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps"]
    assert {"label", "value", "minimum", "maximum", "step", "choices"} <= set(xyz["args"][0])
    assert any(s["name"] == "sd upscale" and s["is_img2img"] for s in info)
    assert not any(s["name"] == "sd upscale" and not s["is_img2img"] for s in info)


@pytest.mark.parametrize("body, words", [
    ({"script_name": "Nope"}, ["Script 'Nope' not found for txt2img", "'x/y/z plot'"]),
    ({"script_name": "loopback"}, ["'Loopback' is for the other tab"]),
    ({"script_name": "x/y/z plot", "script_args": [4, "2,zz", []]}, ["X values", "zz"]),
    ({"script_name": "x/y/z plot", "script_args": [99]}, ["argument 0", "X type"]),
    ({"script_name": "x/y/z plot", "script_args": [4, "1-20", [], 6, "1-30", []]}, ["would queue 600 jobs", "script_max_jobs"]),
])
def test_bad_script_requests_are_refused_with_a_message_and_queue_nothing(server, body, words):
    app, client = server
    before = len(app.queue.list())
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, **body})
    assert r.status_code == 400, r.text
    for word in words:
        assert word in r.json()["detail"]
    assert len(app.queue.list()) == before
    assert client.get("/sdapi/v1/progress").status_code == 200


def test_a_script_is_refused_on_the_queue_routes(server):
    _, client = server
    r = client.post("/sdapi/v1/queue/txt2img", json={"prompt": "x", **SMALL, "script_name": "x/y/z plot"})
    assert r.status_code == 422 and "/sdapi/v1/txt2img" in r.json()["detail"]


def test_xyz_over_the_api_returns_the_grid_first_then_the_cells(server):
    """The argument list A1111's API wiki shows for X/Y/Z (15 values, the order before the
    vary-seeds options), with Steps and CFG Scale axes."""
    _, client = server
    args = [4, "2,3", [], 6, "5,7", [], 0, "", [], True, True, False, False, 0, False]
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", **SMALL, "script_name": "x/y/z plot", "script_args": args})
    assert r.status_code == 200, r.text
    body = r.json()
    info = __import__("json").loads(body["info"])
    images = [unb64(i) for i in body["images"]]
    assert info["index_of_first_image"] == 1 and len(images) == 5
    grid, cells = images[0], images[1:]
    assert grid.width > 2 * 64 and grid.height > 2 * 64
    assert [c.size for c in cells] == [(64, 64)] * 4
    texts = info["infotexts"][1:]
    assert ["Steps: 2," in t and "CFG scale: 5," in t for t in texts].count(True) == 1
    assert ["Steps: 3," in t and "CFG scale: 7," in t for t in texts].count(True) == 1
    assert "parameters" in grid.info
