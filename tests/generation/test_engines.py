"""Our samplers' engine on its own, with stand-in models: the numbers a fp16 GPU model would
see, where DPM fast and adaptive end, and the step counts each engine runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modules.generation import engines
from modules.generation.control import RunControl
from modules.generation.ksampling import dpm_solver, solvers
from modules.generation.ksampling.model_sigmas import LcmSigmas, ModelSigmas
from modules.generation.noise import ImageNoise
from modules.generation.params import GenerationParams, Img2ImgParams
from modules.generation.runner import InitImages, Runner
from tests.conftest import scheduler_config


class HalfModel:
    """What a fp16 UNet on a GPU gets and gives: it checks the input and timestep dtypes and
    predicts zero noise in fp16."""

    dtype = torch.float16
    last_uncond = None

    def __call__(self, model_in, t, step, t_host=None):
        assert model_in.dtype == torch.float16 and t.dtype == torch.float16
        return torch.zeros_like(model_in)


@pytest.fixture(scope="module")
def table() -> ModelSigmas:
    return ModelSigmas.from_scheduler_config(scheduler_config("sd1"))


@pytest.mark.parametrize("solver, lcm", [("euler_ancestral", False), ("dpmpp_2m", False), ("lcm", True), ("dpmpp_3m_sde", False)])
def test_the_sampler_keeps_float32_state_while_the_model_runs_in_fp16(table, solver, lcm):
    from modules.generation.ksampling import schedules

    model_sigmas = LcmSigmas(table.alphas_cumprod) if lcm else table
    sigmas = schedules.sigmas_for("karras", 6, schedules.Range(model_sigmas, model_sigmas.sigma_min, model_sigmas.sigma_max))
    plan = engines.SigmaRun(solver, sigmas, model_sigmas, "epsilon", {"eta": 1.0}, [1], lcm, None, 6)
    noise = ImageNoise([1], (4, 8, 8), torch.device("cpu"), torch.float32, "CPU")
    outcome = engines.run_sigmas(HalfModel(), plan, noise, None, None, lambda step, estimate: None)
    assert outcome.latents.dtype == torch.float32 and torch.isfinite(outcome.latents).all()
    assert outcome.latents.abs().max() > 0.1  # zero noise predicted: the picture is the (scaled) start, not erased


@pytest.mark.parametrize("run", ["fast", "adaptive"])
def test_dpm_fast_and_adaptive_end_at_the_lowest_noise_level(run):
    """A model that always sees nothing (estimate 0): what is left at the end is noise of
    exactly the last level, sigma_min, as k-diffusion's DPM-Solver leaves it."""
    torch.manual_seed(0)
    x = torch.randn(4, 4, 64, 64) * 14.6
    ctx = solvers.SolverContext(noise=lambda: torch.randn(4, 4, 64, 64), eta=1.0, extra={"steps": 10})
    zero = lambda latents, sigma: torch.zeros_like(latents)  # noqa: E731
    if run == "fast":
        out = dpm_solver.dpm_fast(zero, x, 0.0292, 14.6, 10, ctx)
    else:
        out = dpm_solver.dpm_adaptive(zero, x, 0.0292, 14.6, ctx, max_evaluations=300)
    assert float(out.std()) == pytest.approx(0.0292, rel=0.05)


@pytest.fixture(scope="module")
def runner(tiny_model):
    return Runner(tiny_model)


@pytest.mark.parametrize("sampler, source", [("DPM++ 2M", "GPU"), ("Euler a", "NV"), ("DDIM CFG++", "GPU")])
def test_the_hires_pass_runs_exactly_its_steps_on_every_engine(runner, sampler, source):
    params = GenerationParams.create(prompt="x", width=64, height=64, steps=6, seed=1, sampler_name=sampler, randn_source=source,
                                     enable_hr=True, hr_scale=1.5, hr_second_pass_steps=4, denoising_strength=0.5)
    seen = []
    [batch] = list(runner.txt2img(params, 1, RunControl(on_step=lambda info: seen.append((info.step, info.steps)))))
    # A1111's DDIM-style samplers visit every (1000 // steps)-th timestep: 6 calls for 6 steps, and
    # for the hires pass 4 / 0.5 = 8 steps of which the first t_enc = 3 timesteps, 2 calls.
    expected = 6 + 2 if sampler == "DDIM CFG++" else 6 + 4
    assert seen[-1] == (expected, expected) and batch.images[0].size == (96, 96)


@pytest.mark.parametrize("schedule", ["KL Optimal", "Simple", "DDIM"])
def test_img2img_at_denoising_strength_0_gives_the_picture_back(runner, schedule):
    picture = Image.new("RGB", (64, 64), (30, 120, 200))
    params = Img2ImgParams.create(prompt="x", width=64, height=64, steps=6, seed=1, denoising_strength=0.0, img2img_fix_steps=True,
                                  sampler_name="DPM++ 2M SDE", scheduler=schedule)
    [batch] = list(runner.img2img(params, InitImages((picture,)), 1))
    with torch.inference_mode():
        round_trip = runner.decode(runner.encode([picture]))[0]  # only the VAE touched it
    assert np.array_equal(np.asarray(batch.images[0]), np.asarray(round_trip))
