"""/sdapi/v1/extra-single-image, /extra-batch-images and /upscalers: A1111's shapes, images
of the right size with their metadata, readable 400s, and a server that keeps serving."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import webui
from modules.options import parse_args
from tests.api.test_routes import b64, unb64

SOURCE_TEXT = "a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 24x16"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The API alone: extras need no checkpoint."""
    data = tmp_path_factory.mktemp("extras-api")
    args = parse_args(["--data-dir", str(data), "--nowebui", "--disable-console-progressbars"])
    app = webui.App.create(args)
    with TestClient(app.build_asgi(args)) as client:
        yield client, data
    app.queue.shutdown()


def with_params(size=(24, 16), colour=(10, 120, 200)) -> str:
    """A base64 PNG carrying generation parameters, as the API's clients send them back."""
    info = PngInfo()
    info.add_text("parameters", SOURCE_TEXT)
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode()


def test_single_image_scales_and_keeps_the_parameters(server):
    client, data = server
    r = client.post("/sdapi/v1/extra-single-image", json={"image": with_params(), "upscaling_resize": 2, "upscaler_1": "Nearest"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body["image"].startswith("data:")
    out = unb64(body["image"])
    assert out.format == "PNG" and out.size == (48, 32) and out.getpixel((40, 30)) == (10, 120, 200)
    assert out.info["parameters"] == SOURCE_TEXT
    assert out.info["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: Nearest"
    assert "Postprocess upscaler: Nearest" in body["html_info"]
    assert not (data / "outputs" / "extras-images").exists()  # A1111's API saves nothing unless asked


def test_scale_to_with_crop_and_saving_when_asked(server):
    client, data = server
    r = client.post("/sdapi/v1/extra-single-image", json={
        "image": b64(Image.new("RGB", (40, 20), (255, 0, 0)), prefix=True), "resize_mode": 1, "upscaling_resize_w": 30,
        "upscaling_resize_h": 30, "upscaling_crop": True, "upscaler_1": "Lanczos", "save_images": True, "gfpgan_visibility": 0,
    })
    assert r.status_code == 200, r.text
    assert unb64(r.json()["image"]).size == (30, 30)
    saved = sorted((data / "outputs" / "extras-images").iterdir())
    assert [p.name for p in saved] == ["00000.png"]
    assert Image.open(saved[0]).info["postprocessing"] == "Postprocess upscale to: 30x30, Postprocess crop to: 30x30, Postprocess upscaler: Lanczos"


def test_batch_images(server):
    client, _ = server
    r = client.post("/sdapi/v1/extra-batch-images", json={
        "imageList": [{"data": with_params(), "name": "a.png"}, {"data": b64(Image.new("RGB", (10, 10))), "name": "b.png"}],
        "upscaling_resize": 1.5, "upscaler_1": "Lanczos", "upscaler_2": "Nearest", "extras_upscaler_2_visibility": 0.3,
    })
    assert r.status_code == 200, r.text
    images = [unb64(i) for i in r.json()["images"]]
    assert [i.size for i in images] == [(36, 24), (15, 15)]
    assert images[0].info["parameters"] == SOURCE_TEXT and "parameters" not in images[1].info
    assert "Postprocess upscaler 2: Nearest" in images[1].info["postprocessing"]
    assert client.post("/sdapi/v1/extra-batch-images", json={"imageList": []}).json() == {"images": [], "html_info": ""}


@pytest.mark.parametrize(
    "route, body, message",
    [
        ("extra-single-image", {"image": "!!!not base64!!!"}, "image is not"),
        ("extra-single-image", {"image": ""}, "image is empty"),
        ("extra-single-image", {"image": "aGVsbG8="}, "image is not an image that can be read"),
        ("extra-single-image", {"image": "TINY", "upscaler_1": "ESRGAN_4x"}, "Upscaler 1 'ESRGAN_4x' not found. Choose one of: None, Lanczos, Nearest."),
        ("extra-single-image", {"image": "TINY", "upscaling_resize": 8, "upscaler_1": "Lanczos"}, "The result would be 8800x80"),
        ("extra-single-image", {"image": "TINY", "resize_mode": 1, "upscaling_resize_w": 10000}, "Width: Input should be less than or equal to 8192"),
        ("extra-single-image", {"image": "TINY", "upscaling_resize": -1}, "Resize: Input should be greater than 0"),
        ("extra-batch-images", {"imageList": [{"data": "TINY", "name": "ok.png"}, {"data": "@@@", "name": "bad.png"}]}, "imageList[1]"),
    ],
)
def test_bad_requests_get_400_and_the_server_keeps_serving(server, route, body, message):
    client, _ = server
    wide = b64(Image.new("RGB", (1100, 10)))
    body = {k: (wide if v == "TINY" else v) for k, v in body.items()}
    if "imageList" in body:
        body["imageList"] = [{**item, "data": wide if item["data"] == "TINY" else item["data"]} for item in body["imageList"]]
    r = client.post(f"/sdapi/v1/{route}", json=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["detail"]
    ok = client.post("/sdapi/v1/extra-single-image", json={"image": b64(Image.new("RGB", (8, 8))), "upscaler_1": "Lanczos"})
    assert ok.status_code == 200 and unb64(ok.json()["image"]).size == (16, 16)


def test_upscalers_lists_what_is_usable(server):
    client, _ = server
    listed = client.get("/sdapi/v1/upscalers").json()
    assert [u["name"] for u in listed] == ["None", "Lanczos", "Nearest"]
    assert set(listed[0]) == {"name", "model_name", "model_path", "model_url", "scale"}
