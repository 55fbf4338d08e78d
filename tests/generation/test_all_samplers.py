"""Every sampler with every schedule type, A1111's sampler parameters, and our own samplers'
arithmetic checked against diffusers' where both exist."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from modules.generation import samplers
from modules.generation.params import GenerationParams
from modules.generation.runner import Runner


@pytest.fixture(scope="module")
def runner(tiny_model):
    return Runner(tiny_model)


def generate(runner, **values) -> list[np.ndarray]:
    params = GenerationParams.create(**{"prompt": "a red square", "width": 64, "height": 64, "steps": 4, "seed": 11, **values})
    return [np.asarray(im, dtype=np.int16) for batch in runner.txt2img(params, params.seed) for im in batch.images]


@pytest.mark.parametrize("schedule", [s.label for s in samplers.SCHEDULES])
@pytest.mark.parametrize("sampler", [s.name for s in samplers.SAMPLERS])
def test_every_sampler_with_every_schedule_makes_a_picture(runner, sampler, schedule):
    [image] = generate(runner, sampler_name=sampler, scheduler=schedule)
    assert image.shape == (64, 64, 3)
    assert 20 < image.mean() < 235 and image.std() > 5  # a picture, not a black or white (NaN) frame


@pytest.mark.parametrize(
    "sampler, schedule",
    [("Euler", "Automatic"), ("Euler", "Karras"), ("Euler a", "Automatic"), ("Heun", "Karras"), ("LMS", "Automatic"),
     ("DPM++ SDE", "Automatic"), ("Euler", "Beta"), ("Euler", "Exponential")],
)
def test_our_samplers_do_diffusers_arithmetic_where_both_have_the_sampler(runner, monkeypatch, sampler, schedule):
    """The same pair through diffusers' scheduler and through our sigma-space sampler: the
    same picture within 1/255 (same noise, same steps; A1111's schedules and updates)."""
    values = dict(sampler_name=sampler, scheduler=schedule, steps=8, batch_size=2, cfg_scale=6.5, negative_prompt="blurry")
    assert samplers.engine(*samplers.resolve(sampler, schedule)) == samplers.DIFFUSERS
    theirs = generate(runner, **values)
    monkeypatch.setattr(samplers, "engine", lambda *a, **k: samplers.SIGMAS)
    ours = generate(runner, **values)
    assert max(np.abs(a - b).max() for a, b in zip(ours, theirs)) <= 1


def test_v_prediction_in_sigma_space_matches_diffusers(tiny_model, monkeypatch):
    model = dataclasses.replace(tiny_model, scheduler_config={**tiny_model.scheduler_config, "prediction_type": "v_prediction"})
    v_runner = Runner(model)
    theirs = generate(v_runner, sampler_name="Euler", steps=6)
    monkeypatch.setattr(samplers, "engine", lambda *a, **k: samplers.SIGMAS)
    ours = generate(v_runner, sampler_name="Euler", steps=6)
    assert np.abs(ours[0] - theirs[0]).max() <= 1


def test_sampler_parameters_change_the_picture_only_where_they_apply(runner):
    base = generate(runner, sampler_name="Euler a")[0]
    assert np.array_equal(base, generate(runner, sampler_name="Euler a")[0])
    assert not np.array_equal(base, generate(runner, sampler_name="Euler a", eta_ancestral=0.3)[0])
    assert not np.array_equal(base, generate(runner, sampler_name="Euler a", eta_noise_seed_delta=31337)[0])
    euler = generate(runner, sampler_name="Euler")[0]
    assert np.abs(euler - generate(runner, sampler_name="Euler", eta_noise_seed_delta=31337)[0]).max() <= 1  # deterministic: no step noise used
    assert not np.array_equal(euler, generate(runner, sampler_name="Euler", s_churn=1.0)[0])
    assert np.abs(euler - generate(runner, sampler_name="Euler", eta_ancestral=0.3)[0]).max() <= 1  # Euler takes no eta
    karras = generate(runner, sampler_name="DPM++ 2M")[0]
    assert not np.array_equal(karras, generate(runner, sampler_name="DPM++ 2M", rho=3.0)[0])
    assert not np.array_equal(karras, generate(runner, sampler_name="DPM++ 2M", sigma_max=5.0)[0])
    assert not np.array_equal(karras, generate(runner, sampler_name="DPM++ 2M", always_discard_next_to_last_sigma=True)[0])


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M SDE", "DPM++ SDE", "DDIM"])
def test_the_noise_source_picks_the_noise_and_each_source_repeats(runner, sampler):
    values = dict(sampler_name=sampler, eta_ddim=0.5) if sampler == "DDIM" else dict(sampler_name=sampler)
    cpu = generate(runner, randn_source="CPU", **values)[0]
    nv = generate(runner, randn_source="NV", **values)[0]
    assert np.array_equal(nv, generate(runner, randn_source="NV", **values)[0])
    assert not np.array_equal(cpu, nv)
    assert np.array_equal(cpu, generate(runner, randn_source="GPU", **values)[0])  # no GPU here: GPU draws on the CPU, as A1111 does


def test_a_batch_image_equals_its_single_run_on_our_samplers(runner):
    for sampler in ("DPM++ 2M SDE", "DPM++ 2S a", "Restart", "LCM"):
        batch = generate(runner, sampler_name=sampler, batch_size=3, randn_source="NV")
        single = generate(runner, sampler_name=sampler, seed=13, randn_source="NV")
        assert np.abs(batch[2] - single[0]).max() <= 1, sampler


def test_restart_takes_its_restart_jumps_from_20_steps(runner):
    seen = []
    from modules.generation.control import RunControl

    params = GenerationParams.create(prompt="x", width=64, height=64, steps=20, seed=1, sampler_name="Restart")
    control = RunControl(on_step=lambda info: seen.append(info.step))
    [batch] = list(runner.txt2img(params, 1, control))
    assert seen[-1] == 20 and seen == sorted(seen)
