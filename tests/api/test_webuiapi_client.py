"""The `webuiapi` client from PyPI, unchanged, against the real server started by launch.py --api."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import urllib.request

import numpy as np
import pytest
import webuiapi
from PIL import Image, ImageDraw

from modules.demo import judge


@pytest.fixture(scope="module")
def api(api_server):
    """A webuiapi client of the real server shared with test_clients.py (tests/api/conftest.py)."""
    url, data = api_server
    return webuiapi.WebUIApi(baseurl=url + "/sdapi/v1", sampler="Euler a", steps=20), data


def test_txt2img_and_png_info(api):
    client, _ = api
    client.util_set_model("demo-shapes-64px")
    result = client.txt2img(prompt="a red circle on a blue background", width=64, height=64, cfg_scale=5, seed=21, batch_size=2)
    assert [im.size for im in result.images] == [(64, 64), (64, 64)]
    assert result.info["all_seeds"] == [21, 22] and result.info["sd_model_name"] == "demo-shapes-64px"
    for image in result.images:
        reading = judge.read_picture(image.convert("RGB"))
        assert (reading.background, reading.colour) == ("blue", "red")
    info = client.png_info(result.image)
    assert info.info.startswith("a red circle on a blue background\nSteps: 20, Sampler: Euler a,")


def test_img2img_with_a_mask(api):
    client, _ = api
    client.util_set_model("demo-shapes-64px")
    init = Image.new("RGB", (64, 64), (40, 70, 220))
    ImageDraw.Draw(init).ellipse((14, 14, 50, 50), fill=(220, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).ellipse((8, 8, 56, 56), fill=255)
    result = client.img2img(images=[init], mask_image=mask, prompt="a green circle on a blue background", width=64, height=64, cfg_scale=5,
                            seed=4, denoising_strength=1.0, inpainting_fill=1, inpaint_full_res=False, mask_blur=2, batch_size=2)
    assert len(result.images) == 2
    colours = [judge.read_picture(im.convert("RGB")).colour for im in result.images]
    assert colours.count("green") >= 1, colours
    for image in result.images:
        assert image.convert("RGB").getpixel((1, 1)) == init.getpixel((1, 1))
    assert "Mask blur: 2" in result.info["infotexts"][0]


def test_models_listing_and_switching(api):
    client, _ = api
    names = client.util_get_model_names()  # titles, "file.safetensors [hash]"
    assert any(n.startswith("tiny-test-model-random.safetensors [") for n in names)
    assert any(n.startswith("demo-shapes-64px.safetensors [") for n in names)
    client.util_set_model("tiny-test-model-random")
    assert client.get_options()["sd_model_checkpoint"].startswith("tiny-test-model-random.safetensors")
    client.util_set_model("demo-shapes-64px")
    assert client.get_options()["sd_model_checkpoint"].startswith("demo-shapes-64px.safetensors")


def test_progress_while_a_job_runs_and_interrupt(api):
    client, _ = api
    client.util_set_model("tiny-test-model-random")
    done: dict = {}

    def long_job():
        done["result"] = client.txt2img(prompt="long", width=256, height=256, steps=30, n_iter=8, seed=1)

    worker = threading.Thread(target=long_job)
    worker.start()
    seen = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = client.get_progress()
        if progress["state"]["sampling_step"] > 0:
            seen = progress
            break
        time.sleep(0.1)
    assert seen is not None, "no progress reported"
    assert 0 < seen["progress"] < 1 and seen["state"]["sampling_steps"] == 30 and seen["state"]["job_count"] >= 1
    assert seen["textinfo"].startswith("Batch ")
    preview = None  # live previews are on by default, as in A1111: one every 10 steps while polled
    while preview is None and time.monotonic() < deadline:
        preview = client.get_progress()["current_image"]
        time.sleep(0.1)
    assert preview is not None, "no live preview"
    assert Image.open(io.BytesIO(base64.b64decode(preview))).size == (256, 256)
    assert client.interrupt() == {}
    worker.join(60)
    assert not worker.is_alive()
    assert len(done["result"].images) < 8  # stopped early, keeping what was finished
    assert client.get_progress()["state"]["job_count"] == 0


def test_several_clients_at_once_each_get_their_own_result(api):
    client, _ = api
    client.util_set_model("tiny-test-model-random")
    base = client.baseurl
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def one(seed: int) -> None:
        try:
            mine = webuiapi.WebUIApi(baseurl=base, sampler="Euler", steps=4)  # a client of its own, as separate tools would be
            results[seed] = mine.txt2img(prompt=f"client {seed}", width=64, height=64, seed=seed, batch_size=1 + seed % 2)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(100, 108)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(results) == list(range(100, 108))
    for seed, result in results.items():  # exactly its own job: its prompt, its seeds, its batch size
        assert result.info["all_seeds"] == list(range(seed, seed + 1 + seed % 2))
        assert all(text.startswith(f"client {seed}\n") for text in result.info["infotexts"])
        assert len(result.images) == 1 + seed % 2


def call(url: str, body: dict | None = None, method: str | None = None, timeout: float = 120) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def test_more_waiting_clients_than_server_threads_and_it_still_answers(api):
    """Fifty clients wait on the synchronous txt2img route behind a long job (A1111's server
    would hold a thread for each, and has 40): the queue, progress and interrupt still
    answer at once, and every client gets exactly its own job."""
    client, _ = api
    client.util_set_model("tiny-test-model-random")
    base = client.baseurl
    blocker = call(base + "/queue/txt2img", {"prompt": "hold", "seed": 1, "width": 256, "height": 256, "steps": 30, "n_iter": 50})
    results: dict[int, dict] = {}
    errors: list[BaseException] = []

    def one(seed: int) -> None:
        try:
            results[seed] = call(base + "/txt2img", {"prompt": f"waiter {seed}", "seed": seed, "width": 64, "height": 64, "steps": 2})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    seeds = range(500, 550)
    threads = [threading.Thread(target=one, args=(seed,)) for seed in seeds]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    waiting = []
    while len(waiting) < len(seeds) and time.monotonic() < deadline:
        waiting = call(base + "/queue", timeout=5)["waiting"]
        time.sleep(0.2)
    assert len(waiting) == len(seeds)
    start = time.monotonic()
    progress = call(base + "/progress", timeout=5)
    assert time.monotonic() - start < 2 and progress["state"]["job_count"] >= len(seeds) + 1
    call(f"{base}/queue/{blocker['id']}", method="DELETE", timeout=5)
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert sorted(results) == list(seeds)
    for seed, answer in results.items():
        info = json.loads(answer["info"])
        assert (info["all_seeds"], info["prompt"], len(answer["images"])) == ([seed], f"waiter {seed}", 1)


def test_every_a1111_sampler_and_schedule_and_the_noise_settings(api):
    client, _ = api
    client.util_set_model("tiny-test-model-random")
    assert {"DPM++ 2S a", "DPM++ 3M SDE", "DPM fast", "DPM adaptive", "Restart", "DDIM CFG++", "LCM"} <= set(client.util_get_sampler_names())
    assert {"polyexponential", "kl_optimal", "align_your_steps", "normal", "ddim", "beta"} <= set(client.util_get_scheduler_names())
    assert client.get_face_restorers() == [] and client.get_realesrgan_models() == [] and client.get_hypernetworks() == []
    for sampler, scheduler in (("DPM++ 3M SDE", "align_your_steps"), ("Euler a", "karras"), ("DDIM", "beta"), ("Restart", "kl_optimal"),
                               ("DPM fast", "automatic"), ("LCM", "sgm_uniform")):
        result = client.txt2img(prompt="x", width=64, height=64, steps=6, seed=3, sampler_name=sampler, scheduler=scheduler)
        assert f"Sampler: {sampler}," in result.info["infotexts"][0] and result.image.size == (64, 64)
    # NVIDIA's noise on this CPU, and A1111's Eta noise seed delta, recorded and read back
    made = client.txt2img(prompt="a red square", width=64, height=64, steps=8, seed=5, sampler_name="Euler a",
                          override_settings={"randn_source": "NV", "eta_noise_seed_delta": 31337})
    text = made.info["infotexts"][0]
    assert "ENSD: 31337" in text and "RNG: NV" in text
    assert client.get_options()["randn_source"] == "GPU"  # override_settings are restored afterwards, as in A1111
    remade = call(client.baseurl + "/txt2img", {"infotext": text})
    image = Image.open(io.BytesIO(base64.b64decode(remade["images"][0])))
    assert image.tobytes() == made.image.tobytes()
    plain = client.txt2img(prompt="a red square", width=64, height=64, steps=8, seed=5, sampler_name="Euler a")
    assert plain.image.tobytes() != made.image.tobytes()


def test_xyz_plot_and_variation_seeds_through_webuiapi(api):
    """webuiapi passes script_name/script_args through as A1111 clients do: an X/Y/Z plot of
    Var. strength (axis 3) by Seed (axis 1) comes back grid first, every cell its own picture."""
    client, _ = api
    client.util_set_model("demo-shapes-64px")
    args = [3, "0, 1", [], 1, "21, 22", [], 0, "", [], True, True, False, False, False, False, False, 0, False]
    result = client.txt2img(prompt="a red circle on a blue background", width=64, height=64, steps=6, cfg_scale=5, seed=21,
                            subseed=40, sampler_name="Euler", script_name="X/Y/Z plot", script_args=args)
    assert result.info["index_of_first_image"] == 1 and len(result.images) == 5
    grid, cells = result.images[0], result.images[1:]
    assert grid.width > 128 and "Script: X/Y/Z plot" in result.info["infotexts"][0]
    texts = result.info["infotexts"][1:]
    assert sum("Variation seed: 40, Variation seed strength: 1," in t for t in texts) == 2
    assert [c.size for c in cells] == [(64, 64)] * 4
    # strength 1 is the variation seed's picture whatever the seed (Euler adds no step noise); 0 is the seed's own
    full = [np.asarray(im.convert("RGB"), dtype=int) for im, t in zip(cells, texts) if "Variation seed strength: 1," in t]
    assert np.abs(full[0] - full[1]).max() <= 1
    none = [np.asarray(im.convert("RGB"), dtype=int) for im, t in zip(cells, texts) if "Variation seed" not in t]
    assert len(none) == 2 and np.abs(none[0] - none[1]).mean() > 5
    assert result.info["all_subseeds"][1:] == [40, 40, 40, 40]
