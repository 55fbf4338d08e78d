"""TrainingService without a model: the checks and bookkeeping around a queued LoRA run (a job
rebuilt after a restart is found by its run name, a cancelled waiting run says so, a LoRA file
not trained here is not overwritten, run names cannot leave the runs folder)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from modules.jobs.queue import JobQueue
from modules.jobs.store import JobStore
from modules.training.params import LoraTrainingParams
from modules.training.routes import run_job
from modules.training.service import TrainingService, register_training_jobs


def make_service(root: Path) -> TrainingService:
    models = SimpleNamespace(require=lambda query: SimpleNamespace(title=query, model_name=query, path=root / query))
    return TrainingService(models, root / "models" / "Lora", root, root / "models", console=False)


def params_for(root: Path, name: str = "mine") -> LoraTrainingParams:
    folder = root / "pictures"
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(2):
        Image.new("RGB", (64, 64), (40 * k, 90, 200)).save(folder / f"{k}.png")
        (folder / f"{k}.txt").write_text(f"a teal square {k}")
    return LoraTrainingParams.from_request({"output_name": name, "train_data_dir": str(folder), "checkpoint": "demo.safetensors",
                                            "max_train_steps": 4, "resolution": 64})


def test_a_job_rebuilt_after_a_restart_is_found_by_its_run_name(tmp_path):
    service, params = make_service(tmp_path), params_for(tmp_path)
    first = JobQueue(store=JobStore(tmp_path / "queue.sqlite3"), local_worker=False)  # no worker: the server stops before it runs
    service.submit(first, params)
    second = JobQueue(store=JobStore(tmp_path / "queue.sqlite3"), local_worker=False)
    register_training_jobs(second, service)
    [restored] = second.restore()
    assert run_job(second, "mine") is restored  # the routes' and the tab's interrupt find it
    with pytest.raises(ValueError, match="already queued"):
        service.submit(second, params)  # a second run of the same name is refused as before the restart
    service.watch(restored)  # as the app does with what the queue restores
    assert second.interrupt(restored.id)
    assert service.view("mine").status == "cancelled"


def test_a_run_cancelled_while_it_waits_says_so(tmp_path):
    service, params = make_service(tmp_path), params_for(tmp_path)
    queue = JobQueue(local_worker=False)
    job = service.submit(queue, params)
    assert service.view("mine").status == "queued"
    assert queue.interrupt(job.id)
    view = service.view("mine")
    assert view.status == "cancelled" and "nothing was trained" in view.message


def test_a_lora_not_trained_here_is_not_overwritten(tmp_path):
    service, params = make_service(tmp_path), params_for(tmp_path, "downloaded")
    service.lora_dir.mkdir(parents=True)
    (service.lora_dir / "downloaded.safetensors").write_bytes(b"someone's LoRA")
    with pytest.raises(ValueError, match="not trained here"):
        service.submit(JobQueue(local_worker=False), params)
    assert (service.lora_dir / "downloaded.safetensors").read_bytes() == b"someone's LoRA"
    (service.runs_dir / "downloaded").mkdir(parents=True)  # a run of this name trained it: training it again goes on
    (service.runs_dir / "downloaded" / "params.json").write_text(json.dumps(params.to_payload()))
    service.submit(JobQueue(local_worker=False), params)


@pytest.mark.parametrize("name", ["..", ".", ".hidden"])
def test_run_names_stay_inside_the_runs_folder(tmp_path, name):
    service = make_service(tmp_path)
    (tmp_path / "train").mkdir()
    (tmp_path / "status.json").write_text(json.dumps({"status": "done", "message": "the data folder's own file"}))
    (tmp_path / "train" / ".hidden").mkdir()
    (tmp_path / "train" / ".hidden" / "status.json").write_text("{}")
    with pytest.raises(KeyError):
        service.view(name)
    assert service.run_names() == []


def test_a_home_folder_of_no_user_is_a_missing_folder(tmp_path):
    """pathlib's expanduser raises RuntimeError for "~nobody/..." (a 500 on the API); it is a folder that does not exist."""
    service, params = make_service(tmp_path), params_for(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        service.submit(JobQueue(local_worker=False), params.model_copy(update={"train_data_dir": "~no-such-user-here/pictures"}))


def test_epochs_override_max_steps_as_in_kohya(tmp_path):
    """A kohya user sends max_train_epochs and leaves max_train_steps at its default (1600)."""
    from modules.training.lora_trainer import total_steps

    params = params_for(tmp_path)
    assert total_steps(params.model_copy(update={"max_train_epochs": 3, "max_train_steps": 1600}), 5) == 15
    assert total_steps(params.model_copy(update={"max_train_epochs": 0, "max_train_steps": 40}), 5) == 40


def test_a_foreign_picture_in_the_samples_folder_is_not_a_sample(tmp_path):
    service = make_service(tmp_path)
    samples = tmp_path / "train" / "mine" / "samples"
    samples.mkdir(parents=True)
    (tmp_path / "train" / "mine" / "params.json").write_text("{}")
    for name in ("000002-0.png", "cover.png"):
        Image.new("RGB", (8, 8)).save(samples / name)
    assert service.view("mine").samples == [(2, [samples / "000002-0.png"])]


def test_a_run_started_at_once_is_not_shown_as_queued(tmp_path):
    """The worker may start the job (and write "running") before submit returns."""
    service, params = make_service(tmp_path), params_for(tmp_path)
    queue = JobQueue(local_worker=False)

    def submit_and_start(kind, task, **kwargs):
        job = JobQueue.submit(queue, kind, task, **kwargs)
        service._write_status("mine", "running", job=job.id)  # what run() writes first
        return job

    queue.submit = submit_and_start
    service.submit(queue, params)
    assert service.view("mine").status == "running"


def test_a_refused_submit_leaves_the_run_as_it_was(tmp_path):
    from modules.jobs.queue import QueueStopped

    service, params = make_service(tmp_path), params_for(tmp_path)
    queue = JobQueue(local_worker=False)
    queue.stop()
    with pytest.raises(QueueStopped):
        service.submit(queue, params)
    assert not (service.runs_dir / "mine" / "status.json").exists()


@pytest.mark.parametrize("field,value", [("resolution", 100), ("bucket_reso_steps", 12)])
def test_sizes_the_samples_cannot_use_are_refused_before_training(tmp_path, field, value):
    """A 100 px run trained to the end and then failed drawing its samples (sizes are multiples of 8)."""
    with pytest.raises(ValueError, match="multiple of 8"):
        LoraTrainingParams.from_request({"train_data_dir": str(tmp_path), field: value})
