"""The Train tab's LoRA controls without a browser: one control per training parameter, whose
untouched values make the same run as the API's defaults; the status line and the score notes
say what a user needs to know; a page opened while a run trains follows it; a model's guide
gives the controls its training values."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from modules.jobs.queue import JobQueue, JobStatus
from modules.models.hints import ModelHints
from modules.training.params import LoraTrainingParams
from modules.ui.train import LoraTab, checkpoint_hints, scores_frame, scores_notes, status_text

DEMO = "demo-shapes-64px.safetensors"


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


def started(queue, name, release, user=""):
    """A LoRA job of run `name` as TrainingService.submit queues it (the page did not start it);
    it trains until released or interrupted."""
    def train(job):
        while not release.wait(0.01) and not job.control.interrupted:
            pass

    job = queue.submit("train-lora", train, user=user)
    job.training_name = name
    return job


def wait_running(job):
    while job.status is not JobStatus.RUNNING and not job.finished.is_set():
        job.finished.wait(0.01)


def test_a_page_opened_while_a_run_trains_follows_it(queue, tmp_path):
    """A run started over the API (or before the page was reloaded) is shown and followed at
    once: the menu lists the runs, the training one is chosen, the status counts its steps, the
    loss and samples are its own, the timer polls, and Interrupt stops it."""
    sample = tmp_path / "000004-0.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (0, 128, 128)).save(sample)
    runs = Runs([run_view("api-run", status="running", steps_done=4, total_steps=8, lora=None, samples=[(4, [sample])],
                          params={"sample_prompts": ["a teal circle"]}),
                 run_view("older")])
    tab = LoraTab(queue, runs, SimpleNamespace())
    release = threading.Event()
    job = started(queue, "api-run", release)
    try:
        wait_running(job)
        job.progress.step, job.progress.steps = 4, 8
        menu, compare, status, loss, gallery, shown, timer, watched = tab.follow(None, [])
        assert menu["choices"] == ["api-run", "older"] and menu["value"] == "api-run"
        assert compare["choices"] == ["api-run", "older"]
        assert status == "Training: Step 4/8, 3.00 steps/s, ETA 1s."
        assert loss.values.tolist() == [[1, 0.5], [2, 0.25]]
        assert [caption for _, caption in gallery["value"]] == ["step 4: a teal circle"] and shown == 4
        assert timer.active and watched == job.id
        # the timer's next tick, with what follow gave it, keeps following
        assert tab._live(menu["value"], watched, shown)[0] == "Training: Step 4/8, 3.00 steps/s, ETA 1s."

        # another run shown and finished: the tab, opened again, goes back to the one that trains
        assert tab.follow("older", [])[0]["value"] == "api-run"
        assert tab.interrupt("api-run", watched, "ip:127.0.0.1") == ("info", "Interrupting: the run saves what it has learnt so far.")
        assert job.wait(10) and job.status is JobStatus.INTERRUPTED
    finally:
        release.set()
    menu, _, status, _, _, _, timer, watched = tab.follow("api-run", [])  # over: the run stays shown, the timer stops
    assert menu["value"] == "api-run" and not timer.active and watched is None
    assert status == "Run api-run: running, 4/8 steps."  # what its folder says (the service writes the outcome)


def test_a_waiting_run_is_followed_and_only_its_owner_stops_it(queue):
    runs = Runs([run_view("mine", status="queued", steps_done=0, total_steps=0, losses=[], lora=None), run_view("done")])
    tab = LoraTab(queue, runs, SimpleNamespace())
    release = threading.Event()
    first = started(queue, "someone-elses", release, user="bob")  # holds the worker
    waiting = started(queue, "mine", release, user="ann")
    try:
        wait_running(first)
        menu, _, status, *_, timer, watched = tab.follow(None, [])
        assert menu["value"] == "mine"  # the running job's run has no folder: not a run to show
        assert status == "Waiting in the queue: 1 of 1." and timer.active and watched == waiting.id
        assert tab.interrupt("mine", watched, "bob") == ("warning", "That training run was started by someone else.")
        assert waiting.status is JobStatus.QUEUED
        assert tab.interrupt("mine", watched, "ann")[0] == "info" and waiting.status is JobStatus.CANCELLED
    finally:
        release.set()


def test_with_nothing_training_the_newest_run_is_shown(queue):
    tab = LoraTab(queue, Runs([run_view("newest"), run_view("old")]), SimpleNamespace())
    menu, _, status, _, gallery, *_, timer, watched = tab.follow(None, [])
    assert menu["value"] == "newest" and status == "Run newest: done, 2/2 steps. LoRA newest.safetensors."
    assert gallery["value"] == [] and not timer.active and watched is None  # no samples: not the last run's
    assert tab.follow("old", [])[0]["value"] == "old"  # the one the user shows stays
    assert LoraTab(queue, Runs(), SimpleNamespace()).follow(None, [])[0] == {"__type__": "update", "choices": [], "value": None}


DEMO_TRAINING = {"resolution": 64, "enable_bucket": False, "network_dim": 8, "network_alpha": 8, "conv_dim": 8, "conv_alpha": 8,
                 "learning_rate": 0.005, "max_train_steps": 800, "lr_scheduler": "cosine", "train_batch_size": 8, "sample_steps": 20}


def test_the_models_guide_sets_the_training_values_the_user_left_alone(queue):
    demo = SimpleNamespace(title=DEMO, path=Path("/m/demo.safetensors"))
    sd15 = SimpleNamespace(title="sd15.safetensors", path=Path("/m/sd15.safetensors"))
    models = SimpleNamespace(selected=demo, current=demo, titles=lambda: [DEMO, sd15.title], find={DEMO: demo, sd15.title: sd15}.get,
                             active=SimpleNamespace(info=demo, hints=ModelHints(training=DEMO_TRAINING)), configs_dir=Path("/none"))
    tab = LoraTab(queue, Runs(), models)
    with gr.Blocks():
        with gr.Tab("Train") as t:
            controls = tab.build(t)
    hintable = {n: c for n, c in controls.items() if n != "checkpoint"}
    values = {n: c.value for n, c in hintable.items()}
    values["network_dim"] = 32  # the user's own rank

    *updates, note, last = tab.hint_updates(DEMO, None, values, hintable)
    given = {n: u["value"] for n, u in zip(hintable, updates) if "value" in u}
    assert given == {k: v for k, v in DEMO_TRAINING.items() if k != "network_dim"}
    assert note.startswith("From this model's guide: Resolution 64, Aspect-ratio buckets off, ")
    assert note.endswith("Kept your own: Rank (guide: 8).")
    assert last == (DEMO, DEMO_TRAINING)
    after = {**values, **given}
    params = LoraTrainingParams.from_request(LoraTab._request({**after, "train_data_dir": "/d"}))
    assert (params.resolution, params.enable_bucket, params.network_dim, params.learning_rate, params.train_batch_size) == (64, False, 32, 0.005, 8)

    # the same model again (the tab opened again): nothing changes, so nothing typed is overwritten
    assert all(u == {"__type__": "update"} for u in tab.hint_updates(DEMO, last, after, hintable)[:-1])
    # another model without a guide: the guide's values go back to the usual ones, the user's own rank stays
    after["learning_rate"] = 0.01  # changed by the user after the guide's
    *updates, note, last = tab.hint_updates(sd15.title, last, after, hintable)
    back = {n: u["value"] for n, u in zip(hintable, updates) if "value" in u}
    assert back == {"resolution": 512, "enable_bucket": True, "network_alpha": 8.0, "conv_dim": 0, "conv_alpha": 1.0,
                    "max_train_steps": 1600, "lr_scheduler": "constant", "train_batch_size": 1, "sample_steps": 20}
    assert note == "" and last == (sd15.title, {})


def test_a_checkpoint_not_loaded_has_its_config_folders_training_hints():
    from modules.demo.embedded import EMBEDDED_PATH
    from modules.models.catalog import CheckpointInfo

    info = CheckpointInfo(EMBEDDED_PATH, EMBEDDED_PATH.stem, EMBEDDED_PATH.stem)
    configs = Path(__file__).resolve().parents[2] / "configs"
    models = SimpleNamespace(find=lambda title: info if title == DEMO else None, current=info, active=None, configs_dir=configs)
    assert dict(checkpoint_hints(models, DEMO).training) == DEMO_TRAINING
    assert dict(checkpoint_hints(models, None).training) == DEMO_TRAINING  # the one in use
    assert checkpoint_hints(models, "gone.safetensors") == ModelHints()
    broken = SimpleNamespace(**{**vars(models), "find": lambda title: CheckpointInfo(Path("/nonexistent.safetensors"), "n", "n")})
    assert checkpoint_hints(broken, "n") == ModelHints()
