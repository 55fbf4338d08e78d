"""POST/GET /sdapi/v1/train/lora on a real app shared on the network with two API users: a tiny
run on the demo model trains and leaves its LoRA in models/Lora; bad input and other users'
runs are refused with the API's error bodies."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from modules.demo.embedded import EMBEDDED_PATH
from modules.demo.shapes import Scene, draw
from tests.servers import in_process_app

ALICE, BOB = ("alice", "wonderland"), ("bob", "builder")
SCENES = (Scene("red", "circle", "white"), Scene("blue", "square", "white"), Scene("green", "triangle", "black"),
          Scene("yellow", "star", "blue"))


def write_dataset(folder: Path, captions: bool = True) -> Path:
    """Four demo pictures, each with its caption in a .txt beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, scene in enumerate(SCENES):
        draw(scene, (32.0, 32.0), 18.0).save(folder / f"{k}.png")
        if captions:
            (folder / f"{k}.txt").write_text(scene.prompt())
    return folder


def tiny_run(name: str, folder: Path, **extra) -> dict:
    return {"output_name": name, "train_data_dir": str(folder), "max_train_steps": 6, "resolution": 64, "network_dim": 4,
            "network_alpha": 4, "learning_rate": 1e-3, "mixed_precision": "no", "sample_prompts": ["a red circle on a white background"],
            "sample_steps": 4, **extra}


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory):
    """(app, client, data folder): --listen (so folders outside the data folder are refused)
    and --api-auth with two users; the demo model loaded."""
    data = tmp_path_factory.mktemp("train-api")
    with in_process_app(data, "--api", "--nowebui", "--listen", "--api-auth", f"{ALICE[0]}:{ALICE[1]},{BOB[0]}:{BOB[1]}",
                        "--disable-console-progressbars", checkpoint=EMBEDDED_PATH) as (app, client):
        yield app, client, data


def wait_finished(client, name: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/sdapi/v1/train/lora/{name}", auth=ALICE).json()
        if run["task"] is None or run["task"]["status"] not in ("queued", "running"):
            return run
        time.sleep(0.3)
    raise TimeoutError(f"run {name} did not finish in {timeout}s")


def test_a_tiny_run_trains_and_saves_its_lora(shared_app):
    app, client, data = shared_app
    folder = write_dataset(data / "datasets" / "shapes")

    answer = client.post("/sdapi/v1/train/lora", json=tiny_run("shapes", folder), auth=ALICE)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["name"] == "shapes" and body["task"].startswith("task(") and "position" in body

    run = wait_finished(client, "shapes")
    assert run["status"] == "done", run
    assert run["steps_done"] == 6 and run["total_steps"] == 6
    assert [step for step, _ in run["losses"]] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(loss) and loss > 0 for _, loss in run["losses"])
    assert run["lora"] == "shapes.safetensors"
    assert run["samples"] and all(f.endswith(".png") for s in run["samples"] for f in s["files"])
    assert run["params"]["network_dim"] == 4

    lora = data / "models" / "Lora" / "shapes.safetensors"
    with safe_open(str(lora), "pt") as f:
        assert f.metadata()["ss_output_name"] == "shapes" and f.metadata()["ss_network_dim"] == "4"
        assert any(key.startswith("lora_unet_") for key in f.keys())

    listed = client.get("/sdapi/v1/train/lora", auth=BOB).json()
    assert {"name": "shapes", "status": "done", "steps_done": 6, "total_steps": 6, "lora": "shapes.safetensors"} in listed

    finished = client.post("/sdapi/v1/train/lora/shapes/interrupt", auth=ALICE)
    assert finished.status_code == 409 and finished.json()["error"] == "NotRunning"


def test_bad_requests_are_refused_with_a_sentence_and_nothing_is_queued(shared_app):
    app, client, data = shared_app
    empty = data / "datasets" / "empty"
    empty.mkdir(parents=True)
    uncaptioned = write_dataset(data / "datasets" / "uncaptioned", captions=False)
    broken = write_dataset(data / "datasets" / "broken")
    (broken / "4.png").write_bytes(b"not a picture")
    (broken / "4.txt").write_text("a broken picture")
    outside = write_dataset(Path(str(data) + "-elsewhere") / "shapes")
    before = len(app.queue.list())

    cases = {
        "empty": (400, tiny_run("x", empty), "empty"),
        "uncaptioned": (400, tiny_run("x", uncaptioned), "0.png"),
        "broken": (400, tiny_run("x", broken), "4.png"),
        "missing": (400, tiny_run("x", data / "datasets" / "nowhere"), "nowhere"),
        "unknown field": (400, {**tiny_run("x", broken), "network_dimm": 4}, "network_dimm"),
        "bad rank": (400, tiny_run("x", broken, network_dim=0), "Rank"),
        "bad name": (400, tiny_run("../x", broken), "LoRA name"),
        "outside the data folder": (403, tiny_run("x", outside), "shared on the network"),
    }
    for label, (status, request, said) in cases.items():
        answer = client.post("/sdapi/v1/train/lora", json=request, auth=ALICE)
        assert answer.status_code == status, (label, answer.text)
        body = answer.json()
        assert body["error"] == ("Forbidden" if status == 403 else "BadRequest"), (label, body)
        assert said.lower() in body["detail"].lower(), (label, body["detail"])
    assert len(app.queue.list()) == before  # nothing queued
    assert not (data / "models" / "Lora" / "x.safetensors").exists()

    assert client.post("/sdapi/v1/train/lora", json=tiny_run("x", broken)).status_code == 401  # the API's log-in
    docs = client.get("/openapi.json", auth=ALICE).json()["paths"]["/sdapi/v1/train/lora"]["post"]
    fields = docs["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert fields["network_dim"]["title"] == "Network Dim" and fields["network_dim"]["minimum"] == 1  # /docs shows the options
    missing = client.get("/sdapi/v1/train/lora/no-such-run", auth=ALICE)
    assert missing.status_code == 404 and missing.json()["error"] == "NotFound"
    assert client.post("/sdapi/v1/train/lora/no-such-run/interrupt", auth=ALICE).status_code == 404


def test_only_the_runs_owner_interrupts_it_and_it_keeps_what_it_learnt(shared_app):
    app, client, data = shared_app
    folder = write_dataset(data / "datasets" / "long")
    answer = client.post("/sdapi/v1/train/lora", json=tiny_run("long", folder, max_train_steps=5000, sample_prompts=[]), auth=ALICE)
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 120
    while client.get("/sdapi/v1/train/lora/long", auth=ALICE).json()["steps_done"] < 2:
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.2)

    running = client.get("/sdapi/v1/train/lora/long", auth=BOB).json()  # anyone may watch
    assert running["status"] == "running" and running["rate"] > 0 and running["total_steps"] == 5000
    assert running["task"]["status"] == "running" and running["task"]["textinfo"].startswith("Step ")
    assert running["task"]["eta_relative"] > 0

    refused = client.post("/sdapi/v1/train/lora/long/interrupt", auth=BOB)
    assert refused.status_code == 403 and refused.json()["error"] == "Forbidden"
    assert client.get("/sdapi/v1/train/lora/long", auth=BOB).json()["task"]["status"] == "running"

    stopped = client.post("/sdapi/v1/train/lora/long/interrupt", auth=ALICE)
    assert stopped.status_code == 200, stopped.text
    run = wait_finished(client, "long")
    assert run["status"] == "interrupted", run
    assert 2 <= run["steps_done"] < 5000 and run["total_steps"] == 5000
    assert run["lora"] == "long.safetensors" and (data / "models" / "Lora" / "long.safetensors").exists()
