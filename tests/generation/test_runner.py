"""The core against diffusers' own pipeline, and the behaviour A1111 users rely on."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from modules.generation import samplers
from modules.generation.control import RunControl
from modules.generation.params import GenerationParams
from modules.generation.runner import Runner


def pixels(images):
    return [np.asarray(im, dtype=np.int16) for im in images]


@pytest.fixture(scope="module")
def runner(tiny_model):
    return Runner(tiny_model)


@pytest.fixture(scope="module")
def pipeline(tiny_model):
    m = tiny_model
    pipe = StableDiffusionPipeline(
        vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet,
        scheduler=samplers.build_scheduler(m.scheduler_config, *samplers.resolve("Euler")),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(runner, **values):
    params = GenerationParams.create(**{"width": 64, "height": 64, "steps": 6, **values})
    seed = params.seed
    return [im for batch in runner.txt2img(params, seed) for im in batch.images]


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DPM++ SDE", "Euler Exponential", "Heun", "DDIM", "PLMS", "UniPC",
                                     "LMS", "Euler Beta"])
def test_core_matches_diffusers_pipeline_within_one_level(runner, pipeline, tiny_model, sampler):
    """Oracle: same checkpoint, seeds, sampler and settings give diffusers' image within 1/255 per pixel."""
    ours = generate(runner, prompt="a red square", negative_prompt="blurry", sampler_name=sampler, seed=1234, batch_size=2, cfg_scale=6.5)
    s, sc = samplers.resolve(sampler)
    pipeline.scheduler = samplers.build_scheduler(tiny_model.scheduler_config, s, sc, [1234, 1235])
    ref = pipeline(
        "a red square", negative_prompt="blurry", num_inference_steps=6, guidance_scale=6.5, width=64, height=64,
        num_images_per_prompt=2, generator=[torch.Generator().manual_seed(1234), torch.Generator().manual_seed(1235)],
    ).images
    assert len(ours) == 2
    for a, b in zip(pixels(ours), pixels(ref)):
        assert np.abs(a - b).max() <= 1


def test_same_parameters_give_the_identical_image(runner):
    a = generate(runner, prompt="a cat", seed=7, sampler_name="Euler a")
    b = generate(runner, prompt="a cat", seed=7, sampler_name="Euler a")
    c = generate(runner, prompt="a cat", seed=8, sampler_name="Euler a")
    assert np.array_equal(pixels(a)[0], pixels(b)[0])
    assert not np.array_equal(pixels(a)[0], pixels(c)[0])


def test_batch_image_i_equals_a_single_run_with_seed_plus_i(runner):
    batch = generate(runner, prompt="a dog", seed=100, batch_size=3, n_iter=2, sampler_name="DPM++ 2M")
    assert len(batch) == 6
    for i in (0, 4, 5):
        single = generate(runner, prompt="a dog", seed=100 + i, sampler_name="DPM++ 2M")
        assert np.abs(pixels(batch)[i] - pixels(single)[0]).max() <= 1


def test_prompt_and_clip_skip_change_the_image(runner):
    base = pixels(generate(runner, prompt="a house", seed=3))[0]
    assert not np.array_equal(base, pixels(generate(runner, prompt="a boat", seed=3))[0])
    assert not np.array_equal(base, pixels(generate(runner, prompt="a house", seed=3, clip_skip=2))[0])


def test_size_and_steps_are_honoured(runner):
    seen = []
    control = RunControl(on_step=lambda info: seen.append((info.step, info.steps)))
    params = GenerationParams.create(prompt="x", width=96, height=64, steps=5, seed=1)
    images = [im for b in runner.txt2img(params, 1, control) for im in b.images]
    assert images[0].size == (96, 64)
    assert seen[-1] == (5, 5) and [s for s, _ in seen] == sorted(s for s, _ in seen)


def test_interrupt_and_skip_return_the_unfinished_batch_as_a1111_does(runner):
    """Skip cuts the current batch short and goes on; interrupt cuts it short and stops. Either
    way the cut batch comes back, marked partial: the model's last estimate of the picture."""
    params = GenerationParams.create(prompt="x", width=64, height=64, steps=4, n_iter=3, seed=1)
    full = [b for b in runner.txt2img(params, 1)]
    control = RunControl()
    control.on_step = lambda info: control.skip() if (info.batch_index, info.step) == (0, 2) else None
    batches = list(runner.txt2img(params, 1, control))
    assert [(b.index, b.partial) for b in batches] == [(0, True), (1, False), (2, False)]
    assert batches[0].seeds == [1] and batches[1].seeds == [2]
    cut, done = pixels(batches[0].images)[0], pixels(full[0].images)[0]
    assert not np.array_equal(cut, done) and np.abs(cut - done).mean() < 40  # unfinished, but the same picture on its way
    assert np.array_equal(pixels(batches[1].images)[0], pixels(full[1].images)[0])

    control = RunControl()
    control.on_step = lambda info: control.interrupt() if (info.batch_index, info.step) == (1, 1) else None
    batches = list(runner.txt2img(params, 1, control))
    assert [(b.index, b.partial) for b in batches] == [(0, False), (1, True)]


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M SDE", "DDIM CFG++", "DPM adaptive"])
def test_interrupt_before_the_first_step_gives_no_picture(runner, sampler):
    params = GenerationParams.create(prompt="x", width=64, height=64, steps=4, n_iter=2, seed=1, sampler_name=sampler)
    control = RunControl()
    control.interrupt()
    assert list(runner.txt2img(params, 1, control)) == []
