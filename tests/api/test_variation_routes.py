"""Variation seeds, seed resize and tiling through /sdapi/v1/txt2img as A1111's clients send
them: the infotext keys, the info fields, and the infotext pasted back into the same request."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from modules.outputs.paste import params_from_infotext
from tests.servers import data_dir_with_tiny_model, in_process_app

SMALL = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 3, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_checkpoint):
    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("api-variation"), tiny_checkpoint)
    with in_process_app(data, "--api", "--nowebui", "--disable-console-progressbars",
                        checkpoint=data / "models" / "Stable-diffusion" / tiny_checkpoint.name) as (_, test_client):
        yield test_client


def txt2img(client, **body) -> tuple[list[Image.Image], dict]:
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, **body})
    assert r.status_code == 200, r.text
    data = r.json()
    return [Image.open(io.BytesIO(base64.b64decode(i))) for i in data["images"]], json.loads(data["info"])


def test_variation_seed_infotext_info_and_paste_back(client):
    body = {"seed": 8, "subseed": 300, "subseed_strength": 0.4, "seed_resize_from_w": 64, "seed_resize_from_h": 48, "tiling": True,
            "batch_size": 2}
    images, info = txt2img(client, **body)
    assert (info["seed"], info["all_seeds"]) == (8, [8, 8])  # A1111 keeps the seed and counts the variation seed up
    assert (info["subseed"], info["all_subseeds"], info["subseed_strength"]) == (300, [300, 301], 0.4)
    assert (info["seed_resize_from_w"], info["seed_resize_from_h"]) == (64, 48)
    text = images[1].info["parameters"]
    assert "Seed: 8, Size: 64x64" in text
    assert "Variation seed: 301, Variation seed strength: 0.4, Seed resize from: 64x48" in text and "Tiling: True" in text
    assert info["infotexts"][1] == text

    pasted = params_from_infotext(text)
    assert not pasted.skipped
    expected = {"seed": 8, "subseed": 301, "subseed_strength": 0.4, "seed_resize_from_w": 64, "seed_resize_from_h": 48, "tiling": True}
    assert {k: pasted.values[k] for k in expected} == expected
    r = client.post("/sdapi/v1/txt2img", json={"infotext": text})  # A1111's infotext field: the pasted picture made again
    assert r.status_code == 200, r.text
    again = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    assert again.info["parameters"] == text
    assert np.abs(np.asarray(again, dtype=np.int16) - np.asarray(images[1], dtype=np.int16)).max() <= 1  # alone, not in a batch


def test_a1111_defaults_mean_off(client):
    [image], info = txt2img(client, seed=8, subseed=-1, subseed_strength=0, seed_resize_from_w=-1, seed_resize_from_h=-1, tiling=False)
    assert info["subseed"] >= 0 and info["all_subseeds"] == [info["subseed"]] and info["subseed_strength"] == 0
    assert (info["seed_resize_from_w"], info["seed_resize_from_h"]) == (-1, -1)
    text = image.info["parameters"]
    assert not any(key in text for key in ("Variation seed", "Seed resize from", "Tiling"))
    [plain], _ = txt2img(client, seed=8)
    assert np.array_equal(np.asarray(image), np.asarray(plain))


def test_a_variation_strength_out_of_range_is_refused(client):
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "subseed_strength": 2})
    assert r.status_code == 400 and "Variation strength" in r.json()["detail"]
