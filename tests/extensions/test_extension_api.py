"""The extension API through the server: a test extension written in A1111's style adds a route,
a setting, an always-on script that changes what is drawn and a selectable script; a broken
extension and one whose hooks raise are isolated. Checked through A1111's HTTP API."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.servers import data_dir_with_tiny_model, in_process_app

DATA = Path(__file__).parent / "data"
SMALL = {"width": 64, "height": 64, "steps": 3, "seed": 21, "sampler_name": "Euler", "prompt": "a blue square"}


def with_extensions(data: Path, *names: str) -> Path:
    for name in names:
        shutil.copytree(DATA / name, data / "extensions" / name)
    return data


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("ext-api"), tiny_checkpoint)
    with_extensions(data, "hello-ext", "broken-ext")
    with in_process_app(data, "--api", "--disable-console-progressbars", checkpoint=tiny_checkpoint) as (app, client):
        yield app, client


def pixels(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"), dtype=np.int16)


def test_extension_route_is_served(server):
    _, client = server
    r = client.get("/hello-ext/ping")
    assert r.status_code == 200 and r.json() == {"hello": "world"}


def test_extension_setting_is_in_options_and_can_be_set(server):
    app, client = server
    assert client.get("/sdapi/v1/options").json()["hello_words_default"] == "red circle"
    assert client.post("/sdapi/v1/options", json={"hello_words_default": "green"}).status_code == 200
    assert app.settings["hello_words_default"] == "green"
    saved = json.loads(app.paths.settings.read_text())
    assert saved["hello_words_default"] == "green"
    client.post("/sdapi/v1/options", json={"hello_words_default": "red circle"})
    assert "Hello extension" in app.settings.sections()


def test_scripts_and_script_info_list_the_extensions_scripts(server):
    _, client = server
    listed = client.get("/sdapi/v1/scripts").json()
    assert "hello words" in listed["txt2img"] and "hello words" in listed["img2img"]
    assert "flip" in listed["txt2img"]
    info = client.get("/sdapi/v1/script-info").json()
    hello = next(i for i in info if i["name"] == "hello words" and not i["is_img2img"])
    assert hello["is_alwayson"] is True
    assert [a["label"] for a in hello["args"]] == ["Add words", "Words"]
    assert hello["args"][0]["value"] is False
    flip = next(i for i in info if i["name"] == "flip" and not i["is_img2img"])
    assert flip["is_alwayson"] is False and [a["label"] for a in flip["args"]] == ["Horizontal", "Vertical"]


def test_always_on_script_changes_the_picture_and_the_infotext(server):
    _, client = server
    plain = client.post("/sdapi/v1/txt2img", json=SMALL)
    assert plain.status_code == 200, plain.text
    off = client.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"Hello words": {"args": [False, "x"]}}})
    on = client.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"hello words": {"args": [True, "red circle"]}}})
    assert off.status_code == 200 and on.status_code == 200, on.text
    # Switched off, the script changes nothing: the same picture bit for bit.
    assert np.array_equal(pixels(plain.json()["images"][0]), pixels(off.json()["images"][0]))
    # Switched on, the prompt (so the conditioning) changes: another picture, and the infotext says why.
    assert np.abs(pixels(plain.json()["images"][0]) - pixels(on.json()["images"][0])).mean() > 1
    info = json.loads(on.json()["info"])
    assert info["infotexts"][0].startswith("a blue square, red circle\n")
    assert "Hello words: red circle" in info["infotexts"][0]
    # Missing arguments take the ui()'s defaults; an empty Words box takes the setting's words.
    short = client.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"Hello words": {"args": [True]}}})
    assert json.loads(short.json()["info"])["infotexts"][0].startswith("a blue square, red circle\n")
    assert np.array_equal(pixels(short.json()["images"][0]), pixels(on.json()["images"][0]))


def test_unknown_always_on_script_is_refused_with_the_list(server):
    _, client = server
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"ADetailer": {"args": []}}})
    assert r.status_code == 422
    assert "ADetailer" in r.text and "Hello words" in r.text


def test_selectable_a1111_script_runs_process_images_as_a_job(server):
    _, client = server
    plain = client.post("/sdapi/v1/txt2img", json=SMALL).json()
    flipped = client.post("/sdapi/v1/txt2img", json={**SMALL, "script_name": "flip", "script_args": [True, False]})
    assert flipped.status_code == 200, flipped.text
    images = flipped.json()["images"]
    assert len(images) == 1
    assert np.array_equal(pixels(images[0]), pixels(plain["images"][0])[:, ::-1])


def test_broken_extension_is_off_and_named_while_the_rest_load(server):
    app, client = server
    assert "broken-ext" in app.extensions.errors
    assert "this_module_does_not_exist" in app.extensions.errors["broken-ext"]
    assert "broken-ext" not in app.extensions.loaded_names and "hello-ext" in app.extensions.loaded_names
    assert client.get("/hello-ext/ping").status_code == 200


def test_raising_hooks_are_switched_off_for_the_job_and_the_picture_is_made(tmp_path, tiny_checkpoint):
    data = with_extensions(data_dir_with_tiny_model(tmp_path, tiny_checkpoint), "hello-ext", "raising-ext")
    with in_process_app(data, "--api", "--disable-console-progressbars", checkpoint=tiny_checkpoint) as (_app, client):
        r = client.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"Raising": {"args": []},
                                                                                "Hello words": {"args": [True, "red circle"]}}})
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        warnings = " ".join(info["warnings"])
        assert "Extension 'raising-ext' failed in Raising.process" in warnings and "switched off for this job" in warnings
        # The other extension's script still ran.
        assert info["infotexts"][0].startswith("a blue square, red circle\n")
        assert len(r.json()["images"]) == 1
        # The server keeps serving.
        assert client.get("/sdapi/v1/options").status_code == 200


def test_disabled_extension_is_not_loaded(tmp_path, tiny_checkpoint):
    data = with_extensions(data_dir_with_tiny_model(tmp_path, tiny_checkpoint), "hello-ext")
    (data / "config.json").write_text(json.dumps({"disabled_extensions": ["hello-ext"]}))
    with in_process_app(data, "--api") as (app, client):
        assert "hello-ext" not in app.extensions.loaded_names
        assert client.get("/hello-ext/ping").status_code != 200
        assert "hello words" not in client.get("/sdapi/v1/scripts").json()["txt2img"]
    with in_process_app(data, "--api", "--disable-extra-extensions") as (app, client):
        assert app.extensions.loaded_names == [e.name for e in app.extensions.extensions if e.builtin and e.enabled]


def test_callbacks_see_each_step_and_each_saved_file(tmp_path, tiny_checkpoint):
    data = with_extensions(data_dir_with_tiny_model(tmp_path, tiny_checkpoint), "callbacks-ext")
    with in_process_app(data, "--api", "--disable-console-progressbars", checkpoint=tiny_checkpoint) as (app, client):
        plain = client.post("/sdapi/v1/txt2img", json={**SMALL, "save_images": True})
        assert plain.status_code == 200, plain.text
        saved = (data / "extensions" / "callbacks-ext" / "saved.txt").read_text().split()
        assert len(saved) == 1 and Path(saved[0]).is_file()
        # on_before_image_saved changed what the file says, and the answer's infotext with it.
        assert Image.open(saved[0]).info["parameters"].endswith(", Watched: yes")
        assert json.loads(plain.json()["info"])["infotexts"][0].endswith(", Watched: yes")
        # on_cfg_denoiser (reading the extension's setting through p.opts) changes what is drawn.
        client.post("/sdapi/v1/options", json={"watch_zero_text": True})
        zeroed = client.post("/sdapi/v1/txt2img", json=SMALL)
        assert np.abs(pixels(plain.json()["images"][0]) - pixels(zeroed.json()["images"][0])).mean() > 1
        client.post("/sdapi/v1/options", json={"watch_zero_text": False})
        again = client.post("/sdapi/v1/txt2img", json=SMALL)
        assert np.array_equal(pixels(plain.json()["images"][0]), pixels(again.json()["images"][0]))


def test_queued_job_keeps_its_always_on_scripts(server):
    import time

    app, client = server
    r = client.post("/sdapi/v1/queue/txt2img", json={**SMALL, "alwayson_scripts": {"Hello words": {"args": [True, "red circle"]}}})
    assert r.status_code == 200, r.text
    job_id = r.json()["id"] if "id" in r.json() else r.json()["job_id"]
    from modules.jobs.store import JobStore

    stored = JobStore(app.paths.data_dir / "queue.sqlite3").get(app.queue.get(job_id).number)
    assert stored.payload["alwayson"] == [["Hello words", [True, "red circle"]]]  # what a restart rebuilds the job from
    for _ in range(600):
        status = client.get(f"/sdapi/v1/queue/{job_id}").json()
        if status.get("status") in ("done", "failed", "interrupted", "cancelled"):
            break
        time.sleep(0.1)
    assert status["status"] == "done", status
    assert "Hello words: red circle" in json.dumps(status)


def test_hooks_run_in_a1111s_order_and_see_what_a1111_shows_them(tmp_path, tiny_checkpoint):
    data = with_extensions(data_dir_with_tiny_model(tmp_path, tiny_checkpoint), "order-ext")
    (data / "styles.csv").write_text('name,prompt,negative_prompt\nSunny,"{prompt}, sunny",\n')
    with in_process_app(data, "--api", "--disable-console-progressbars", checkpoint=tiny_checkpoint) as (_app, client):
        r = client.post("/sdapi/v1/txt2img", json={**SMALL, "styles": ["Sunny"], "n_iter": 2, "batch_size": 2, "save_images": True,
                                                    "alwayson_scripts": {"order": {"args": ["mine"]}}})
        assert r.status_code == 200, r.text
    calls = [json.loads(line) for line in (data / "extensions" / "order-ext" / "calls.jsonl").read_text().splitlines()]
    hooks = [c["hook"] for c in calls]
    per_image = ["postprocess_image", "before_image_saved", "image_saved"]
    per_batch = ["before_process_batch", "process_batch", "postprocess_batch", *per_image, *per_image]
    assert hooks == ["before_process", "process", *per_batch, *per_batch, "postprocess"]
    # before_process: the prompt as written, no all_prompts yet; process: styled all_prompts and the seeds.
    assert calls[0] == {"hook": "before_process", "tag": "mine", "prompt": "a blue square", "all_prompts": []}
    assert calls[1]["prompt"] == "a blue square" and calls[1]["all_prompts"] == ["a blue square, sunny"] * 4
    assert calls[1]["all_seeds"] == [21, 22, 23, 24]
    assert [c["batch_number"] for c in calls if c["hook"] == "process_batch"] == [0, 1]
    assert [c["seeds"] for c in calls if c["hook"] == "before_process_batch"] == [[21, 22], [23, 24]]
    assert next(c for c in calls if c["hook"] == "postprocess_batch")["shape"] == [2, 3, 64, 64]
    assert all(c["exists"] for c in calls if c["hook"] == "image_saved")
    assert calls[-1] == {"hook": "postprocess", "images": 4, "seed": 21}
