"""Textual inversion on the demo model: A1111's embedding files, training that learns while
the model stays as it was, interrupt, resume, and A1111's learn-rate schedules."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from modules.demo import shapes
from modules.generation.params import GenerationParams
from modules.generation.runner import PromptSetup, Runner
from modules.generation.text_encoding import PromptEncoder
from modules.models.catalog import HashCache
from modules.models.embeddings import EmbeddingLibrary, load_embedding
from modules.training import embedding_trainer as et

NAME = "zorble"


@pytest.fixture
def folders(tmp_path):
    """Embeddings folder, a folder of red circles on blue, and a template of the name alone."""
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i, centre in enumerate([(24, 24), (40, 40), (32, 28), (28, 38)]):
        shapes.draw(shapes.Scene("red", "circle", "blue"), centre, 16).save(pictures / f"{i:02d}-red_circle.png")
    template = tmp_path / "name.txt"
    template.write_text("[name]\n")
    return tmp_path / "embeddings", pictures, template, tmp_path / "log"


def library(folder):
    return EmbeddingLibrary((folder,), HashCache(None, hashing=False))


def options(pictures, **changes):
    base = dict(embedding_name=NAME, data_root=str(pictures), training_width=64, training_height=64, steps=20, batch_size=2,
                learn_rate="0.1", create_image_every=10, save_embedding_every=10)
    return et.TrainOptions(**{**base, **changes})


def picture(model, lib, prompt):
    params = GenerationParams(prompt=prompt, steps=4, width=64, height=64, sampler_name="Euler")
    return np.asarray(next(iter(Runner(model, PromptSetup(embeddings=lib)).txt2img(params, 7))).images[0])


def denoising_loss(model, lib, pictures) -> float:
    """The prompt NAME's noise-prediction error on the training pictures, for fixed noise and
    timesteps, with the prompt encoded as a generation encodes it."""
    from diffusers import DDPMScheduler

    from modules.training.dataset import load_picture, scan_folder

    lib.refresh()
    cond = PromptEncoder(model, lib).encode(NAME).embeds
    schedule = DDPMScheduler.from_config(model.scheduler_config)
    gen = torch.Generator().manual_seed(0)
    total = 0.0
    with torch.no_grad():
        for sample in scan_folder(pictures, caption_template="[filewords]"):
            z = model.vae.encode(load_picture(sample, (64, 64))[None]).latent_dist.mean * model.vae.config.scaling_factor
            for t in (100, 300, 500, 700, 900):
                noise = torch.randn(z.shape, generator=gen)
                pred = model.unet(schedule.add_noise(z, noise, torch.tensor([t])), t, cond).sample
                total += torch.nn.functional.mse_loss(pred, noise).item()
    return total


def test_create_writes_a1111s_pt_from_the_init_texts_token_vectors(demo_model, folders):
    emb_dir = folders[0]
    path = et.create_embedding(demo_model, emb_dir, "my style!", 3, init_text="red circle")
    assert path == emb_dir / "my style.pt"  # A1111 drops characters other than letters, digits and ._-
    data = torch.load(path, weights_only=True)
    assert set(data) == {"string_to_token", "string_to_param", "name", "step", "sd_checkpoint", "sd_checkpoint_name"}
    assert data["name"] == "my style" and data["step"] == 0 and data["string_to_token"] == {"*": 265}
    vectors = data["string_to_param"]["*"]
    table = demo_model.text_encoder.get_input_embeddings().weight
    red, circle = demo_model.tokenizer("red circle", add_special_tokens=False)["input_ids"]
    assert vectors.shape == (3, table.shape[1])
    for row, token in zip(vectors, (red, red, circle)):  # i * tokens // vectors: red, red, circle
        assert torch.equal(row, table[token].detach())
    assert torch.count_nonzero(torch.load(et.create_embedding(demo_model, emb_dir, "blank", 2, init_text=""),
                                          weights_only=True)["string_to_param"]["*"]) == 0


def test_an_existing_name_is_refused_unless_overwrite_old(demo_model, folders):
    emb_dir = folders[0]
    et.create_embedding(demo_model, emb_dir, NAME, 1, init_text="red")
    with pytest.raises(et.EmbeddingExists, match="already exists"):
        et.create_embedding(demo_model, emb_dir, NAME, 1, init_text="blue")
    path = et.create_embedding(demo_model, emb_dir, NAME, 2, overwrite_old=True, init_text="blue")
    assert torch.load(path, weights_only=True)["string_to_param"]["*"].shape[0] == 2


def test_training_learns_the_pictures_and_leaves_the_model_as_it_was(demo_model, folders):
    emb_dir, pictures, template, log_root = folders
    et.create_embedding(demo_model, emb_dir, NAME, 2, init_text="yellow star")
    lib = library(emb_dir)
    base_before, word_before = picture(demo_model, lib, "a red circle on a blue background"), picture(demo_model, lib, NAME)
    loss_before = denoising_loss(demo_model, lib, pictures)

    steps_seen = []
    trainer = et.EmbeddingTrainer(demo_model, lib, options(pictures), pictures, log_root, template, ("0123456789", "demo-shapes-64px"),
                                  progress=lambda step, steps: steps_seen.append((step, steps)))
    result = trainer.run()

    assert result.step == 20 and not result.interrupted and steps_seen[0] == (0, 20) and steps_seen[-1] == (20, 20)
    saved = load_embedding(emb_dir / f"{NAME}.pt")
    assert saved.step == 20 and saved.info == {"step": 20, "sd_checkpoint": "0123456789", "sd_checkpoint_name": "demo-shapes-64px"}
    loss_after = denoising_loss(demo_model, lib, pictures)
    assert loss_after < 0.8 * loss_before  # it learned the red circles
    assert not np.array_equal(picture(demo_model, lib, NAME), word_before)  # the word now draws something else
    assert np.array_equal(picture(demo_model, lib, "a red circle on a blue background"), base_before)  # the model did not change
    assert all(not p.requires_grad or p.grad is None for p in demo_model.unet.parameters())

    log_dir = result.log_dir
    assert log_dir.parent.parent == log_root and log_dir.name == NAME  # textual_inversion/<date>/<name>
    assert sorted(p.name for p in (log_dir / "embeddings").iterdir()) == [f"{NAME}-10.pt", f"{NAME}-20.pt"]
    assert load_embedding(log_dir / "embeddings" / f"{NAME}-10.pt").step == 10
    assert sorted(p.name for p in (log_dir / "images").iterdir()) == [f"{NAME}-10.png", f"{NAME}-20.png"]
    with (log_dir / et.LOSS_CSV).open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 21)) and all(float(r["loss"]) > 0 for r in rows)
    assert float(rows[0]["learn_rate"]) == 0.1


def test_interrupt_saves_the_vectors_so_far_and_a_restart_resumes_from_the_last_copy(demo_model, folders):
    emb_dir, pictures, template, log_root = folders
    et.create_embedding(demo_model, emb_dir, NAME, 1, init_text="shape")
    lib = library(emb_dir)
    before = load_embedding(emb_dir / f"{NAME}.pt").for_width(64).clone()
    calls = []

    def interrupted() -> bool:  # the Interrupt button, pressed once training is under way
        calls.append(1)
        return len(calls) > 12

    trainer = et.EmbeddingTrainer(demo_model, lib, options(pictures, steps=50, save_embedding_every=3, create_image_every=0),
                                  pictures, log_root, template)
    saves = []
    result = trainer.run(interrupted=interrupted, on_save=saves.append)
    assert result.interrupted and 0 < result.step < 50
    saved = load_embedding(emb_dir / f"{NAME}.pt")
    assert saved.step == result.step and not torch.equal(saved.for_width(64), before)
    assert saves and saves[-1]["step"] % 3 == 0

    # a restart: the file in the embeddings folder is older than the log folder's last copy
    et.save_embedding(emb_dir / f"{NAME}.pt", {"clip_l": before}, NAME, 0, None, None)
    lib.refresh()
    resumed = et.EmbeddingTrainer(demo_model, lib, options(pictures, steps=saves[-1]["step"] + 2, save_embedding_every=0,
                                                           create_image_every=0), pictures, log_root, template)
    steps = []
    resumed.progress = lambda step, total: steps.append((step, total))
    assert resumed.run(resume=saves[-1]).step == saves[-1]["step"] + 2
    assert steps == [(0, 2), (1, 2), (2, 2)]  # only the steps left were run


def test_learn_rate_schedules_read_as_a1111_reads_them():
    assert et.parse_schedule("0.005", 1000) == [(0.005, 1000)]
    assert et.parse_schedule("0.005:100, 1e-3:1000, 1e-5", 5000) == [(0.005, 100), (0.001, 1000), (1e-5, 5000)]
    assert et.parse_schedule("0.01:10, 0.001:-1, 5:20", 50) == [(0.01, 10), (0.001, 50)]  # -1: to the end, nothing after
    assert et.parse_schedule("0.01:10, 0.001:500", 100) == [(0.01, 10), (0.001, 100)]  # cut at max steps
    schedule = et.parse_schedule("0.01:10, 0.001:20", 100)
    assert [et.rate_at(schedule, s) for s in (0, 9, 10, 19, 20)] == [0.01, 0.01, 0.001, 0.001, None]  # ends at 20
    for bad in ("fast", "0.01:ten", "-1", "0.01:0"):
        with pytest.raises(ValueError, match="Learning rate"):
            et.parse_schedule(bad, 100)


def test_request_values_are_checked_with_readable_sentences():
    opts = et.TrainOptions.from_request({"embedding_name": "x", "data_root": "d", "learn_rate": 0.01, "batch_size": "2",
                                          "shuffle_tags": "true", "id_task": "task(abc)", "preview_sampler_index": 0})
    assert opts.learn_rate == "0.01" and opts.batch_size == 2 and opts.shuffle_tags is True
    for values, message in (({"data_root": "d"}, "Embedding not selected"),
                            ({"embedding_name": "x"}, "Dataset directory is empty"),
                            ({"embedding_name": "x", "data_root": "d", "batch_size": 1.5}, "whole number"),
                            ({"embedding_name": "x", "data_root": "d", "latent_sampling_method": "sometimes"}, "once, deterministic"),
                            ({"embedding_name": "x", "data_root": "d", "clip_grad_mode": "value", "clip_grad_value": "x"},
                             "Gradient clip value")):
        with pytest.raises(ValueError, match=message):
            et.TrainOptions.from_request(values)


def test_a_recorded_training_job_comes_back_after_a_restart_and_goes_on_from_its_last_copy(demo_model, folders, tmp_path):
    from types import SimpleNamespace as NS

    from modules.jobs.queue import JobQueue, JobStatus
    from modules.jobs.store import JobStore

    emb_dir, pictures, template, _ = folders
    template.rename(template.with_name("name-only.txt"))
    et.create_embedding(demo_model, emb_dir, NAME, 1, init_text="shape")
    active = NS(model=demo_model, info=NS(shorthash="abcdef012345", model_name="demo-shapes-64px", path=tmp_path / "demo.safetensors"))
    service = et.EmbeddingService(NS(ensure=lambda: active, hashes=HashCache(None, hashing=False)), library(emb_dir), tmp_path,
                                  template.parent)
    request = options(pictures, steps=5, create_image_every=0, save_embedding_every=0, template_filename="name-only.txt",
                      data_root="pictures", log_directory="log")
    store = JobStore(tmp_path / "queue.db")
    first = JobQueue(store=store, local_worker=False)  # no worker: the process "dies" before it runs
    job = service.submit(first, request)
    copy = et.save_embedding(tmp_path / "log" / f"{NAME}-3.pt", {"clip_l": torch.ones(1, 64)}, f"{NAME}-3", 3, None, None)
    store.progress(job.number, {"step": 3, "file": str(copy)})  # what the cut-off run recorded at its last save
    first.stop()

    second = JobQueue(store=JobStore(tmp_path / "queue.db"))
    try:
        et.register_embedding_jobs(second, service)
        [restored] = second.restore()
        assert restored.wait(60) and restored.status is JobStatus.DONE, restored.error
        assert restored.result.step == 5 and len(restored.result.losses) == 2  # steps 4 and 5 only
        assert load_embedding(emb_dir / f"{NAME}.pt").step == 5
    finally:
        second.shutdown()


def test_prompts_are_the_template_with_the_name_and_each_pictures_filewords(demo_model, folders):
    """A1111's [name] and [filewords]: a picture's .txt caption, else its file name without the
    leading number; the preview draws the step's first prompt and says so in its infotext."""
    from modules.outputs.infotext import read_infotext

    emb_dir, pictures, template, log_root = folders
    for path in sorted(pictures.iterdir())[2:]:
        path.unlink()
    (pictures / "01-red_circle.txt").write_text("round thing, blue background\n")
    template.write_text("a [name], [filewords]\n")
    et.create_embedding(demo_model, emb_dir, NAME, 1)
    run = et.EmbeddingTrainer(demo_model, library(emb_dir), options(pictures, steps=6, batch_size=1, create_image_every=1,
                                                                    save_embedding_every=0),
                              pictures, log_root, template).run()
    prompts = {read_infotext(path).splitlines()[0] for path in (run.log_dir / "images").iterdir()}
    assert prompts == {f"a {NAME}, red circle", f"a {NAME}, round thing, blue background"}
    assert "Steps: 20" in read_infotext(run.last_image) and run.last_image.name == f"{NAME}-6.png"


def test_a_schedule_that_ends_early_ends_training_there_and_accumulation_needs_enough_pictures(demo_model, folders):
    emb_dir, pictures, template, _ = folders
    et.create_embedding(demo_model, emb_dir, NAME, 1)
    lib = library(emb_dir)
    run = et.EmbeddingTrainer(demo_model, lib, options(pictures, steps=1000, learn_rate="0.01:2, 0.001:3", gradient_step=2,
                                                       create_image_every=0, save_embedding_every=0),
                              pictures, None, template).run()
    assert run.step == 3 and load_embedding(emb_dir / f"{NAME}.pt").step == 3
    too_many = et.EmbeddingTrainer(demo_model, lib, options(pictures, batch_size=3, gradient_step=2), pictures, None, template)
    with pytest.raises(ValueError, match="needs at least 6 pictures; .* has 4"):
        too_many.run()


def test_do_not_resize_trains_each_picture_at_its_own_size(demo_model, folders, monkeypatch):
    from modules.training import dataset

    emb_dir, pictures, template, _ = folders
    shapes.draw(shapes.Scene("red", "circle", "blue"), (32, 32), 16, size=128).crop((0, 0, 128, 64)).save(pictures / "wide.png")
    sizes = []
    real = dataset.load_picture
    monkeypatch.setattr(dataset, "load_picture", lambda sample, size: sizes.append(size) or real(sample, size))
    et.create_embedding(demo_model, emb_dir, NAME, 1)
    run = et.EmbeddingTrainer(demo_model, library(emb_dir), options(pictures, varsize=True, batch_size=4, steps=6,
                                                                    latent_sampling_method="deterministic", create_image_every=0,
                                                                    save_embedding_every=0), pictures, None, template).run()
    assert run.step == 6 and sorted(sizes) == [(64, 64)] * 4 + [(128, 64)]  # batch size 1, as A1111 makes it
