"""The ControlNet extension's API on this server, in-process: its /controlnet/* routes and
`alwayson_scripts.controlnet` on txt2img and img2img, with the extension's shapes, the
detected maps after the pictures, the `ControlNet N` infotext, and a readable 4xx for each kind
of bad input while the server keeps serving."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modules.controlnet.models import legacy_model_hash
from modules.controlnet.units import UnitSettings, infotext_value
from modules.outputs.infotext import parse_infotext
from modules.outputs.paste import params_from_infotext
from tests.controlnet.api_data import FITS, WRONG_ARCH, b64, controlnet_data_dir, is_outline, square, unb64
from tests.servers import in_process_api, in_process_app

SMALL = {"width": 64, "height": 64, "steps": 3, "seed": 11, "cfg_scale": 5, "sampler_name": "Euler"}
# A canny unit as webuiapi's ControlNetUnit.to_dict() sends it (its defaults, our picture and model)
UNIT = {"image": "", "mask": None, "module": "canny", "model": FITS, "weight": 1.0, "resize_mode": "Resize and Fill", "low_vram": False,
        "processor_res": 64, "threshold_a": 100, "threshold_b": 200, "guidance_start": 0.0, "guidance_end": 1.0,
        "control_mode": "Balanced", "pixel_perfect": False, "hr_option": "Both", "enabled": True}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    data = controlnet_data_dir(tmp_path_factory.mktemp("cn-api"), tiny_checkpoint)
    ckpt = data / "models" / "Stable-diffusion" / tiny_checkpoint.name
    with in_process_app(data, "--api", "--nowebui", "--disable-console-progressbars", checkpoint=ckpt) as (app, client):
        yield app, client, data


def unit(**changes) -> dict:
    return {**UNIT, "image": b64(square()), **changes}


def txt2img(client, *units, route="/sdapi/v1/txt2img", **extra):
    return client.post(route, json={"prompt": "a square", **SMALL, **extra, "alwayson_scripts": {"controlnet": {"args": list(units)}}})


def fits_name(data) -> str:
    return f"{FITS} [{legacy_model_hash(data / 'models' / 'ControlNet' / f'{FITS}.safetensors')}]"


def still_serving(client) -> None:
    assert client.get("/controlnet/version").json() == {"version": 3}
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL}).status_code == 200


# ---------------------------------------------------------------- /controlnet/* routes


def test_listing_routes_have_the_extensions_shapes(server):
    _, client, data = server
    assert client.get("/controlnet/version").json() == {"version": 3}
    models = client.get("/controlnet/model_list").json()["model_list"]
    assert fits_name(data) in models and any(m.startswith(f"{WRONG_ARCH} [") for m in models) and "None" not in models
    assert client.get("/controlnet/model_list", params={"update": "false"}).json()["model_list"] == models
    modules = client.get("/controlnet/module_list").json()
    assert modules["module_list"][0] == "none" and "canny" in modules["module_list"]
    sliders = modules["module_detail"]["canny"]["sliders"]
    assert [s["name"] for s in sliders] == ["Resolution", "Low Threshold", "High Threshold"]
    assert {"value", "min", "max", "step"} <= set(sliders[0])
    labels = client.get("/controlnet/module_list", params={"alias_names": "true"}).json()["module_list"]
    assert len(labels) == len(modules["module_list"]) and "canny" in labels
    types = client.get("/controlnet/control_types").json()["control_types"]
    assert set(types["Canny"]) == {"module_list", "model_list", "default_option", "default_model"}
    assert "canny" in types["Canny"]["module_list"] and fits_name(data) in types["Canny"]["model_list"]
    assert client.get("/controlnet/settings").json() == {"control_net_unit_count": 3}


def test_detect_returns_the_canny_map(server):
    _, client, _ = server
    r = client.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": [b64(square()), b64(square(box=(40, 8, 56, 24)))],
                                                "controlnet_processor_res": 64, "controlnet_threshold_a": 100, "controlnet_threshold_b": 200})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["info"] == "Success" and len(body["images"]) == 2
    edges = np.asarray(unb64(body["images"][0]).convert("L"))
    assert edges.shape == (64, 64) and is_outline(edges)
    assert is_outline(np.asarray(unb64(body["images"][1]).convert("L")), (40, 8, 56, 24))  # each picture its own map


def test_detect_refusals_in_the_extensions_codes(server):
    _, client, _ = server
    r = client.post("/controlnet/detect", json={"controlnet_module": "cannny", "controlnet_input_images": [b64(square())]})
    assert r.status_code == 422 and "Module not available" in r.json()["detail"] and "canny" in r.json()["detail"]
    r = client.post("/controlnet/detect", json={"controlnet_module": "canny"})
    assert r.status_code == 422 and "No image selected" in r.json()["detail"]
    r = client.post("/controlnet/detect", json={"controlnet_module": "inpaint_only", "controlnet_input_images": [b64(square())]})
    assert r.status_code == 422 and "controlnet_masks" in r.json()["detail"]
    r = client.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": ["bm90IGFuIGltYWdl"]})
    assert r.status_code == 400 and "controlnet_input_images[0]" in r.json()["detail"]
    r = client.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": [b64(square())],
                                                "controlnet_processor_res": 100_000})
    assert r.status_code == 400 and "controlnet_processor_res" in r.json()["detail"]
    r = client.post("/controlnet/detect", json={"controlnet_module": "depth", "controlnet_input_images": [b64(square())]})
    assert r.status_code == 400 and "annotator weights" in r.json()["detail"] and "ControlNetPreprocessor" in r.json()["detail"]
    still_serving(client)


def test_webuiapi_detect_field_name_and_an_inpaint_mask(server):
    """webuiapi's controlnet_detect names the list `controlnet_images`; masks go with inpaint."""
    _, client, _ = server
    r = client.post("/controlnet/detect", json={"controlnet_module": "invert", "controlnet_images": [b64(square())]})
    assert r.status_code == 200, r.text
    assert unb64(r.json()["images"][0]).convert("RGB").getpixel((20, 30)) == (0, 0, 0)  # the white square, inverted
    mask = square(box=(0, 0, 31, 63)).convert("L")
    r = client.post("/controlnet/detect", json={"controlnet_module": "inpaint_only", "controlnet_input_images": [b64(square())],
                                                "controlnet_masks": [b64(mask)]})
    assert r.status_code == 200, r.text
    assert unb64(r.json()["images"][0]).size == (64, 64)


# ---------------------------------------------------------------- units on txt2img / img2img


def test_txt2img_with_a_unit_appends_its_map_and_writes_the_infotext(server):
    _, client, data = server
    plain = client.post("/sdapi/v1/txt2img", json={"prompt": "a square", **SMALL}).json()
    r = txt2img(client, unit())
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["images"]) == 2  # the picture, then the unit's detected map
    picture, detected = unb64(body["images"][0]), unb64(body["images"][1])
    assert picture.size == detected.size == (64, 64)
    assert is_outline(np.asarray(detected.convert("L")))
    assert np.abs(np.asarray(picture.convert("RGB"), dtype=int) - np.asarray(unb64(plain["images"][0]).convert("RGB"), dtype=int)).max() > 0
    info = json.loads(body["info"])
    assert len(info["infotexts"]) == 1  # the map is no generated picture
    written = parse_infotext(info["infotexts"][0])["ControlNet 0"]
    model = written.split(", ")[1].removeprefix("Model: ")
    assert model in (FITS, fits_name(data))  # as sent (the extension) or with its hash
    assert written == infotext_value(UnitSettings(module="canny", model=model, resize_mode="Resize and Fill", processor_res=64,
                                                  threshold_a=100, threshold_b=200))
    assert f'ControlNet 0: "{written}"' in info["infotexts"][0]  # quoted, as A1111 writes a value with commas
    # PNG Info reads it from the picture, and paste gives the unit's settings back
    text = client.post("/sdapi/v1/png-info", json={"image": body["images"][0]}).json()["info"]
    back = params_from_infotext(text).controlnet[0]
    assert (back.module, back.model, back.resize_mode, back.processor_res, back.threshold_a) == ("canny", model, "Resize and Fill", 64, 100.0)


def test_disabled_and_unmapped_units(server):
    app, client, _ = server
    r = txt2img(client, {**unit(), "enabled": False}, unit(save_detected_map=False))
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["images"]) == 1  # unit 0 off, unit 1 keeps its map to itself
    text = json.loads(body["info"])["infotexts"][0]
    assert "ControlNet 1: " in text and "ControlNet 0: " not in text
    app.settings.update({"control_net_no_detectmap": True})
    try:
        assert len(txt2img(client, unit()).json()["images"]) == 1
    finally:
        app.settings.update({"control_net_no_detectmap": False})
    assert len(txt2img(client, unit(), send_images=False).json()["images"]) == 0


def test_title_in_any_case_and_the_queue_route(server):
    _, client, _ = server
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a square", **SMALL, "alwayson_scripts": {"ControlNet": {"args": [unit()]}}})
    assert r.status_code == 200 and len(r.json()["images"]) == 2
    queued = txt2img(client, unit(), route="/sdapi/v1/queue/txt2img")
    assert queued.status_code == 200, queued.text
    job = queued.json()["id"]
    status = {}
    for _ in range(600):
        status = client.get(f"/sdapi/v1/queue/{job}").json()
        if status["status"] in ("done", "failed"):
            break
        import time

        time.sleep(0.1)
    assert status["status"] == "done", status
    assert len(status["result"]["images"]) == 2


@pytest.mark.parametrize("form", ["data-url", "image-and-mask-object", "pair", "input_image-alias"])
def test_the_extensions_picture_forms(server, form):
    _, client, _ = server
    picture, mask = b64(square()), b64(square(box=(0, 0, 63, 63)).convert("L"))
    fields = {"data-url": {"image": "data:image/png;base64," + picture}, "image-and-mask-object": {"image": {"image": picture, "mask": mask}},
              "pair": {"image": [picture, mask]}, "input_image-alias": {"image": None, "input_image": picture}}[form]
    r = txt2img(client, {**UNIT, **fields})
    assert r.status_code == 200, r.text
    assert is_outline(np.asarray(unb64(r.json()["images"][1]).convert("L")))


def test_the_photoshop_plugins_payload(server):
    """Auto-Photoshop-StableDiffusion-Plugin sends every unit (the off ones with empty pictures),
    the extension's old names (input_image, lowvram) and a copy in a top-level controlnet_units."""
    _, client, _ = server
    units = [{"enabled": True, "input_image": b64(square()), "mask": "", "module": "canny", "model": FITS, "weight": 1, "resize_mode": "Crop and Resize",
              "lowvram": False, "processor_res": 64, "threshold_a": 100, "threshold_b": 200, "guidance_start": 0, "guidance_end": 1,
              "control_mode": 0, "pixel_perfect": False}]
    units += [{"enabled": False, "input_image": "", "mask": "", "module": "none", "model": "None", "weight": 1, "resize_mode": "Crop and Resize",
               "lowvram": False, "processor_res": 512, "threshold_a": None, "threshold_b": None, "guidance_start": 0, "guidance_end": 1,
               "control_mode": 0, "pixel_perfect": False} for _ in range(2)]
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a square", **SMALL, "controlnet_units": units, "subseed": -1, "override_settings": {},
                                               "alwayson_scripts": {"controlnet": {"args": units}}})
    assert r.status_code == 200, r.text
    assert len(r.json()["images"]) == 2 and is_outline(np.asarray(unb64(r.json()["images"][1]).convert("L")))


def test_img2img_unit_takes_the_init_image(server):
    _, client, _ = server
    body = {"prompt": "a square", **SMALL, "denoising_strength": 0.6, "init_images": [b64(square(box=(30, 30, 60, 60)))],
            "alwayson_scripts": {"controlnet": {"args": [{**UNIT, "image": None}]}}}
    r = client.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    assert len(images) == 2
    assert is_outline(np.asarray(unb64(images[1]).convert("L")), (30, 30, 60, 60))  # the init picture's square


@pytest.mark.parametrize(("change", "status", "words"), [
    ({"model": "no-such-controlnet"}, 400, ("no-such-controlnet", FITS)),
    ({"module": "cannny"}, 400, ("cannny", "canny")),
    ({"image": ""}, 400, ("ControlNet", "image")),
    ({"image": "bm90IGFuIGltYWdl"}, 400, ("ControlNet unit 0 image",)),
    ({"weight": 5}, 400, ("weight",)),
    ({"guidance_start": 0.8, "guidance_end": 0.2}, 400, ("Starting Control Step",)),
    ({"resize_mode": "Stretch"}, 400, ("resize_mode", "Crop and Resize")),
    ({"model": WRONG_ARCH}, 400, ("SDXL", "SD 1.x")),
])
def test_bad_units_are_a_readable_4xx(server, change, status, words):
    _, client, _ = server
    r = txt2img(client, unit(**change))
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    for word in words:
        assert word in detail, detail
    still_serving(client)


def test_other_alwayson_scripts_are_still_refused(server):
    _, client, _ = server
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, "alwayson_scripts": {"controlnet": {"args": [unit()]}, "ADetailer": {"args": []}}})
    assert r.status_code == 422 and "ADetailer" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, "alwayson_scripts": {"controlnet": {"args": []}, "ControlNet": {"args": []}}})
    assert r.status_code == 400 and "twice" in r.json()["detail"]


def test_scripts_lists_controlnet(server):
    _, client, _ = server
    scripts = client.get("/sdapi/v1/scripts").json()
    assert "controlnet" in scripts["txt2img"] and "controlnet" in scripts["img2img"]


def test_api_infotext_field_leaves_units_to_alwayson_scripts(server):
    """As A1111, the request's `infotext` does not make ControlNet units; the answer says so."""
    _, client, _ = server
    text = 'a cat\nSteps: 3, Seed: 5, Size: 64x64, ControlNet 0: "Module: canny, Model: None, Weight: 1.0"'
    r = client.post("/sdapi/v1/txt2img", json={"infotext": text, "width": 64, "height": 64})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["images"]) == 1 and "ControlNet" not in json.loads(body["info"])["infotexts"][0]
    assert any("ControlNet 0" in w for w in json.loads(body["info"])["warnings"])


def test_routes_sit_behind_the_api_log_in(tmp_path):
    with in_process_api(tmp_path, "--api", "--nowebui", "--api-auth", "alice:secret") as client:
        for path in ("/controlnet/version", "/controlnet/model_list", "/controlnet/module_list", "/controlnet/settings"):
            assert client.get(path).status_code == 401, path
        assert client.post("/controlnet/detect", json={}).status_code == 401
        assert client.get("/controlnet/version", auth=("alice", "secret")).json() == {"version": 3}


def test_info_reports_the_units_in_extra_generation_params_as_a1111(server):
    _, client, _ = server
    r = txt2img(client, unit())
    assert r.status_code == 200, r.text
    extra = json.loads(r.json()["info"])["extra_generation_params"]
    assert extra["ControlNet 0"].startswith("Module: canny, Model: ")
