"""A1111's /sdapi/v1/create/embedding and /sdapi/v1/train/embedding with A1111's request
bodies, on the app's real queue, model manager and embeddings library (the demo model), and
bad input answered with a 4xx and a sentence. (webuiapi 0.9.17 has no calls for these routes.)"""

from __future__ import annotations

import shutil

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modules.demo import shapes
from modules.demo.embedded import EMBEDDED_PATH
from modules.network import ServerAccess


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(client, app, data folder, shared-server client) over one app with the demo model loaded."""
    import webui
    from modules.api.routes import ApiState
    from modules.options import parse_args
    from modules.training.embedding_routes import build_embedding_router

    data = tmp_path_factory.mktemp("ti-api")
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(EMBEDDED_PATH, data / "models" / "Stable-diffusion" / EMBEDDED_PATH.name)
    pictures = data / "train-data" / "circles"
    pictures.mkdir(parents=True)
    for i, centre in enumerate([(24, 24), (40, 40)]):
        shapes.draw(shapes.Scene("red", "circle", "blue"), centre, 16).save(pictures / f"{i}.png")
        (pictures / f"{i}.txt").write_text("red circle, blue background")
    (data / "empty").mkdir()
    (data / "broken").mkdir()
    (data / "broken" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    args = parse_args(["--data-dir", str(data), "--api", "--disable-console-progressbars"])
    app = webui.App.create(args)
    try:
        assert app.start(EMBEDDED_PATH.name).wait(120)
        clients = []
        for shared_by in ((), ("--listen",)):
            state = ApiState(app.models, app.queue, app.service, {}, app.paths.data_dir, app.settings)
            state.access = ServerAccess(app.paths.data_dir, shared_by)
            api = FastAPI()
            api.include_router(build_embedding_router(state))
            clients.append(TestClient(api))
        yield clients[0], app, data, clients[1]
    finally:
        app.queue.shutdown()


def train_body(**changes):
    """The fields A1111's Train tab sends (api.py passes them to train_embedding)."""
    body = {"id_task": "task(api)", "embedding_name": "circles", "learn_rate": "0.005", "batch_size": 1, "gradient_step": 1,
            "data_root": "train-data/circles", "log_directory": "textual_inversion", "training_width": 64, "training_height": 64,
            "varsize": False, "steps": 4, "clip_grad_mode": "norm", "clip_grad_value": "1.0", "shuffle_tags": True,
            "tag_drop_out": 0.1, "latent_sampling_method": "random", "use_weight": False, "create_image_every": 2,
            "save_embedding_every": 2, "template_filename": "style_filewords.txt", "save_image_with_stored_embedding": True,
            "preview_from_txt2img": False, "preview_prompt": "", "preview_negative_prompt": "", "preview_steps": 20,
            "preview_sampler_name": "Euler a", "preview_cfg_scale": 7, "preview_seed": -1, "preview_width": 512, "preview_height": 512}
    return {**body, **changes}


def test_create_then_train_answers_as_a1111(served):
    client, app, data, _ = served
    created = client.post("/sdapi/v1/create/embedding", json={"name": "circles", "num_vectors_per_token": 2, "overwrite_old": False,
                                                              "init_text": "circle"})
    path = app.paths.embeddings / "circles.pt"
    assert created.status_code == 200 and created.json() == {"info": f"create embedding filename: {path}"}
    assert torch.load(path, weights_only=True)["string_to_param"]["*"].shape == (2, 64)
    assert "circles" in app.service.libraries.embeddings.names  # usable at once

    again = client.post("/sdapi/v1/create/embedding", json={"name": "circles", "num_vectors_per_token": 1, "overwrite_old": False})
    assert again.status_code == 409 and again.json()["info"] == f"create embedding error: file {path} already exists"

    trained = client.post("/sdapi/v1/train/embedding", json=train_body())
    assert trained.status_code == 200, trained.text
    assert trained.json() == {"info": f"train embedding complete: filename: {path} error: None"}
    saved = torch.load(path, weights_only=True)
    assert saved["step"] == 4 and saved["sd_checkpoint_name"] == EMBEDDED_PATH.stem and saved["sd_checkpoint"]
    logs = list((data / "textual_inversion").glob("*/circles/embeddings/circles-*.pt"))
    assert sorted(p.name for p in logs) == ["circles-2.pt", "circles-4.pt"]


@pytest.mark.parametrize("changes, status, words", [
    ({"embedding_name": "nobody"}, 404, "Embedding 'nobody' not found"),
    ({"data_root": "empty"}, 400, "has no pictures"),
    ({"data_root": "no/such/folder"}, 400, "does not exist"),
    ({"data_root": "broken"}, 400, "cannot be read"),
    ({"template_filename": "nothing.txt"}, 400, "Prompt template file 'nothing.txt' not found"),
    ({"learn_rate": "quick"}, 400, "Learning rate 'quick'"),
    ({"batch_size": 0}, 400, "batch_size must be at least 1"),
    ({"preview_from_txt2img": True, "preview_sampler_name": "Nope"}, 400, "Nope"),
])
def test_bad_training_requests_are_4xx_with_a_sentence(served, changes, status, words):
    client, app, _, _ = served
    client.post("/sdapi/v1/create/embedding", json={"name": "circles", "num_vectors_per_token": 1, "overwrite_old": True})
    answer = client.post("/sdapi/v1/train/embedding", json=train_body(**changes))
    assert answer.status_code == status and words in answer.json()["detail"]
    assert answer.json()["info"].startswith("train embedding error: ")


def test_a_shared_server_refuses_folders_outside_the_data_folder(served, tmp_path):
    _, _, data, shared = served
    outside = tmp_path / "mine"
    outside.mkdir()
    shapes.draw(shapes.Scene("red", "circle", "blue"), (32, 32), 16).save(outside / "a.png")
    shared.post("/sdapi/v1/create/embedding", json={"name": "circles", "num_vectors_per_token": 1, "overwrite_old": True})
    refused = shared.post("/sdapi/v1/train/embedding", json=train_body(data_root=str(outside)))
    assert refused.status_code == 403 and "inside the data folder" in refused.json()["detail"]
    logs = shared.post("/sdapi/v1/train/embedding", json=train_body(log_directory=str(tmp_path / "logs")))
    assert logs.status_code == 403 and "log directory must be inside" in logs.json()["detail"] and not (tmp_path / "logs").exists()


def test_bad_create_requests_are_400_with_a_sentence(served):
    client = served[0]
    for body, words in (({"name": "!!!"}, "has no letters or digits"),
                        ({"name": "x", "num_vectors_per_token": 80}, "between 1 and 75"),
                        ({"name": "x", "num_vectors_per_token": "many"}, "must be a number")):
        answer = client.post("/sdapi/v1/create/embedding", json=body)
        assert answer.status_code == 400 and words in answer.json()["detail"], answer.text


def test_interrupt_answers_as_a_finished_run_with_the_steps_so_far_saved(served):
    """A1111's Interrupt ends training early and the route still answers "complete"."""
    import threading
    import time

    client, app, _, _ = served
    client.post("/sdapi/v1/create/embedding", json={"name": "circles", "num_vectors_per_token": 1, "overwrite_old": True})
    answers = []
    thread = threading.Thread(target=lambda: answers.append(client.post("/sdapi/v1/train/embedding", json=train_body(
        steps=100000, create_image_every=0, save_embedding_every=0))))
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = app.queue.current
        if job is not None and job.kind == "train-embedding" and job.progress.step >= 3:
            app.queue.interrupt(job.id)
            break
        time.sleep(0.05)
    thread.join(60)
    path = app.paths.embeddings / "circles.pt"
    assert answers and answers[0].status_code == 200 and answers[0].json() == {"info": f"train embedding complete: filename: {path} error: None"}
    assert 3 <= torch.load(path, weights_only=True)["step"] < 100000
