"""The Train tab's LoRA controls without a browser: one control per training parameter, whose
untouched values make the same run as the API's defaults; the status line and the score notes
say what a user needs to know."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from modules.jobs.queue import JobQueue
from modules.training.params import LoraTrainingParams
from modules.ui.train import LoraTab, scores_frame, scores_notes, status_text


class Runs:
    """A training service with one finished run, as TrainingService.view shows it."""

    def __init__(self, runs=()):
        self.runs = {r.name: r for r in runs}

    def run_names(self):
        return list(self.runs)

    def view(self, name):
        return self.runs[name]


def run_view(name, scores=(), **extra):
    values = dict(name=name, params={}, status="done", losses=[(1, 0.5), (2, 0.25)], samples=[], scores=list(scores),
                  lora=Path(f"/m/{name}.safetensors"), steps_done=2, total_steps=2, rate=3.0, message="")
    return SimpleNamespace(**{**values, **extra})


@pytest.fixture
def queue():
    jobs = JobQueue()
    yield jobs
    jobs.shutdown()


def test_every_parameter_has_a_control_and_the_defaults_are_the_apis(queue):
    models = SimpleNamespace(selected=SimpleNamespace(title="demo-shapes-64px.safetensors"), current=None,
                             titles=lambda: ["demo-shapes-64px.safetensors"])
    with gr.Blocks():
        with gr.Tab("Train") as tab:
            controls = LoraTab(queue, Runs(), models).build(tab)
    assert set(controls) == set(LoraTrainingParams.model_fields)
    assert all(c.elem_id == f"train_lora_{name}" for name, c in controls.items())
    assert controls["checkpoint"].value == "demo-shapes-64px.safetensors"  # the one in use
    assert controls["lr_scheduler"].choices == [(c, c) for c in ("constant", "constant_with_warmup", "linear", "cosine",
                                                                  "cosine_with_restarts", "polynomial")]

    untouched = {name: c.value for name, c in controls.items()}
    untouched.update(train_data_dir="/data/shapes", checkpoint=None)
    assert LoraTrainingParams.from_request(LoraTab._request(untouched)) == LoraTrainingParams(train_data_dir="/data/shapes")
    typed = {**untouched, "max_train_steps": 6.0, "sample_prompts": "a red circle\n\na blue square\n", "unet_lr": None}
    params = LoraTrainingParams.from_request(LoraTab._request(typed))
    assert params.max_train_steps == 6 and params.sample_prompts == ("a red circle", "a blue square") and params.unet_lr is None


def test_status_line_waiting_running_and_done(queue):
    release = threading.Event()
    first = queue.submit("train-lora", lambda job: release.wait(10), user="a")
    second = queue.submit("train-lora", lambda job: None, user="a")
    try:
        while first.progress.started_at is None and not first.finished.is_set():
            first.finished.wait(0.01)
        assert status_text(None, second, queue) == "Waiting in the queue: 1 of 1."
        first.progress.step, first.progress.steps = 3, 6
        running = status_text(run_view("r", status="running", steps_done=3, total_steps=6), first, queue)
        assert running == "Training: Step 3/6, 3.00 steps/s, ETA 1s."  # 3 steps left at 3 a second
    finally:
        release.set()
    second.wait(10)
    done = status_text(run_view("r"), second, queue)
    assert done == "Run r: done, 2/2 steps. LoRA r.safetensors."
    said = status_text(run_view("r", status="failed", lora=None, message="Dataset folder: 3.png cannot be read."), second, queue)
    assert said == "Run r: failed, 2/2 steps. Dataset folder: 3.png cannot be read."  # the service's reason, shown as it is


def test_scores_plot_and_notes_compare_runs():
    one = run_view("one", scores=[{"step": 2, "fid": 40.0, "kid": 0.02, "clip_score": None, "judge": 0.5, "notes": []},
                                  {"step": 4, "fid": 30.0, "kid": 0.01, "clip_score": None, "judge": 0.75, "notes": []}])
    two = run_view("two", scores=[{"step": 4, "fid": None, "kid": None, "clip_score": None, "judge": 0.6,
                                   "notes": ["FID and KID need the Inception weights in models/."]}])
    frame = scores_frame([one, two], "fid")
    assert frame.values.tolist() == [["one", 2, 40.0], ["one", 4, 30.0]]  # no FID for two: no point, not a zero
    assert scores_frame([one, two], "judge")["run"].tolist() == ["one", "one", "two"]
    notes = scores_notes([one, two, run_view("three")])
    assert "**one** at step 4: FID 30, KID 0.01, Judge 0.75" in notes
    assert "**two** at step 4: Judge 0.6  \nFID and KID need the Inception weights in models/." in notes
    assert "**three**: no scores yet." in notes
