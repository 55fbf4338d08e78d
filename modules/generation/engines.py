"""The three ways one sampling pass runs, behind one interface (see modules.generation.samplers
for which pair of sampler and schedule takes which):

- `run_diffusers`: a diffusers scheduler's `step` loop, as diffusers' pipelines run it.
- `run_sigmas`: one of our samplers over a sigma schedule (k-diffusion's formulation).
- `run_timesteps`: DDIM-style sampling over the model's timesteps, as A1111's DDIM CFG++.

Each takes a `Prediction` (the UNet with its conditioning and guidance for this pass), the
batch's `ImageNoise`, and the init latents for img2img, and returns an `Outcome`: the
finished latents, or, when the job was interrupted or skipped, the model's last estimate
of the clean picture (what A1111 returns for an unfinished image).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable

import torch

from modules.generation.conditioning import StepConditioning, combine
from modules.generation.control import RunControl
from modules.generation.hooks import DenoiserCall, Hooks, PassInfo
from modules.generation.ksampling import dpm_solver, solvers
from modules.generation.ksampling.model_sigmas import ModelSigmas
from modules.generation.noise import ImageNoise

Report = Callable[[int, torch.Tensor], None]  # (steps done in this batch, clean estimate)


class Stopped(Exception):
    """The job was interrupted or its batch skipped: raised inside the model call."""


@dataclass(frozen=True)
class Outcome:
    latents: torch.Tensor | None  # None only when stopped before the first model call
    stopped: bool = False


@dataclass(frozen=True)
class Blend:
    """Inpainting with an ordinary model: outside the mask (mask 0) the picture stays the
    original's. `keep` are the original's clean latents."""

    mask: torch.Tensor
    keep: torch.Tensor


@dataclass
class Takeover:
    """A1111's refiner: from the first model call at which `completed(t, call)` (the share of the
    model's timesteps already behind, A1111's (999 - timestep) / 1000, or of the pass's model
    calls) reaches `at`, the rest of the pass runs on another UNet with its own conditioning, in
    the same loop: the sampler and its history go on. `build` gives (unet, conditioning,
    time_ids), made only when the switch happens, as A1111 encodes the refiner's prompts then."""

    at: float
    completed: Callable[[float, int], float]
    build: Callable[[], tuple]
    call: int | None = None  # the model call it took over at, once it has

    def due(self, t_host: float | None, call: int) -> bool:
        return self.call is None and t_host is not None and self.completed(t_host, call) >= self.at


class Prediction:
    """The UNet's guided output for one pass (epsilon or v, as the model was trained): the
    prompt schedule's conditioning at each step, CFG or AND composition, an inpainting
    model's extra channels. Raises `Stopped` when the job should stop."""

    def __init__(self, unet, conditioning: StepConditioning, cfg_scale: float, with_uncond: bool, blocks: int,
                 time_ids: torch.Tensor | None, extra: list[torch.Tensor] | None, control: RunControl,
                 hooks: Hooks | None = None, info: PassInfo | None = None, skip_uncond_below: float = 0.0,
                 sigma_of: Callable[[torch.Tensor], torch.Tensor] | None = None, takeover: Takeover | None = None):
        self.unet = unet
        self.conditioning = conditioning
        self.cfg_scale = cfg_scale
        self.with_uncond = with_uncond
        self.blocks = blocks
        self.time_ids = time_ids
        self.extra = extra
        self.control = control
        self.hooks = hooks if hooks else None  # the job's add-ons (ControlNet): extra UNet arguments per call
        self.info = info
        self.last_uncond: torch.Tensor | None = None  # the negative prompt's own prediction (DDIM CFG++)
        # A1111's s_min_uncond (NGMS): below this sigma, every other call skips the negative
        # prompt and uses the first prompt's prediction in its place. Not with add-ons' hooks
        # (ControlNet, extensions), which are given the full uncond + cond batch.
        self.skip_uncond_below = skip_uncond_below if (with_uncond and sigma_of is not None and not self.hooks) else 0.0
        self.sigma_of = sigma_of
        self.skipped_uncond = 0  # calls that skipped it: the infotext names NGMS only then, as A1111
        self.takeover = takeover
        self.calls = 0

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def _with_extra(self, latents: torch.Tensor) -> torch.Tensor:
        """Per-block latents with an inpainting model's extra channels added, as the UNet takes them."""
        if self.extra is None:
            return latents
        extra = torch.cat(list(self.extra), dim=1)
        return torch.cat([latents, torch.cat([extra] * self.blocks) if self.blocks > 1 else extra], dim=1)

    def _take_over(self) -> None:
        """Go on with the refiner. The job's add-ons were made for the first model (ControlNet's
        residuals fit its UNet only), so they stop here, and so does an inpainting model's
        extra input, which an ordinary refiner does not take."""
        self.unet, self.conditioning, self.time_ids = self.takeover.build()
        self.takeover.call = self.calls
        self.hooks = None
        if self.extra is not None and self.unet.config.in_channels == self.unet.config.out_channels:
            self.extra = None

    def _skips_uncond(self, t_host: float | None, step: int) -> bool:
        if step % 2 == 0 or self.skip_uncond_below <= 0 or t_host is None:
            return False
        return float(self.sigma_of(torch.tensor(t_host, dtype=torch.float32))) < self.skip_uncond_below

    def __call__(self, model_in: torch.Tensor, t, step: int, t_host: float | None = None) -> torch.Tensor:
        """`t` is the timestep as the UNet takes it (on its device); `t_host` the same number on
        the CPU, for decisions that must not wait for the GPU."""
        if self.control.stop_requested():
            raise Stopped
        if self.takeover is not None and self.takeover.due(t_host, self.calls):
            self._take_over()
        self.calls += 1
        latents = model_in  # what add-ons see: without an inpainting model's extra channels
        batch = model_in.shape[0]
        if self.extra is not None:
            model_in = torch.cat([model_in, *self.extra], dim=1)
        skip = self._skips_uncond(t_host, step)
        blocks = self.blocks - 1 if skip else self.blocks
        if blocks > 1:
            model_in = torch.cat([model_in] * blocks)
        embeds, pooled = self.conditioning.at(step)
        time_ids = self.time_ids
        if skip:
            embeds = embeds[batch:]
            pooled = pooled[batch:] if pooled is not None else None
            if time_ids is not None and time_ids.shape[0] == batch * self.blocks:
                time_ids = time_ids[batch:]
            self.skipped_uncond += 1
        added = {"text_embeds": pooled, "time_ids": time_ids} if pooled is not None else None
        kwargs = {}
        if self.hooks is not None:
            if self.blocks > 1:
                latents = torch.cat([latents] * self.blocks) if self.extra is not None else model_in
            call = self.hooks.denoiser_call(DenoiserCall(latents, t, step, embeds, added, self.info))
            if call.latents is not latents:  # an add-on (on_cfg_denoiser) replaced them: the model input follows
                model_in = self._with_extra(call.latents)
            embeds = call.encoder_hidden_states
            kwargs = self.hooks.unet_kwargs(call)
        out = self.unet(model_in, t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False, **kwargs)[0]
        if skip:  # the first prompt's prediction stands in for the negative prompt's
            out = torch.cat([out[:batch], out])
        if self.with_uncond:
            self.last_uncond = out.chunk(self.blocks)[0]
        return combine(out, self.conditioning.weights, self.cfg_scale, self.with_uncond)


# ---------------------------------------------------------------------------- diffusers


def run_diffusers(predict: Prediction, scheduler, total: int, run: int, noise: ImageNoise, init: torch.Tensor | None,
                  blend: Blend | None, prediction_type: str, eta: float, report: Report) -> Outcome:
    """`run` of `total` steps (img2img cuts the schedule's start as diffusers' pipelines do)."""
    device = noise.device
    scheduler.set_timesteps(total, device=device)
    order = getattr(scheduler, "order", 1)
    start = (total - run) * order
    timesteps = scheduler.timesteps[start:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    fresh = noise.first()
    batch = fresh.shape[0]
    if init is None:
        latents = fresh * scheduler.init_noise_sigma
    elif run == 0:
        return Outcome(init)
    else:
        latents = scheduler.add_noise(init.to(fresh.dtype), fresh, timesteps[:1].repeat(batch))
    step_kwargs = _step_kwargs(scheduler, noise.torch_generators(), eta)
    estimate = None
    host_timesteps = timesteps.tolist()  # read on the CPU once: no GPU sync per step
    for i, t in enumerate(timesteps):
        model_in = scheduler.scale_model_input(latents, t)
        try:
            pred = predict(model_in, t, i // order, t_host=host_timesteps[i])
        except Stopped:
            return Outcome(estimate, stopped=True)
        estimate = clean_estimate(scheduler, latents, pred, host_timesteps[i], prediction_type)
        latents = scheduler.step(pred, t, latents, **step_kwargs, return_dict=False)[0]
        if blend is not None:  # keep the unmasked area on the original's noise path
            keep = blend.keep.to(latents.dtype)
            if i < len(timesteps) - 1:
                keep = scheduler.add_noise(keep, fresh, timesteps[i + 1 : i + 2].repeat(batch))
            latents = (1 - blend.mask) * keep + blend.mask * latents
        report(min(run, (i + order) // order), estimate)
    return Outcome(latents)


def clean_estimate(scheduler, latents: torch.Tensor, pred: torch.Tensor, t: float, prediction_type: str) -> torch.Tensor:
    """The model's estimate of the clean latents at this step (for previews and for an
    unfinished image), from the scheduler's noise level before it steps. `t` is the timestep
    as a number and the noise levels stay 0-d CPU tensors (used as scalars): copying either to
    the GPU would wait for the GPU at every step."""
    try:
        sigmas, index = getattr(scheduler, "sigmas", None), getattr(scheduler, "step_index", None)
        if float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1.0 and sigmas is not None and index is not None:
            return _denoised_from(latents, pred, sigmas[min(index, len(sigmas) - 1)], prediction_type)
        alpha_bar = scheduler.alphas_cumprod[int(round(float(t)))]
        if prediction_type == "v_prediction":
            return alpha_bar.sqrt() * latents - (1 - alpha_bar).sqrt() * pred
        return (latents - (1 - alpha_bar).sqrt() * pred) / alpha_bar.sqrt()
    except (AttributeError, IndexError, TypeError, ValueError):
        return latents


def _step_kwargs(scheduler, gens: list[torch.Generator] | None, eta: float) -> dict:
    """Pass the generators (and DDIM's eta) only to schedulers that take them, as diffusers does."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if "generator" in accepted and gens is not None:
        kwargs["generator"] = gens
    if "eta" in accepted:
        kwargs["eta"] = eta
    return kwargs


# ---------------------------------------------------------------------------- sigmas


def _denoised_from(x: torch.Tensor, pred: torch.Tensor, sigma: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """k-diffusion's wrappers for DDPM-trained models: epsilon -> x - sigma * eps; v -> the
    c_skip / c_out mix for sigma_data 1."""
    if prediction_type == "v_prediction":
        return x / (sigma**2 + 1) - pred * sigma / (sigma**2 + 1) ** 0.5
    return x - sigma * pred


@dataclass(frozen=True)
class SigmaRun:
    """What a sigma-space pass needs besides the model."""

    solver: str
    sigmas: torch.Tensor  # the pass's schedule, already cut for img2img
    model_sigmas: ModelSigmas
    prediction_type: str
    context: dict  # SolverContext options: eta, s_churn, s_tmin, s_tmax, s_noise, extra
    brownian_seeds: list[int] | None = None  # the SDE samplers' trees
    lcm: bool = False  # the latent-consistency boundary condition on the output
    schedule_free: tuple[float, float, int] | None = None  # DPM fast/adaptive: (sigma_min, sigma_max, steps)
    report_steps: int = 0


def run_sigmas(predict: Prediction, plan: SigmaRun, noise: ImageNoise, init: torch.Tensor | None, blend: Blend | None,
               report: Report) -> Outcome:
    """The sampler works in float32 on the latents' device with the schedule on the CPU, as
    A1111 runs k-diffusion; only the UNet's input (and the timestep, as A1111 casts it) take
    the model's dtype. `noise` must draw float32."""
    fresh = noise.first().float()
    sigmas = plan.sigmas.float().cpu()  # CPU scalars mix with device tensors without a sync per step
    x = fresh * sigmas[0] if init is None else init.float() + fresh * sigmas[0]
    keep = blend.keep.float() if blend is not None else None
    model_dtype = predict.dtype
    calls = 0
    last: list[torch.Tensor | None] = [None]
    # The schedule's timesteps go to the device in one copy; a copy per step would wait for the
    # GPU every step. Sigmas between them (Heun, DPM2, the SDE samplers) are converted as they come.
    schedule_ts = plan.model_sigmas.sigma_to_t(sigmas)
    timesteps = dict(zip(sigmas.tolist(), zip(schedule_ts.unbind(), schedule_ts.to(x.device, model_dtype).unbind())))

    def denoise(latents: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        sigma = torch.as_tensor(sigma, dtype=torch.float32).cpu()
        t, t_device = timesteps.get(float(sigma), (None, None))
        if t is None:
            t = plan.model_sigmas.sigma_to_t(sigma)
            t_device = t.to(latents.device, model_dtype)
        c_in = (sigma**2 + 1) ** -0.5
        # prompt schedules advance per model call, as in A1111
        pred = predict((latents * c_in).to(model_dtype), t_device, calls, t_host=float(t)).float()
        calls += 1
        denoised = _denoised_from(latents, pred, sigma, plan.prediction_type)
        if plan.lcm:
            denoised = _consistency_output(denoised, latents, t)
        if blend is not None:
            denoised = (1 - blend.mask) * keep + blend.mask * denoised
        return denoised

    def step_done(i: int, latents: torch.Tensor, denoised: torch.Tensor) -> None:
        last[0] = denoised
        report(min(i + 1, plan.report_steps), denoised)

    brownian = None
    if plan.brownian_seeds is not None:
        from modules.generation.ksampling.brownian import tree_noise

        seeds = plan.brownian_seeds
        brownian = lambda x_, s_: tree_noise(x_, s_, seeds)  # noqa: E731
    ctx = solvers.SolverContext(noise=noise.next, step_done=step_done, brownian=brownian, **plan.context)
    ctx.extra.setdefault("steps", plan.report_steps)
    try:
        if plan.schedule_free is not None:
            sigma_min, sigma_max, steps = plan.schedule_free
            if plan.solver == "dpm_fast":
                x = dpm_solver.dpm_fast(denoise, x, sigma_min, sigma_max, steps, ctx)
            else:
                x = dpm_solver.dpm_adaptive(denoise, x, sigma_min, sigma_max, ctx, max_evaluations=max(60, 20 * steps))
        else:
            x = getattr(solvers, plan.solver)(denoise, x, sigmas, ctx)
    except Stopped:
        return Outcome(last[0], stopped=True)
    return Outcome(x)


def _consistency_output(denoised: torch.Tensor, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """LCM's boundary condition: the estimate mixed with the input by the scaled timestep
    (sigma_data 0.5, timestep scale 10), which leaves almost only the estimate."""
    scaled = t * 10.0
    c_skip = 0.25 / (scaled**2 + 0.25)
    c_out = scaled / (scaled**2 + 0.25) ** 0.5
    return c_out * denoised + c_skip * latents


# ---------------------------------------------------------------------------- timesteps


@dataclass(frozen=True)
class TimestepRun:
    """A1111's timestep samplers: every (1000 // steps)-th timestep from 1 (DDIM's spacing)."""

    timesteps: torch.Tensor  # ascending, the ones this pass visits
    start_timestep: int | None  # img2img: the noise level the init is brought to
    alphas_cumprod: torch.Tensor
    prediction_type: str
    eta: float
    cfgpp: bool = False  # DDIM CFG++: re-noise along the negative prompt's own prediction
    report_steps: int = 0


def run_timesteps(predict: Prediction, plan: TimestepRun, noise: ImageNoise, init: torch.Tensor | None, blend: Blend | None,
                  report: Report) -> Outcome:
    fresh = noise.first().float()
    alphas_cumprod = plan.alphas_cumprod.cpu().double()  # the step coefficients are plain numbers
    timesteps = plan.timesteps.cpu()
    if init is None:
        x = fresh
    else:
        start = float(alphas_cumprod[plan.start_timestep])
        x = init.float() * math.sqrt(start) + fresh * math.sqrt(1 - start)
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], (1, 0))]
    sigmas = plan.eta * ((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev)).sqrt()
    keep = blend.keep.float() if blend is not None else None
    model_dtype = predict.dtype
    estimate = None
    device_timesteps = timesteps.to(x.device, model_dtype)  # one copy, not one (and a GPU wait) per step
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        a_t, a_prev, sigma_t = (float(v[index]) for v in (alphas, alphas_prev, sigmas))
        if blend is not None:  # A1111 puts the original back before each call for these samplers
            x = (1 - blend.mask) * keep + blend.mask * x
        try:
            pred = predict(x.to(model_dtype), device_timesteps[index], i, t_host=float(timesteps[index])).float()
        except Stopped:
            return Outcome(estimate, stopped=True)
        eps = _eps_from(pred, x, a_t, plan.prediction_type)
        direction = eps
        if plan.cfgpp and predict.last_uncond is not None:
            direction = _eps_from(predict.last_uncond.float(), x, a_t, plan.prediction_type)
        estimate = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        x = math.sqrt(a_prev) * estimate + math.sqrt(max(1 - a_prev - sigma_t**2, 0.0)) * direction
        x = x + sigma_t * noise.next()  # drawn even at eta 0, as A1111 does
        report(min(i + 1, plan.report_steps), estimate)
    return Outcome(x)


def _eps_from(pred: torch.Tensor, x: torch.Tensor, alpha_bar: float, prediction_type: str) -> torch.Tensor:
    if prediction_type == "v_prediction":
        return math.sqrt(alpha_bar) * pred + math.sqrt(1 - alpha_bar) * x
    return pred


def ddim_timesteps(steps: int, total: int = 1000) -> torch.Tensor:
    """A1111's timesteps for DDIM-style samplers: 1, 1 + k, 1 + 2k ... with k = total // steps."""
    return torch.clamp(torch.arange(0, total, total // steps) + 1, 0, total - 1)
