"""X/Y/Z plot as an A1111 client drives it: the wiki's positional script_args on
/sdapi/v1/txt2img, the grid first, /script-info's argument list, and a bad value as a 400."""

from __future__ import annotations

import json

import pytest

from modules.outputs.infotext import parse_infotext

SMALL = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2, "seed": 11, "sampler_name": "Euler"}
WIKI_ARGS = [1, "10,20", [], 0, "", [], 0, "", [], True, True, False, False, 0, False]  # Seed axis, include sub images


@pytest.fixture(scope="module")
def client(scripts_app):
    """The in-process app shared by the script API tests (tests/conftest.py)."""
    return scripts_app[1]


def test_wiki_script_args_make_a_seed_plot_with_the_grid_first(client):
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "script_name": "x/y/z plot", "script_args": WIKI_ARGS})
    assert r.status_code == 200, r.text
    body = r.json()
    info = json.loads(body["info"])
    assert len(body["images"]) == 3 and info["index_of_first_image"] == 1
    texts = [parse_infotext(t) for t in info["infotexts"]]
    assert texts[0]["Script"] == "X/Y/Z plot" and texts[0]["X Type"] == "Seed" and texts[0]["X Values"] == "10,20"
    assert [t["Seed"] for t in texts[1:]] == ["10", "20"]


def test_script_info_lists_a1111s_arguments(client):
    scripts = client.get("/sdapi/v1/script-info").json()
    xyz = next(s for s in scripts if s["name"] == "x/y/z plot" and not s["is_img2img"])
    labels = [a["label"] for a in xyz["args"]]
    assert labels[:3] == ["X type", "X values", "X values"] and labels[9:] == [
        "Draw legend", "Include Sub Images", "Include Sub Grids", "Keep -1 for seeds", "Vary seeds for X", "Vary seeds for Y",
        "Vary seeds for Z", "Grid margins (px)", "Use text inputs instead of dropdowns"]
    assert xyz["args"][0]["choices"][:5] == ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps"]


def test_a_value_that_does_not_read_is_a_400_naming_it(client):
    args = [4, "2, lots", [], 0, "", [], 0, "", []]
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "script_name": "x/y/z plot", "script_args": args})
    assert r.status_code == 400 and "X values (Steps)" in r.text and "lots" in r.text
