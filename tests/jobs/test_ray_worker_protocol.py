"""A Ray worker's protocol without Ray: the serving app's queue hands txt2img jobs to a
RayWorker whose actor is a GenerationWorker in this process (calls made directly instead of
through ray.get). The worker runs the same generation core, so its pictures equal the
in-process worker's; the serving machine saves them with their infotext in its own folders;
progress reaches /progress; interrupt reaches the worker; a resumed job gets its saved pictures
from the serving machine; a checkpoint switch is loaded by the worker."""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from modules.jobs.ray_pool import RayWorker, remote_spec_for
from modules.jobs.ray_worker import GenerationWorker, WorkerSetup
from modules.outputs.infotext import parse_infotext
from tests.servers import data_dir_with_tiny_model, in_process_app


class DirectRayWorker(RayWorker):
    """RayWorker over an in-process GenerationWorker: the same calls, no Ray."""

    def call(self, method, *args, timeout=None, **kwargs):
        return getattr(self.actor, method)(*args, **kwargs)


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_checkpoint):
    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("ray-protocol"), tiny_checkpoint)
    mine = data / "models" / "Stable-diffusion" / tiny_checkpoint.name
    with in_process_app(data, "--api", "--no-hashing", checkpoint=mine) as (app, client):
        yield app, client, data


def use_worker(app, data):
    """From now on generation jobs go to one worker 'process' holding its own model, in its own
    data folder (another machine: no styles.csv, no outputs)."""
    own = data.parent / (data.name + "-worker")
    (own / "models" / "Stable-diffusion").mkdir(parents=True, exist_ok=True)
    for model in (data / "models" / "Stable-diffusion").glob("*.safetensors"):
        (own / "models" / "Stable-diffusion" / model.name).write_bytes(model.read_bytes())
    actor = GenerationWorker(WorkerSetup(data_dir=str(own), use_cpu=True, flags=("--no-hashing",)))
    worker = DirectRayWorker("ray-1", actor, "node-1", app.service, lambda: dict(app.settings.values), app.queue.wake)
    worker.update(actor.info())
    app.queue.send_generation(remote_spec_for(app.models, app.service))
    app.queue.add_worker(worker)
    return worker, actor


BODY = {"prompt": "a red circle", "negative_prompt": "blurry", "steps": 4, "width": 64, "height": 64, "seed": 123, "batch_size": 2,
        "n_iter": 2, "sampler_name": "DPM++ 2M", "scheduler": "Karras", "save_images": True}


def test_worker_pictures_equal_the_in_process_ones_and_are_saved_by_the_serving_app(served):
    app, client, data = served
    local = client.post("/sdapi/v1/txt2img", json=BODY)
    assert local.status_code == 200, local.text
    worker, actor = use_worker(app, data)
    before = set((data / "outputs").rglob("*.png"))
    remote = client.post("/sdapi/v1/txt2img", json=BODY)
    assert remote.status_code == 200, remote.text
    a, b = local.json(), remote.json()
    assert len(a["images"]) == len(b["images"]) == 4
    for x, y in zip(a["images"], b["images"]):
        assert np.array_equal(pixels(x), pixels(y))
    assert b["info"] and remote.json()["parameters"]["seed"] == 123
    made = sorted(set((data / "outputs").rglob("*.png")) - before)
    assert [p.parent.parent.name for p in made].count("txt2img-images") == 4 and [p.parent.parent.name for p in made].count("txt2img-grids") == 1
    saved = [p for p in made if p.parent.parent.name == "txt2img-images"]
    seeds = sorted(int(parse_infotext(Image.open(p).info["parameters"])["Seed"]) for p in saved)
    assert seeds == [123, 124, 125, 126]
    info = parse_infotext(Image.open(saved[0]).info["parameters"])
    assert info["Sampler"] == "DPM++ 2M" and info["Schedule type"] == "Karras" and info["Model"] == "tiny-test-model-random"
    assert actor.info()["checkpoint"] == worker.state["checkpoint"] == "tiny-test-model-random.safetensors"
    assert not list((data.parent / (data.name + "-worker")).rglob("*.png"))  # nothing written on the worker's machine

    # The serving machine's styles.csv applies (the worker's machine has none).
    (data / "styles.csv").write_text("name,prompt,negative_prompt\nneon,\"{prompt}, neon glow\",dark\n")
    styled = client.post("/sdapi/v1/txt2img", json={**BODY, "n_iter": 1, "batch_size": 1, "styles": ["neon"], "save_images": False})
    assert styled.status_code == 200, styled.text
    infotext = json.loads(styled.json()["info"])["infotexts"][0]
    assert parse_infotext(infotext)["Prompt"] == "a red circle, neon glow" and parse_infotext(infotext)["Negative prompt"] == "blurry, dark"

    workers = client.get("/sdapi/v1/workers").json()
    assert {w["id"]: w["kind"] for w in workers} == {"local": "local", "ray-1": "ray"}
    assert next(w for w in workers if w["id"] == "ray-1")["checkpoint"] == "tiny-test-model-random.safetensors"


def test_progress_and_interrupt_cross_to_the_worker(served):
    app, client, data = served
    if not any(w.kind == "ray" for w in app.queue.workers()):
        use_worker(app, data)
    job = client.post("/sdapi/v1/queue/txt2img", json={**BODY, "steps": 150, "n_iter": 3, "batch_size": 1, "save_images": False}).json()
    deadline = time.monotonic() + 60
    seen = None
    while time.monotonic() < deadline:
        state = client.get(f"/sdapi/v1/queue/{job['id']}").json()
        if state["status"] == "running" and state["progress"] > 0.01:
            seen = client.get("/sdapi/v1/progress").json()
            break
        time.sleep(0.05)
    assert seen is not None and seen["progress"] > 0 and "Step" in seen["textinfo"], seen
    assert client.post("/sdapi/v1/interrupt").status_code == 200
    while time.monotonic() < deadline:
        state = client.get(f"/sdapi/v1/queue/{job['id']}").json()
        if state["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert state["status"] == "interrupted" and state["worker"] == "ray-1"
    assert app.queue.get(job["id"]).progress.batch_index == 0  # stopped in its first batch, not after three


def run_resumed(app, params, resumed):
    """A job restored with `resumed` progress, run by the queue's Ray worker (the queue is idle)."""
    from modules.jobs.generation_task import txt2img_payload
    from modules.jobs.queue import Job

    worker = next(w for w in app.queue.workers() if w.kind == "ray")
    payload = txt2img_payload(params, save=False)
    job = Job(id="task(resumed)", kind="txt2img", task=lambda j: None, resumed=resumed, remote=app.queue.remote_spec("txt2img", payload))
    return worker.run(job)


def test_a_resumed_job_gets_its_saved_pictures_from_the_serving_machine(served, tmp_path):
    app, client, data = served
    if not any(w.kind == "ray" for w in app.queue.workers()):
        use_worker(app, data)
    from modules.generation.params import GenerationParams

    earlier = tmp_path / "elsewhere" / "00001-50.png"  # on the serving machine only
    earlier.parent.mkdir()
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("parameters", "a red circle\nSteps: 4, Seed: 50")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(earlier, pnginfo=meta)
    params = GenerationParams(prompt="a red circle", steps=4, width=64, height=64, seed=50, n_iter=2)
    result = run_resumed(app, params, {"first_seed": 50, "batches": 1, "paths": [str(earlier)]})
    assert result.seeds == [50, 51] and np.asarray(result.images[0])[0, 0].tolist() == [1, 2, 3]
    assert result.infotexts[0].startswith("a red circle") and "Resumed" in " ".join(result.notes)


def test_a_checkpoint_switch_is_loaded_by_the_worker(served):
    app, client, data = served
    if not any(w.kind == "ray" for w in app.queue.workers()):
        use_worker(app, data)
    title = app.models.titles()[0]
    r = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": title})
    assert r.status_code == 200, r.text
    worker = next(w for w in app.queue.workers() if w.kind == "ray")
    assert worker.state["checkpoint"] == app.models.find(title).filename


def test_pictures_saved_since_the_last_record_go_when_the_worker_dies(served):
    """A worker that dies between saving a batch's pictures and recording the batch: the re-run
    makes that batch again, so the files it left are removed rather than written twice."""
    from modules.generation.params import GenerationParams
    from modules.jobs.generation_task import txt2img_payload
    from modules.jobs.queue import Job, WorkerLost

    app, client, data = served
    if not any(w.kind == "ray" for w in app.queue.workers()):
        use_worker(app, data)
    saves = []

    class DiesOnTheSecondSave(DirectRayWorker):
        def call(self, method, *args, timeout=None, **kwargs):
            if method == "saved":
                saves.append(args[2])
                if len(saves) == 2:
                    raise WorkerLost("killed after saving")
            return super().call(method, *args, **kwargs)

    own = data.parent / (data.name + "-worker")
    actor = GenerationWorker(WorkerSetup(data_dir=str(own), use_cpu=True, flags=("--no-hashing",)))
    dying = DiesOnTheSecondSave("ray-dying", actor, "node-2", app.service, lambda: dict(app.settings.values), app.queue.wake)
    params = GenerationParams(prompt="a red circle", steps=3, width=64, height=64, seed=70, batch_size=2, n_iter=2)
    payload = txt2img_payload(params, save=True)
    job = Job(id="task(dying)", kind="txt2img", task=lambda j: None, remote=app.queue.remote_spec("txt2img", payload))
    before = set((data / "outputs").rglob("*.png"))
    with pytest.raises(WorkerLost):
        dying.run(job)
    assert len(saves) == 2 and all(saves)  # both pictures of the first batch were written, then the worker died
    assert set((data / "outputs").rglob("*.png")) == before  # and neither is left behind
    assert job.last_record is None


def test_a_failure_on_the_serving_side_stops_the_job_on_the_worker_and_the_next_job_runs(served, monkeypatch):
    app, client, data = served
    if not any(w.kind == "ray" for w in app.queue.workers()):
        use_worker(app, data)
    writer = app.service.writers["txt2img"][0]
    calls = []
    original = writer.save_image

    def broken_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("the filename pattern cannot be used")
        return original(*args, **kwargs)

    monkeypatch.setattr(writer, "save_image", broken_once)
    first = client.post("/sdapi/v1/txt2img", json={**BODY, "n_iter": 2, "batch_size": 1})
    assert first.status_code >= 400 and "filename pattern" in first.text
    second = client.post("/sdapi/v1/txt2img", json={**BODY, "n_iter": 1, "batch_size": 1, "seed": 5})
    assert second.status_code == 200, second.text
    assert json.loads(second.json()["info"])["all_seeds"] == [5]


def test_a_resumed_job_whose_earlier_picture_is_gone_goes_on_without_it(served, tmp_path):
    app, client, data = served
    if not any(w.kind == "ray" for w in app.queue.workers()):
        use_worker(app, data)
    from modules.generation.params import GenerationParams

    params = GenerationParams(prompt="a red circle", steps=3, width=64, height=64, seed=60, n_iter=2)
    result = run_resumed(app, params, {"first_seed": 60, "batches": 1, "paths": [str(tmp_path / "deleted-since.png")]})
    assert result.seeds == [61] and len(result.images) == 1


def test_a_worker_reports_the_loras_it_holds_and_the_scheduler_prefers_it_for_them(served):
    from modules.jobs.scheduling import Need
    from tests.models.test_lora import write_test_lora

    app, client, data = served
    if not any(w.kind == "ray" for w in app.queue.workers()):
        use_worker(app, data)
    worker = next(w for w in app.queue.workers() if w.kind == "ray")
    actor = worker.actor
    write_test_lora(data.parent / (data.name + "-worker") / "models" / "Lora" / "glow.safetensors", actor.service.models.active.model)
    actor.service.libraries.loras.refresh()
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "prompt": "a red circle <lora:glow:1>", "n_iter": 1, "batch_size": 1, "save_images": False})
    assert r.status_code == 200, r.text
    assert worker.state["loras"] == ["glow"] and worker.describe()["checkpoint"]
    view = worker.view(busy=False)
    checkpoint = worker.state["checkpoint"]
    assert view.loras == {"glow"}
    assert view.score(Need(checkpoint, "Automatic", frozenset({"glow"}))) > view.score(Need(checkpoint, "Automatic", frozenset({"other"})))
