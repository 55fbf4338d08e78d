"""LoRA training on the demo model: the kohya file it writes (keys, alpha, ss_* metadata) loads
in our LoRA loader and in diffusers' kohya converter and changes the picture; a resumed run
equals an uninterrupted one; a queued run can be interrupted, survives a restart and leaves
the generation model untouched. The test that it really learns a new shape is in
test_lora_learns.py (slow)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from modules.demo import shapes
from modules.demo.embedded import EMBEDDED_PATH
from modules.training.params import LoraTrainingParams

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def draw_set(folder: Path, count: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    for k in range(count):
        scene = shapes.Scene(shapes.COLOURS[k % 8], shapes.SHAPES[k % 4], "white" if k % 8 != 6 else "black")
        from PIL import Image

        Image.fromarray(shapes.random_picture(scene, rng)).save(folder / f"{k:02d}.png")
        (folder / f"{k:02d}.txt").write_text(scene.prompt())
    return folder


def tiny_params(folder: Path, **changes) -> LoraTrainingParams:
    values = dict(output_name="tiny", train_data_dir=str(folder), network_dim=4, network_alpha=2, learning_rate=1e-3, max_train_steps=6,
                  train_batch_size=2, resolution=64, enable_bucket=False, seed=3, sample_steps=4)
    return LoraTrainingParams.from_request({**values, **changes})


def load_demo():
    from modules.models.loader import load_checkpoint

    return load_checkpoint(EMBEDDED_PATH, configs_dir=CONFIGS, device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)


def trainer_for(params, folder: Path, run_dir: Path, lora: Path, model=None):
    from modules.training import dataset
    from modules.training.lora_trainer import LoraTrainer

    return LoraTrainer(model or load_demo(), params, dataset.scan_folder(folder), run_dir, lora, device=torch.device("cpu"),
                       checkpoint_name="demo-shapes-64px", console=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 6-step run: (LoRA path, run folder, params)."""
    root = tmp_path_factory.mktemp("lora")
    folder = draw_set(root / "data" / "5_shapes")
    params = tiny_params(root / "data", conv_dim=2, conv_alpha=1)  # LoCon too: the ResNet 3×3 convolutions
    trainer = trainer_for(params, root / "data", root / "run", root / "Lora" / "tiny.safetensors")
    outcome = trainer.train()
    assert outcome.steps == 6 and not outcome.interrupted and outcome.lora == root / "Lora" / "tiny.safetensors"
    return outcome.lora, root / "run", params, folder


def test_the_file_is_kohya_layout_with_training_metadata(trained):
    lora, _, params, _ = trained
    with safe_open(str(lora), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
        alphas = {k: f.get_tensor(k).item() for k in keys if k.endswith(".alpha")}
        down = f.get_tensor("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight")
    assert keys and all(k.startswith(("lora_unet_", "lora_te_")) for k in keys)
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj.") for k in keys)  # SD 1.x: lora_te_, not lora_te1_
    assert {k.rsplit(".", 2)[-2] + "." + k.rsplit(".", 1)[-1] for k in keys if not k.endswith(".alpha")} == {"lora_down.weight", "lora_up.weight"}
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    assert {v for k, v in alphas.items() if "resnets" not in k} == {2.0} and alphas[conv + ".alpha"] == 1.0 and down.shape[0] == 4
    with safe_open(str(lora), framework="pt") as f:
        assert f.get_tensor(conv + ".lora_down.weight").shape[::2] == (2, 3) and f.get_tensor(conv + ".lora_up.weight").shape[2:] == (1, 1)
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0" and meta["ss_output_name"] == "tiny"
    assert meta["ss_steps"] == "6" and meta["ss_sd_model_name"] == "demo-shapes-64px" and meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_num_train_images"] == "20"  # 4 pictures × 5 repeats
    tags = json.loads(meta["ss_tag_frequency"])
    assert tags["5_shapes"]["a red circle on a white background"] == 1  # kohya: pictures with the tag, not repeats
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1.0"}  # LoCon, as kohya writes it
    assert json.loads(meta["ss_dataset_dirs"]) == {"5_shapes": {"n_repeats": 5, "img_count": 4}}


def test_the_file_loads_in_our_lora_loader_and_changes_the_picture(trained):
    from modules.generation.params import GenerationParams
    from modules.generation.runner import PromptSetup, Runner
    from modules.models.catalog import HashCache
    from modules.models.lora import LoraLibrary

    lora, _, _, _ = trained
    library = LoraLibrary((lora.parent,), HashCache(lora.parent / "hashes.json", hashing=False))
    runner = Runner(load_demo(), PromptSetup(loras=library))
    params = GenerationParams.create(prompt="a red circle on a white background", width=64, height=64, steps=6, cfg_scale=5)
    plain = np.asarray(next(iter(runner.txt2img(params, 7))).images[0], dtype=np.int16)
    with_lora = GenerationParams.create(prompt="a red circle on a white background <lora:tiny:1>", width=64, height=64, steps=6, cfg_scale=5)
    prepared = runner.prepare(with_lora)
    assert not prepared.warnings
    changed = np.asarray(next(iter(runner.txt2img(with_lora, 7, prompts=prepared))).images[0], dtype=np.int16)
    assert np.abs(changed - plain).max() > 0
    again = np.asarray(next(iter(runner.txt2img(params, 7))).images[0], dtype=np.int16)
    assert np.array_equal(again, plain)  # off again: the base picture, bit for bit


def test_diffusers_loads_every_module_of_the_file(trained):
    """diffusers' own kohya path (`load_lora_weights` on a pipeline of the demo's parts) puts
    an adapter on every module the file names, in the UNet and the text encoder."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from peft.tuners.lora import LoraLayer

    lora, _, _, _ = trained
    with safe_open(str(lora), framework="pt") as f:
        modules = {k.split(".")[0] for k in f.keys()}
    m = load_demo()
    pipe = StableDiffusionPipeline(vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet,
                                   scheduler=DDIMScheduler.from_config(m.scheduler_config), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.load_lora_weights(str(lora), adapter_name="trained")
    in_unet = sum(isinstance(x, LoraLayer) for x in m.unet.modules())
    in_text = sum(isinstance(x, LoraLayer) for x in m.text_encoder.modules())
    assert in_unet == len([k for k in modules if k.startswith("lora_unet_")]) > 0
    assert in_text == len([k for k in modules if k.startswith("lora_te_")]) > 0


def test_a_resumed_run_ends_where_the_uninterrupted_one_does(tmp_path, trained):
    from modules.training.lora_trainer import Hooks

    _, _, _, folder = trained
    params = tiny_params(folder.parent, max_train_steps=6, save_every_n_steps=2)
    whole = trainer_for(params, folder.parent, tmp_path / "a", tmp_path / "a.safetensors").train()
    calls = []
    first = trainer_for(params, folder.parent, tmp_path / "b", tmp_path / "b.safetensors")
    cut = first.train(Hooks(should_stop=lambda: len(calls) >= 4, on_step=lambda s, t, loss: calls.append(s)))
    assert cut.interrupted and cut.steps == 4
    with safe_open(str(tmp_path / "b.safetensors"), framework="pt") as f:
        assert f.metadata()["ss_steps"] == "4"  # what it had is saved
    second = trainer_for(params, folder.parent, tmp_path / "b", tmp_path / "b.safetensors")
    resumed = second.train()
    assert resumed.resumed_from == 4 and resumed.steps == 6 and not resumed.interrupted
    assert (tmp_path / "a-step000002.safetensors").exists() and (tmp_path / "a-step000004.safetensors").exists()
    from safetensors.torch import load_file

    a, b = load_file(str(whole.lora)), load_file(str(resumed.lora))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    log = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2", "3", "4", "5", "6"]


def test_a_run_cut_off_by_a_crash_logs_each_step_once(tmp_path, trained):
    """A crash after the last state save: the steps after it are trained again, and logged once."""
    from modules.training.lora_trainer import Hooks

    _, _, _, folder = trained
    params = tiny_params(folder.parent, max_train_steps=5, save_every_n_steps=2)

    def power_cut(step, total, loss):
        if step == 3:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        trainer_for(params, folder.parent, tmp_path / "c", tmp_path / "c.safetensors").train(Hooks(on_step=power_cut))
    resumed = trainer_for(params, folder.parent, tmp_path / "c", tmp_path / "c.safetensors").train()
    assert resumed.resumed_from == 2 and resumed.steps == 5
    log = (tmp_path / "c" / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2", "3", "4", "5"]


def test_another_base_checkpoint_starts_over(tmp_path, trained):
    """Checkpoint left empty means the one in use: a LoRA begun on one base is not continued on another."""
    from modules.training import dataset
    from modules.training.lora_trainer import LoraTrainer

    _, _, _, folder = trained
    params = tiny_params(folder.parent, max_train_steps=2)

    def on(base: str):
        return LoraTrainer(load_demo(), params, dataset.scan_folder(folder.parent), tmp_path / "r", tmp_path / "r.safetensors",
                           device=torch.device("cpu"), checkpoint_name=base, console=False)

    assert on("first-model").train().steps == 2
    again = on("other-model").train()
    assert again.resumed_from == 0 and again.steps == 2


def test_new_sample_prompts_keep_the_run(tmp_path, trained):
    """Only what decides the weights must match for a resume: samples and held-out prompts
    may change between an interrupted run and its continuation."""
    from modules.training.lora_trainer import Hooks

    _, _, _, folder = trained
    steps = []
    first = trainer_for(tiny_params(folder.parent, max_train_steps=4), folder.parent, tmp_path / "s", tmp_path / "s.safetensors")
    first.train(Hooks(should_stop=lambda: len(steps) >= 2, on_step=lambda s, t, loss: steps.append(s)))
    changed = tiny_params(folder.parent, max_train_steps=4, sample_prompts=("a red star",), eval_prompts=("a blue square",), save_every_n_steps=3)
    again = trainer_for(changed, folder.parent, tmp_path / "s", tmp_path / "s.safetensors").train()
    assert again.resumed_from == 2 and again.steps == 4


def test_other_settings_start_over(tmp_path, trained):
    _, _, _, folder = trained
    trainer_for(tiny_params(folder.parent, max_train_steps=2), folder.parent, tmp_path / "r", tmp_path / "r.safetensors").train()
    again = trainer_for(tiny_params(folder.parent, max_train_steps=3, learning_rate=2e-3), folder.parent, tmp_path / "r",
                        tmp_path / "r.safetensors").train()
    assert again.resumed_from == 0 and again.steps == 3


# --------------------------------------------------------------------------- as a queue job


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import webui
    from modules.options import parse_args

    data = tmp_path_factory.mktemp("train-app")
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(EMBEDDED_PATH, data / "models" / "Stable-diffusion" / EMBEDDED_PATH.name)
    draw_set(data / "pictures", 4)
    app = webui.App.create(parse_args(["--data-dir", str(data), "--disable-console-progressbars"]))
    assert app.start(EMBEDDED_PATH.name).wait(120)
    yield app
    app.queue.shutdown()


def generate_plain(app) -> np.ndarray:
    from modules.generation.params import GenerationParams

    active = app.models.ensure()
    from modules.generation.runner import Runner

    params = GenerationParams.create(prompt="a blue square on a yellow background", width=64, height=64, steps=6, cfg_scale=5)
    return np.asarray(next(iter(Runner(active.model).txt2img(params, 11))).images[0])


def test_a_queued_run_saves_its_lora_samples_and_scores_and_leaves_the_model_alone(app):
    from modules.jobs.queue import JobStatus

    before = generate_plain(app)
    params = tiny_params(Path("pictures"), output_name="queued", sample_every_n_steps=3, sample_prompts=("a red star on a white background",),
                         eval_prompts=("a green square on a white background",), eval_every_n_steps=3)
    job = app.training.submit(app.queue, params)
    assert job.wait(300) and job.status is JobStatus.DONE, job.error
    lora = app.paths.loras / "queued.safetensors"
    assert job.result.lora == lora and lora.exists() and job.result.steps == 6
    view = app.training.view("queued")
    assert view.status == "done" and view.steps_done == 6 and view.total_steps == 6 and [s for s, _ in view.losses] == list(range(1, 7))
    assert [step for step, _ in view.samples] == [3, 6] and all(p.exists() for _, paths in view.samples for p in paths)
    assert [s["step"] for s in view.scores] == [3, 6] and all(s["judge"] is not None for s in view.scores)
    assert any("Inception" in note or "inception" in note for note in view.scores[0]["notes"])  # no weights here: said plainly
    assert json.loads((app.paths.loras / "queued.scores.json").read_text())[-1]["step"] == 6
    assert json.loads((app.paths.loras / "queued.json").read_text())["sd version"] == "SD1"
    assert "queued" in app.service.libraries.loras.names() if hasattr(app.service.libraries.loras, "names") else True
    assert np.array_equal(generate_plain(app), before)


def test_interrupt_stops_the_run_and_keeps_what_it_learnt(app):
    from modules.jobs.queue import JobStatus

    params = tiny_params(Path("pictures"), output_name="stopped", max_train_steps=400)
    job = app.training.submit(app.queue, params)
    deadline = time.monotonic() + 120
    while job.progress.step < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    app.queue.interrupt(job.id)
    assert job.wait(120) and job.status is JobStatus.INTERRUPTED
    assert job.result.interrupted and 2 <= job.result.steps < 400
    with safe_open(str(app.paths.loras / "stopped.safetensors"), framework="pt") as f:
        assert f.metadata()["ss_steps"] == str(job.result.steps)
    assert app.training.view("stopped").status == "interrupted"


def test_the_training_copy_and_the_scorers_are_let_go_before_the_memory_is_freed(app, monkeypatch):
    """On CUDA the cache is emptied at the end of the run: nothing the run loaded may still be held then."""
    import gc
    import weakref

    from modules.training import scores, service
    from modules.training.lora_trainer import LoraTrainer

    made, held = [], []

    class TrackedScores(scores.ScoreModels):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    class TrackedTrainer(LoraTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    def collect():
        gc.collect()
        held.extend(type(ref()).__name__ for ref in made if ref() is not None)

    monkeypatch.setattr(scores, "ScoreModels", TrackedScores)
    monkeypatch.setattr("modules.training.lora_trainer.LoraTrainer", TrackedTrainer)
    monkeypatch.setattr(service, "gc", type("Gc", (), {"collect": staticmethod(collect)}))
    app.training.run(None, tiny_params(Path("pictures"), output_name="freed", max_train_steps=1))
    assert len(made) == 2 and held == []


def test_bad_folders_are_refused_before_queueing(app, tmp_path):
    from modules.network import AccessRefused, ServerAccess

    (app.paths.data_dir / "nothing").mkdir(exist_ok=True)
    with pytest.raises(ValueError, match="nothing"):
        app.training.submit(app.queue, tiny_params(Path("nothing")))
    shared = type(app.training)(app.models, app.paths.loras, app.paths.data_dir, app.paths.models_dir,
                                access=ServerAccess(app.paths.data_dir, ("--listen",)))
    draw_set(tmp_path / "outside")
    with pytest.raises(AccessRefused, match="data folder"):
        shared.submit(app.queue, tiny_params(tmp_path / "outside"))
    assert not any(j.kind == "train-lora" for j in app.queue.waiting())


def test_a_run_cut_off_by_a_restart_resumes_from_its_state(tmp_path):
    """The job is recorded; the server stops mid-run (the state so far is saved); the next
    start restores the job and the trainer goes on from the saved step."""
    import webui
    from modules.jobs.queue import JobStatus
    from modules.options import parse_args

    data = tmp_path / "data"
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(EMBEDDED_PATH, data / "models" / "Stable-diffusion" / EMBEDDED_PATH.name)
    draw_set(data / "pictures", 4)
    args = parse_args(["--data-dir", str(data), "--disable-console-progressbars"])
    first = webui.App.create(args)
    assert first.start(EMBEDDED_PATH.name).wait(120)
    job = first.training.submit(first.queue, tiny_params(Path("pictures"), output_name="restart", max_train_steps=40))
    deadline = time.monotonic() + 120
    while job.progress.step < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.queue.shutdown(timeout=60)
    cut_at = json.loads((data / "train" / "restart" / "status.json").read_text())
    state = torch.load(data / "train" / "restart" / "state" / "state.pt", weights_only=True)
    assert 3 <= state["step"] < 40 and cut_at["status"] == "interrupted"

    second = webui.App.create(args)
    second.start(EMBEDDED_PATH.name)
    try:
        restored = [j for j in second.queue.list() if j.kind == "train-lora"]
        assert len(restored) == 1
        assert restored[0].wait(300) and restored[0].status is JobStatus.DONE, restored[0].error
        assert restored[0].result.steps == 40 and f"Resumed from step {state['step']}" in " ".join(restored[0].result.notes)
        log = (data / "train" / "restart" / "log.csv").read_text().splitlines()[1:]
        assert [int(line.split(",")[0]) for line in log] == list(range(1, 41))
    finally:
        second.queue.shutdown()
