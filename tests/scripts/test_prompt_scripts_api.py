"""Prompt matrix, prompts from file and loopback as an A1111 client drives them: positional
script_args on /sdapi/v1/txt2img and img2img, and the answer's images, info and infotexts."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from modules.outputs.infotext import parse_infotext

SMALL = {"width": 64, "height": 64, "steps": 2, "seed": 11, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def client(scripts_app):
    """The in-process app shared by the script API tests (tests/conftest.py)."""
    return scripts_app[1]


def _png_b64(colour=(90, 120, 200)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_prompts_from_file_reads_a1111s_four_script_args(client):
    lines = '--prompt "a cat" --steps 3 --seed 7\na dog'
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "", **SMALL, "script_name": "prompts from file or textbox",
                                               "script_args": [False, False, "start", lines]})
    assert r.status_code == 200, r.text
    body = r.json()
    info = json.loads(body["info"])
    texts = [parse_infotext(t) for t in info["infotexts"]]
    assert len(body["images"]) == 2 and info["index_of_first_image"] == 0
    assert [(t["Prompt"], t["Steps"], t["Seed"]) for t in texts] == [("a cat", "3", "7"), ("a dog", "2", "11")]


def test_a_bad_options_line_is_a_400_naming_the_line(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "", **SMALL, "script_name": "prompts from file or textbox",
                                               "script_args": [False, False, "start", "ok\n--steps many"]})
    assert r.status_code == 400 and "line 2: --steps needs a whole number" in r.text


def test_prompt_matrix_answers_the_grid_first(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat|red", **SMALL, "script_name": "prompt matrix",
                                               "script_args": [False, True, "positive", "comma", 0]})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert len(r.json()["images"]) == 3 and info["index_of_first_image"] == 1
    assert info["all_prompts"][1:] == ["a cat", "a cat, red"] and info["all_seeds"][1:] == [11, 12]


def test_loopback_over_img2img(client):
    r = client.post("/sdapi/v1/img2img", json={"prompt": "x", **SMALL, "init_images": [_png_b64()], "denoising_strength": 0.6,
                                               "script_name": "loopback", "script_args": [2, 0.4, "Linear", "None"]})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert len(r.json()["images"]) == 3 and info["index_of_first_image"] == 1
    assert [parse_infotext(t)["Denoising strength"] for t in info["infotexts"][1:]] == ["0.6", "0.4"]
