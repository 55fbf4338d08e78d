"""The shipped demo ControlNet as a user reaches it: the A1111 API with the extension's
`alwayson_scripts.controlnet` unit, on a server holding the demo model and
models/ControlNet/demo-shapes-canny, steers where the shape is drawn."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from modules.demo import controlnet_eval
from modules.demo.controlnet_training import canny_map
from modules.demo.embedded import EMBEDDED_PATH, REPO_ROOT
from tests.controlnet.api_data import b64, unb64
from tests.servers import in_process_app

FOLDER = REPO_ROOT / "models" / "ControlNet" / "demo-shapes-canny"
REQUEST = {"prompt": "a red square on a blue background", "negative_prompt": "", "width": 64, "height": 64, "steps": 20,
           "cfg_scale": 5, "sampler_name": "DPM++ 2M", "seed": 40, "batch_size": 8}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("cn-demo")
    checkpoints = data / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    (checkpoints / EMBEDDED_PATH.name).symlink_to(EMBEDDED_PATH)
    shutil.copytree(FOLDER, data / "models" / "ControlNet" / FOLDER.name)
    with in_process_app(data, "--api", "--nowebui", "--disable-console-progressbars",
                        checkpoint=checkpoints / EMBEDDED_PATH.name) as (_, client):
        yield client


def readings(images) -> tuple[float, float]:
    """Share of pictures whose shape lies in the left half, and their mean IoU with the square."""
    masks = [controlnet_eval.shape_mask(image) for image in images]
    target = controlnet_eval.silhouette()
    return (float(np.mean([controlnet_eval.in_left_half(m) for m in masks])),
            float(np.mean([controlnet_eval.iou(m, target) for m in masks])))


def test_a_canny_unit_through_the_api_puts_the_square_where_its_edges_are(server):
    condition = controlnet_eval.condition_picture()  # a white square in the left half, on black
    unit = {"image": b64(condition), "module": "canny", "model": "demo-shapes-canny", "weight": 1.0,
            "processor_res": 64, "threshold_a": 100, "threshold_b": 200, "pixel_perfect": False}
    steered = server.post("/sdapi/v1/txt2img", json={**REQUEST, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    plain = server.post("/sdapi/v1/txt2img", json=REQUEST)
    assert steered.status_code == 200, steered.text
    assert plain.status_code == 200, plain.text
    images = [unb64(i).convert("RGB") for i in steered.json()["images"]]
    assert len(images) == REQUEST["batch_size"] + 1  # the detected map comes after the pictures, as the extension sends it
    assert np.array_equal(np.asarray(images[-1]), canny_map(np.asarray(condition)))
    left, iou = readings(images[:-1])
    left_plain, iou_plain = readings(unb64(i).convert("RGB") for i in plain.json()["images"])
    print(f"left half {left:.0%} (without {left_plain:.0%}), IoU {iou:.2f} (without {iou_plain:.2f})")
    assert left >= 7 / 8 and iou >= 0.5
    assert iou > iou_plain + 0.2
    info = json.loads(steered.json()["info"])
    assert 'ControlNet 0: "Module: canny, Model: demo-shapes-canny [' in info["infotexts"][0]
