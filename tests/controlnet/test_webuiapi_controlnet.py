"""The `webuiapi` client from PyPI, unchanged, using ControlNet as it does against A1111 with
sd-webui-controlnet: `ControlNetUnit` on txt2img and img2img, `controlnet_detect`,
`controlnet_model_list`, `controlnet_module_list`, `controlnet_version`. The app is served
over real HTTP by uvicorn in a thread (the client speaks `requests`)."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
import webuiapi

from modules.demo import controlnet_eval
from modules.demo.embedded import REPO_ROOT
from tests.controlnet.api_data import FITS, WRONG_ARCH, controlnet_data_dir, is_outline, square
from tests.servers import free_port


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_checkpoint):
    import uvicorn

    import webui
    from modules.options import parse_args

    data = controlnet_data_dir(tmp_path_factory.mktemp("cn-webuiapi"), tiny_checkpoint)
    shutil.copytree(DEMO_CONTROLNET, data / "models" / "ControlNet" / DEMO_CONTROLNET.name)  # the shipped one, for the demo model
    args = parse_args(["--data-dir", str(data), "--api", "--nowebui", "--disable-console-progressbars"])
    app = webui.App.create(args)
    assert app.start(str(data / "models" / "Stable-diffusion" / tiny_checkpoint.name)).wait(120)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app.build_asgi(args), host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield webuiapi.WebUIApi(baseurl=f"http://127.0.0.1:{port}/sdapi/v1", sampler="Euler", steps=3)
    finally:
        server.should_exit = True
        thread.join(10)
        app.queue.shutdown()


DEMO_CONTROLNET = REPO_ROOT / "models" / "ControlNet" / "demo-shapes-canny"


@pytest.fixture(autouse=True)
def fresh_webuiapi_defaults():
    """webuiapi's txt2img/img2img share one `alwayson_scripts={}` default dict and write the
    ControlNet units into it, so every later call in this process would send them again (its
    own bug, as against A1111). Empty it after each test, so other tests' clients start clean."""
    yield
    for method in (webuiapi.WebUIApi.txt2img, webuiapi.WebUIApi.img2img):
        for default in method.__defaults__ or ():
            if isinstance(default, dict):
                default.clear()


def cn_unit(**kw) -> webuiapi.ControlNetUnit:
    return webuiapi.ControlNetUnit(**{"image": square(), "module": "canny", "model": FITS, "processor_res": 64, "threshold_a": 100,
                                      "threshold_b": 200, **kw})


def test_listing_calls(api):
    assert api.controlnet_version() == 3
    assert any(name.startswith(f"{FITS} [") for name in api.controlnet_model_list())
    assert "canny" in api.controlnet_module_list()


def test_controlnet_detect(api):
    reply = api.controlnet_detect(images=[square()], module="canny", processor_res=64, threshold_a=100, threshold_b=200)
    assert reply.info == "Success" and len(reply.images) == 1  # webuiapi decodes the pictures
    assert is_outline(np.asarray(reply.images[0].convert("L")))


def test_txt2img_with_controlnet_units(api):
    result = api.txt2img(prompt="a square", width=64, height=64, seed=5, cfg_scale=5, controlnet_units=[cn_unit()])
    assert len(result.images) == 2  # the picture, then the detected map (webuiapi's result.images holds both)
    assert result.images[0].size == (64, 64)
    assert is_outline(np.asarray(result.images[1].convert("L")))
    assert 'ControlNet 0: "Module: canny, Model: ' in result.info["infotexts"][0]
    two = api.txt2img(prompt="a square", width=64, height=64, seed=5, cfg_scale=5,
                      controlnet_units=[cn_unit(), cn_unit(module="invert", weight=0.5, control_mode=1)])
    assert len(two.images) == 3
    assert 'ControlNet 1: "Module: invert' in two.info["infotexts"][0] and "Control Mode: My prompt is more important" in two.info["infotexts"][0]


def test_img2img_with_a_controlnet_unit(api):
    result = api.img2img(images=[square(box=(30, 30, 60, 60))], prompt="a square", width=64, height=64, seed=5, denoising_strength=0.5,
                         controlnet_units=[cn_unit()])
    assert len(result.images) == 2 and result.images[0].size == (64, 64)


def test_bad_units_raise_with_the_servers_message(api):
    with pytest.raises(RuntimeError) as wrong:
        api.txt2img(prompt="x", width=64, height=64, controlnet_units=[cn_unit(model="nope")])
    assert wrong.value.args[0] == 400 and FITS in wrong.value.args[1]
    with pytest.raises(RuntimeError) as arch:
        api.txt2img(prompt="x", width=64, height=64, controlnet_units=[cn_unit(model=WRONG_ARCH)])
    assert arch.value.args[0] == 400 and "SDXL" in arch.value.args[1]
    assert api.controlnet_version() == 3  # still serving


def test_the_demo_controlnet_steers_through_webuiapi(api):
    """The shipped demo ControlNet on the demo model, asked for as a webuiapi user would (the
    checkpoint by override_settings): the square is drawn where the unit's edges are."""
    unit = webuiapi.ControlNetUnit(image=controlnet_eval.condition_picture(), module="canny", model="demo-shapes-canny",
                                   processor_res=64, threshold_a=100, threshold_b=200)
    result = api.txt2img(prompt="a red square on a blue background", width=64, height=64, steps=20, cfg_scale=5, sampler_name="DPM++ 2M",
                         seed=40, batch_size=4, controlnet_units=[unit], override_settings={"sd_model_checkpoint": "demo-shapes-64px"})
    assert len(result.images) == 5 and result.info["sd_model_name"] == "demo-shapes-64px"
    masks = [controlnet_eval.shape_mask(image.convert("RGB")) for image in result.images[:4]]
    assert sum(controlnet_eval.in_left_half(m) for m in masks) >= 3
    assert np.mean([controlnet_eval.iou(m, controlnet_eval.silhouette()) for m in masks]) >= 0.5
