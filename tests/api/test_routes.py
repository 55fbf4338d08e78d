"""The /sdapi/v1 routes in-process: A1111's shapes and defaults, readable 4xx for bad input,
and a server that keeps serving after each of them."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

import webui
from modules.options import parse_args
from tests.servers import data_dir_with_tiny_model, in_process_app


def b64(image: Image.Image, prefix: bool = False) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    text = base64.b64encode(buffer.getvalue()).decode()
    return f"data:image/png;base64,{text}" if prefix else text


def unb64(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


SMALL = {"width": 64, "height": 64, "steps": 3}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    """The app with --api on the tiny model (the demo model ships too, for switching)."""
    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("api-data"), tiny_checkpoint)
    ckpts = data / "models" / "Stable-diffusion"
    with in_process_app(data, "--api", "--nowebui", "--disable-console-progressbars", checkpoint=ckpts / tiny_checkpoint.name) as (_, client):
        yield client, data


def saved(data) -> list:
    return sorted((data / "outputs").rglob("*.*"))


def test_txt2img_with_a1111_api_defaults_saves_nothing(server):
    client, data = server
    before = saved(data)
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "seed": 5, "batch_size": 2, **SMALL})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["images"]) == 2 and body["parameters"]["prompt"] == "a cat"
    image = unb64(body["images"][0])
    assert image.size == (64, 64)
    assert image.info["parameters"].startswith("a cat\nSteps: 3, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 5, Size: 64x64")
    info = json.loads(body["info"])
    assert (info["seed"], info["all_seeds"], info["sampler_name"], info["steps"]) == (5, [5, 6], "Euler", 3)
    assert len(info["infotexts"]) == 2 and "Seed: 6" in info["infotexts"][1]
    assert saved(data) == before  # save_images defaults to false on the API
    assert "x-process-time" in r.headers


def test_save_images_nulls_and_legacy_sampler_names(server):
    client, data = server
    before = set(saved(data))
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "p", "seed": 1, "sampler_name": "DPM++ 2M Karras", "cfg_scale": None, "scheduler": None,
                                                "save_images": True, "styles": None, **SMALL})
    assert r.status_code == 200, r.text
    [new] = sorted(set(saved(data)) - before)
    assert new.parent.parent.name == "txt2img-images" and new.name.endswith("-1.png")
    assert "Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7," in Image.open(new).info["parameters"]


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"prompt": "x", "sampler_name": "Nope", **SMALL}, 400, "Sampler not found: 'Nope'"),
        ({"prompt": "x", "width": 63, "height": 64, "steps": 2}, 400, "Width: must be a multiple of 8 from 64 to 2048, got 63"),
        ({"prompt": "x", "width": 4096, "height": 64, "steps": 2}, 400, "Width: must be a multiple of 8 from 64 to 2048, got 4096"),
        ({"prompt": "x", "width": 64, "height": 64, "steps": -3}, 400, "Sampling steps"),
        ({"prompt": "x", "n_iter": 1000, **SMALL}, 400, "Batch count"),
        ({"prompt": "x", "batch_size": 9, **SMALL}, 400, "Batch size"),
        ({"prompt": "x", "script_name": "my plot", **SMALL}, 400, "Script 'my plot' not found for txt2img. Scripts for txt2img: "),
        ({"prompt": "x", "subseed_strength": 1.5, **SMALL}, 400, "Variation strength"),
        ({"prompt": "x", "steps": "many"}, 422, "steps"),
        ({"prompt": "x", "override_settings": {"sd_model_checkpoint": "missing-model"}, **SMALL}, 400, "Checkpoint not found: 'missing-model'"),
        ({"prompt": "x", "override_settings": {"sd_model_checkpoint": 123}, **SMALL}, 400, "sd_model_checkpoint must be a checkpoint title"),
        ({"prompt": "x", "override_settings": {"CLIP_stop_at_last_layers": [1]}, **SMALL}, 400, "CLIP_stop_at_last_layers must be a whole number"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(server, body, status, message):
    client, _ = server
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert client.get("/sdapi/v1/progress").status_code == 200  # still serving


def test_fractional_numbers_are_truncated_and_sizes_rounded_down_as_a1111_does(server):
    """Open WebUI sends 100x100; other clients send 7.5 for whole-number fields. A1111 takes both."""
    client, _ = server
    body = {"prompt": "x", "seed": 4.9, "width": 100, "height": 70, "steps": 3.7, "enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 2.5}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    image = unb64(r.json()["images"][0])
    assert image.size == (144, 96)  # 96x64, then hires x1.5
    text = image.info["parameters"]
    assert "Steps: 3," in text and "Seed: 4," in text and "Size: 96x64" in text and "Hires steps: 2," in text
    info = json.loads(r.json()["info"])
    assert info["warnings"] == ["Width 100 was rounded down to 96, a multiple of 8.", "Height 70 was rounded down to 64, a multiple of 8."]
    assert r.json()["parameters"]["width"] == 100  # the echo is what was sent, as A1111's
    up = client.post("/sdapi/v1/extra-single-image", json={"image": r.json()["images"][0], "resize_mode": 1.0, "upscaling_resize_w": 151.68,
                                                           "upscaling_resize_h": 99.9, "upscaler_1": "Lanczos", "upscaling_crop": False})
    assert up.status_code == 200, up.text
    assert unb64(up.json()["image"]).size == (151, 99)


def test_malformed_json_and_bad_images(server):
    client, _ = server
    r = client.post("/sdapi/v1/txt2img", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"]
    r = client.post("/sdapi/v1/img2img", json={"prompt": "x", **SMALL})
    assert r.status_code == 404 and r.json()["detail"] == "Init image not found"
    r = client.post("/sdapi/v1/img2img", json={"init_images": ["!!!not base64!!!"], **SMALL})
    assert r.status_code == 400 and "init_images[0]" in r.json()["detail"]
    r = client.post("/sdapi/v1/img2img", json={"init_images": [base64.b64encode(b"plain text").decode()], **SMALL})
    assert r.status_code == 400 and "not an image" in r.json()["detail"]
    r = client.post("/sdapi/v1/img2img", json={"init_images": [b64(Image.new("RGB", (64, 64)))], "denoising_strength": 2, **SMALL})
    assert r.status_code == 400 and "Denoising strength" in r.json()["detail"]
    r = client.post("/sdapi/v1/png-info", json={"image": "@@@"})
    assert r.status_code == 400


def test_img2img_with_a_mask_and_data_urls(server):
    client, _ = server
    init = Image.new("RGB", (64, 64), (30, 60, 200))
    ImageDraw.Draw(init).ellipse((16, 16, 48, 48), fill=(200, 30, 30))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((24, 24, 40, 40), fill=255)
    r = client.post("/sdapi/v1/img2img", json={
        "init_images": [b64(init, prefix=True)], "mask": b64(mask, prefix=True), "prompt": "x", "seed": 3, "inpaint_full_res": False,
        "mask_blur": 2, **SMALL,
    })
    assert r.status_code == 200, r.text
    out = unb64(r.json()["images"][0]).convert("RGB")
    text = out.info.get("parameters") or unb64(r.json()["images"][0]).info["parameters"]
    assert "Denoising strength: 0.75, Mask blur: 2, Masked content: fill," in text  # the API's default is "fill"
    assert r.json()["parameters"]["init_images"] is None and r.json()["parameters"]["mask"] is None  # not echoed unless include_init_images
    assert out.getpixel((2, 2)) == init.getpixel((2, 2))  # far from the mask: untouched


def test_lists_options_and_switching_models(server):
    client, data = server
    models = client.get("/sdapi/v1/sd-models").json()
    titles = [m["title"] for m in models]
    assert any(t.startswith("tiny-test-model-random.safetensors") for t in titles)
    demo = next(t for t in titles if t.startswith("demo-shapes-64px.safetensors"))
    assert {m["model_name"] for m in models} >= {"tiny-test-model-random", "demo-shapes-64px"}
    assert "DPM++ 2M" in [s["name"] for s in client.get("/sdapi/v1/samplers").json()]
    assert "Karras" in [s["label"] for s in client.get("/sdapi/v1/schedulers").json()]
    assert [u["name"] for u in client.get("/sdapi/v1/upscalers").json()] == ["None", "Lanczos", "Nearest"]
    for route in ("cmd-flags", "sd-vae", "loras", "embeddings", "scripts", "memory", "latent-upscale-modes", "prompt-styles"):
        assert client.get(f"/sdapi/v1/{route}").status_code == 200, route
    assert client.get("/sdapi/v1/memory").json()["ram"]["total"] > 0
    assert client.get("/sdapi/v1/cmd-flags").json()["nowebui"] is True
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200

    options = client.get("/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"].startswith("tiny-test-model-random") and options["samples_format"] == "png"
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": demo, "samples_format": "jpg", "CLIP_stop_at_last_layers": 2}).json() == {}
    options = client.get("/sdapi/v1/options").json()
    assert (options["sd_model_checkpoint"], options["samples_format"], options["CLIP_stop_at_last_layers"]) == (demo, "jpg", 2)
    before = set(saved(data))
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a red circle on a blue background", "save_images": True, "seed": 2, **SMALL})
    [new] = sorted(set(saved(data)) - before)
    assert new.suffix == ".jpg" and "Model: demo-shapes-64px" in json.loads(r.json()["info"])["infotexts"][0]
    assert client.post("/sdapi/v1/options", json={"samples_format": "bmp"}).status_code == 400
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope"}).status_code == 400
    client.post("/sdapi/v1/options", json={"samples_format": "png", "CLIP_stop_at_last_layers": 1, "sd_model_checkpoint": titles[0]})


def test_png_info_extras_progress_interrupt(server):
    client, _ = server
    made = client.post("/sdapi/v1/txt2img", json={"prompt": "round trip", "seed": 9, **SMALL}).json()["images"][0]
    info = client.post("/sdapi/v1/png-info", json={"image": made}).json()
    assert info["info"].startswith("round trip\nSteps: 3") and info["parameters"]["Seed"] == "9"
    up = client.post("/sdapi/v1/extra-single-image", json={"image": made, "upscaling_resize": 2, "upscaler_1": "Lanczos"}).json()
    assert unb64(up["image"]).size == (128, 128)
    idle = client.get("/sdapi/v1/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None
    assert client.post("/sdapi/v1/interrupt").json() == {} and client.post("/sdapi/v1/skip").json() == {}


def test_docs_are_served(server):
    client, _ = server
    assert "swagger-ui" in client.get("/docs").text and client.get("/redoc").status_code == 200
    assert "/sdapi/v1/txt2img" in client.get("/openapi.json").json()["paths"]


def test_api_auth_guards_every_route(tmp_path):
    args = parse_args(["--data-dir", str(tmp_path), "--nowebui", "--api-auth", "alice:se:cret,bob:pw"])
    app = webui.App.create(args)
    with TestClient(app.build_asgi(args)) as client:
        routes = [r for r in client.get("/openapi.json", auth=("alice", "se:cret")).json()["paths"] if r.startswith("/sdapi")]
        assert len(routes) >= 20
        for route in routes:
            r = client.get(route)
            assert r.status_code in (401, 405), route  # 405: a POST route asked with GET still never answers
            r = client.post(route, json={})
            assert r.status_code in (401, 405), route
        for route in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(route).status_code == 401, route
            assert client.get(route, auth=("bob", "pw")).status_code == 200, route
        r = client.get("/sdapi/v1/samplers")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic"
        assert client.get("/sdapi/v1/samplers", auth=("alice", "wrong")).status_code == 401
        assert client.get("/sdapi/v1/samplers", auth=("alice", "se:cret")).status_code == 200  # colons in passwords
        assert client.get("/sdapi/v1/samplers", auth=("bob", "pw")).status_code == 200
    app.queue.shutdown()


def test_gradio_auth_guards_the_page_but_not_the_api_credentials(tmp_path):
    args = parse_args(["--data-dir", str(tmp_path), "--api", "--gradio-auth", "carol:pa:ss"])
    app = webui.App.create(args)
    with TestClient(app.build_asgi(args)) as client:
        assert client.get("/config").status_code == 401  # the page's data needs the log-in
        assert client.post("/login", data={"username": "carol", "password": "wrong"}).status_code == 400
        assert client.post("/login", data={"username": "carol", "password": "pa:ss"}).status_code == 200
        assert client.get("/config").status_code == 200
        assert client.get("/sdapi/v1/samplers").status_code == 200  # the API has its own --api-auth
    app.queue.shutdown()


def test_async_jobs_submit_poll_and_cancel(server):
    client, _ = server
    ids = []
    for seed in (31, 32, 33):
        r = client.post("/sdapi/v1/queue/txt2img", json={"prompt": "queued", "seed": seed, **SMALL})
        assert r.status_code == 200, r.text
        assert r.json()["status"] in ("queued", "running")
        ids.append(r.json()["id"])
    cancel = client.post("/sdapi/v1/queue/txt2img", json={"prompt": "never", "seed": 1, "width": 512, "height": 512, "steps": 50, "n_iter": 20})
    stopped = client.delete(f"/sdapi/v1/queue/{cancel.json()['id']}").json()
    assert stopped["status"] in ("cancelled", "running")
    results = {}
    deadline = time.monotonic() + 120
    while len(results) < 3 and time.monotonic() < deadline:
        for job_id in ids:
            status = client.get(f"/sdapi/v1/queue/{job_id}").json()
            if status["status"] == "done":
                results[job_id] = status
        time.sleep(0.1)
    assert [json.loads(results[i]["result"]["info"])["seed"] for i in ids] == [31, 32, 33]
    assert all(len(results[i]["result"]["images"]) == 1 for i in ids)
    assert client.get("/sdapi/v1/queue/task(99999)").status_code == 404
    assert client.delete("/sdapi/v1/queue/task(99999)").status_code == 404
    deadline = time.monotonic() + 60
    while client.get(f"/sdapi/v1/queue/{cancel.json()['id']}").json()["status"] not in ("cancelled", "interrupted") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.get("/sdapi/v1/queue").json() == {"running": None, "running_all": [], "waiting": []}


def test_a_running_job_can_be_watched_and_skipped_by_id(server):
    client, _ = server
    job = client.post("/sdapi/v1/queue/txt2img", json={"prompt": "watch", "seed": 7, "width": 256, "height": 256, "steps": 20, "n_iter": 3}).json()
    deadline = time.monotonic() + 60
    status = {}
    while time.monotonic() < deadline:
        status = client.get(f"/sdapi/v1/queue/{job['id']}", params={"preview": "true"}).json()
        if status.get("current_image"):
            break
        time.sleep(0.1)
    assert status["status"] == "running" and unb64(status["current_image"]).size == (256, 256)
    assert client.post(f"/sdapi/v1/queue/{job['id']}/skip").json()["status"] == "running"
    while client.get(f"/sdapi/v1/queue/{job['id']}").json()["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    done = client.get(f"/sdapi/v1/queue/{job['id']}").json()
    assert done["status"] == "done" and len(done["result"]["images"]) == 3  # as A1111: the skipped batch's unfinished picture too
    info = json.loads(done["result"]["info"])
    assert info["all_seeds"] == [7, 8, 9] and any("was skipped: its unfinished picture is returned, not saved" in w for w in info["warnings"])
    assert client.post(f"/sdapi/v1/queue/{job['id']}/skip").status_code == 409


def test_cors_lets_the_named_origin_in(tmp_path):
    args = parse_args(["--data-dir", str(tmp_path), "--nowebui", "--cors-allow-origins", "http://studio.local:3000"])
    app = webui.App.create(args)
    with TestClient(app.build_asgi(args)) as client:
        headers = {"Origin": "http://studio.local:3000", "Access-Control-Request-Method": "POST"}
        r = client.options("/sdapi/v1/txt2img", headers=headers)
        assert r.headers.get("access-control-allow-origin") == "http://studio.local:3000"
        r = client.options("/sdapi/v1/txt2img", headers={**headers, "Origin": "http://elsewhere"})
        assert "access-control-allow-origin" not in r.headers
    app.queue.shutdown()


def wait_done(client, job_id: str, timeout: float = 120, auth=None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/sdapi/v1/queue/{job_id}", auth=auth).json()
        if status["status"] not in ("queued", "running"):
            return status
        time.sleep(0.05)
    raise TimeoutError(job_id)


def test_each_queued_job_runs_on_the_checkpoint_it_asked_for(server):
    """override_settings picks a job's model when its turn comes, not when it was sent: jobs
    queued for different models behind a running one each run on their own, and jobs that
    name none run on the selected checkpoint (A1111's restore-afterwards)."""
    client, _ = server
    titles = [m["title"] for m in client.get("/sdapi/v1/sd-models").json()]
    tiny = next(t for t in titles if t.startswith("tiny-test-model-random"))
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": tiny}).status_code == 200
    blocker = client.post("/sdapi/v1/queue/txt2img", json={"prompt": "hold the worker", "width": 256, "height": 256, "steps": 30, "n_iter": 20}).json()
    ask = [("demo-shapes-64px", True), (None, True), ("demo-shapes-64px", True), (None, True), ("demo-shapes-64px", False), (None, True)]
    ids = []
    for number, (model, restore) in enumerate(ask):
        body = {"prompt": f"job {number}", "seed": number, **SMALL}
        if model:
            body |= {"override_settings": {"sd_model_checkpoint": model}, "override_settings_restore_afterwards": restore}
        ids.append(client.post("/sdapi/v1/queue/txt2img", json=body).json()["id"])
    client.delete(f"/sdapi/v1/queue/{blocker['id']}")
    names = []
    for job_id in ids:
        info = json.loads(wait_done(client, job_id)["result"]["info"])
        assert f"Model: {info['sd_model_name']}" in info["infotexts"][0]
        names.append(info["sd_model_name"])
    # The fifth job kept its model as the new selection (restore afterwards false), so the last one ran on it.
    assert names == ["demo-shapes-64px", "tiny-test-model-random", "demo-shapes-64px", "tiny-test-model-random", "demo-shapes-64px", "demo-shapes-64px"]
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("demo-shapes-64px")
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": tiny}).status_code == 200


def test_a_bad_option_changes_nothing(server):
    client, _ = server
    before = client.get("/sdapi/v1/options").json()
    for body in ({"samples_format": "jpg", "CLIP_stop_at_last_layers": 13}, {"CLIP_stop_at_last_layers": 2, "sd_model_checkpoint": "nope"},
                 {"samples_format": "jpg", "live_previews_enable": "maybe"}, {"CLIP_stop_at_last_layers": 2, "samples_format": "bmp"},
                 {"samples_format": "jpg", "jpeg_quality": "abc"}, {"jpeg_quality": 101}, {"samples_format": ["png"]},
                 {"CLIP_stop_at_last_layers": 2.5}, {"outdir_txt2img_samples": 5}):
        r = client.post("/sdapi/v1/options", json=body)
        assert r.status_code == 400 and r.json()["detail"], body
    assert client.get("/sdapi/v1/options").json() == before
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "still fine", **SMALL}).status_code == 200
    for job_id in ("task(²)", "task(99999999999999999999999)", "nonsense"):
        assert client.get(f"/sdapi/v1/queue/{job_id}").status_code == 404, job_id


def test_with_api_auth_a_users_jobs_are_their_own(tmp_path, tiny_checkpoint):
    data = data_dir_with_tiny_model(tmp_path, tiny_checkpoint)
    alice, bob = ("alice", "a"), ("bob", "b")
    with in_process_app(data, "--nowebui", "--api-auth", "alice:a,bob:b", "--disable-console-progressbars",
                        checkpoint=data / "models" / "Stable-diffusion" / tiny_checkpoint.name) as (_, client):
        job = client.post("/sdapi/v1/queue/txt2img", json={"prompt": "alice's secret", "seed": 3, **SMALL}, auth=alice).json()
        done = wait_done(client, job["id"], auth=alice)
        assert done["status"] == "done" and json.loads(done["result"]["info"])["prompt"] == "alice's secret"
        for call in (client.get, client.delete):
            r = call(f"/sdapi/v1/queue/{job['id']}", auth=bob)
            assert r.status_code == 403 and "another user" in r.json()["detail"]
        assert client.get(f"/sdapi/v1/queue/{job['id']}").status_code == 401
        assert "alice's secret" not in client.get("/sdapi/v1/queue", auth=bob).text
        # While alice's job runs, A1111's global /progress shows bob its progress but not her picture.
        running = client.post("/sdapi/v1/queue/txt2img", json={"prompt": "alice's big one", "width": 256, "height": 256, "steps": 30, "n_iter": 20},
                              auth=alice).json()
        deadline = time.monotonic() + 60
        while client.get("/sdapi/v1/progress", auth=alice).json()["current_image"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/sdapi/v1/progress", auth=alice).json()["current_image"]
        seen = client.get("/sdapi/v1/progress", auth=bob).json()
        assert seen["state"]["sampling_steps"] == 30 and seen["current_image"] is None
        assert client.post(f"/sdapi/v1/queue/{running['id']}/skip", auth=bob).status_code == 403
        assert client.delete(f"/sdapi/v1/queue/{running['id']}", auth=alice).status_code == 200


def test_a_job_runs_on_the_checkpoint_selected_when_it_was_sent(server):
    """Someone switching the model while a job waits does not change what that job runs on;
    jobs sent after the switch run on the new one."""
    client, _ = server
    titles = [m["title"] for m in client.get("/sdapi/v1/sd-models").json()]
    tiny = next(t for t in titles if t.startswith("tiny-test-model-random"))
    demo = next(t for t in titles if t.startswith("demo-shapes-64px"))
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": tiny}).status_code == 200
    blocker = client.post("/sdapi/v1/queue/txt2img", json={"prompt": "hold the worker", "width": 256, "height": 256, "steps": 30, "n_iter": 20}).json()
    before = client.post("/sdapi/v1/queue/txt2img", json={"prompt": "sent before", "seed": 1, **SMALL}).json()["id"]
    switched: dict = {}
    switch = threading.Thread(target=lambda: switched.update(r=client.post("/sdapi/v1/options", json={"sd_model_checkpoint": demo})))
    switch.start()  # answered once its load job has had its turn
    deadline = time.monotonic() + 30
    while not client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("demo-shapes-64px") and time.monotonic() < deadline:
        time.sleep(0.05)
    after = client.post("/sdapi/v1/queue/txt2img", json={"prompt": "sent after", "seed": 2, **SMALL}).json()["id"]
    client.delete(f"/sdapi/v1/queue/{blocker['id']}")
    names = [json.loads(wait_done(client, i)["result"]["info"])["sd_model_name"] for i in (before, after)]
    switch.join(60)
    assert switched["r"].status_code == 200
    assert names == ["tiny-test-model-random", "demo-shapes-64px"]
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": tiny}).status_code == 200


def test_once_the_server_is_stopping_new_work_gets_503_and_nothing_changes(tmp_path, tiny_checkpoint):
    data = data_dir_with_tiny_model(tmp_path, tiny_checkpoint)
    with in_process_app(data, "--nowebui", "--disable-console-progressbars",
                        checkpoint=data / "models" / "Stable-diffusion" / tiny_checkpoint.name) as (app, client):
        before = client.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
        app.queue.stop()
        for route, body in (("/sdapi/v1/txt2img", {"prompt": "late", **SMALL}), ("/sdapi/v1/queue/txt2img", {"prompt": "late", **SMALL}),
                            ("/sdapi/v1/options", {"sd_model_checkpoint": "demo-shapes-64px"})):
            r = client.post(route, json=body)
            assert r.status_code == 503 and "stopping" in r.json()["detail"], route
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == before
