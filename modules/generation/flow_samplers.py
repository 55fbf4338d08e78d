"""Samplers and schedules for the flow-matching families (Flux, SD 3/3.5).

These models predict a velocity along a straight path from noise (sigma 1) to the picture
(sigma 0), so A1111's noise-prediction samplers do not apply; diffusers' flow schedulers do.
A user's A1111 sampler name is mapped to the flow scheduler that does the same kind of step:

- Euler: FlowMatchEulerDiscreteScheduler, the models' own, with the schedules it has
  (Automatic and Simple: the model's shifted linear schedule; Karras, Exponential, Beta).
- DPM++ 2M and UniPC: their diffusers schedulers on flow sigmas (`use_flow_sigmas`), on the
  model's shifted linear schedule only (Schedule type Automatic or Simple; UniPC ignores the
  schedule type, as in A1111). On Flux, txt2img's first pass only: diffusers' Flux img2img
  pipeline (img2img, hires fix) always passes custom sigmas, which these schedulers do not take.

Schedule type Automatic means the model's own schedule for every sampler (written "Simple" in
the infotext, FlowRunner.job_params), so A1111's default DPM++ 2M runs on these models too.

Anything else is a ValueError naming what these models accept. `shift` overrides the model's
shift (Forge's "Shift"): a static shift s, which for Flux replaces the resolution-dependent
shift (exp(mu)) its config asks for.
"""

from __future__ import annotations

from dataclasses import dataclass

from modules.generation import samplers

_EULER_SCHEDULES = {"automatic": {}, "simple": {}, "karras": {"use_karras_sigmas": True},
                    "exponential": {"use_exponential_sigmas": True}, "beta": {"use_beta_sigmas": True}}
_DPM = {"algorithm_type": "dpmsolver++", "solver_order": 2}
_UNIPC = {"solver_type": "bh2", "solver_order": 2}

ACCEPTED = ("Euler (Schedule type Automatic, Simple, Karras, Exponential or Beta), DPM++ 2M (Schedule type Simple) "
            "and UniPC")


@dataclass(frozen=True)
class FlowSampler:
    """What runs for one pass: the diffusers scheduler class and the options over the model's config."""

    class_name: str
    options: dict
    flow_sigmas: bool  # DPM++ / UniPC on flow sigmas (no custom sigma list)

    def build(self, model_config: dict, shift: float = 0.0):
        """A fresh scheduler from the model's FlowMatchEuler config, with `shift` (0: the model's)."""
        import diffusers

        cls = getattr(diffusers, self.class_name)
        config = dict(model_config)
        if shift > 0:
            config.update(shift=float(shift), use_dynamic_shifting=False)
        if self.flow_sigmas:
            config = {
                "num_train_timesteps": config.get("num_train_timesteps", 1000), "use_flow_sigmas": True,
                "prediction_type": "flow_prediction", "flow_shift": float(config.get("shift", 1.0)),
                "use_dynamic_shifting": bool(config.get("use_dynamic_shifting", False)),
            }
        scheduler = cls.from_config({**config, **self.options})
        if self.flow_sigmas and shift > 0:
            _ignore_mu(scheduler)
        return scheduler


def _ignore_mu(scheduler) -> None:
    """FluxPipeline always passes its resolution-based `mu`, which DPM++/UniPC on flow sigmas take
    only with dynamic shifting (they assert it); a static Shift override must win, so this
    scheduler's set_timesteps drops it, as FlowMatchEuler does when its shift is static."""
    own = scheduler.set_timesteps

    def set_timesteps(num_inference_steps=None, device=None, mu=None, **kwargs):
        return own(num_inference_steps, device=device, **kwargs)

    scheduler.set_timesteps = set_timesteps


def flow_sampler(sampler_name: str, schedule_name: str, img2img_flux: bool = False, beta_default: bool = True) -> FlowSampler:
    """The flow scheduler for an A1111 sampler and schedule pair; ValueError for what these models cannot run."""
    sampler, schedule = samplers.resolve(sampler_name, schedule_name)
    # Automatic: the model's own schedule for every sampler (A1111's DPM++ 2M Karras has no flow form here)
    wanted = "simple" if schedule.name == "automatic" else samplers.effective_schedule(sampler, schedule).name
    refused = (f"Flux and SD 3 models run {ACCEPTED}; '{sampler.name}' with Schedule type "
               f"'{samplers.effective_schedule(sampler, schedule).label}' is not one of them.")
    if sampler.name == "Euler":
        if wanted not in _EULER_SCHEDULES or (wanted == "beta" and not beta_default):
            raise ValueError(refused)
        return FlowSampler("FlowMatchEulerDiscreteScheduler", dict(_EULER_SCHEDULES[wanted]), False)
    if sampler.name in ("DPM++ 2M", "UniPC"):
        if img2img_flux:
            raise ValueError(f"Flux img2img and hires fix run Euler only; '{sampler.name}' works for txt2img without hires fix "
                             "(choose Euler as the Hires sampling method).")
        if sampler.name == "DPM++ 2M":
            if wanted != "simple":
                raise ValueError(refused)
            return FlowSampler("DPMSolverMultistepScheduler", dict(_DPM), True)
        return FlowSampler("UniPCMultistepScheduler", dict(_UNIPC), True)
    raise ValueError(refused)
