"""A1111 sampler and schedule-type names, mapped onto diffusers schedulers.

A1111 users pick a sampler ("DPM++ 2M") and a schedule type ("Karras"); diffusers spells the
same thing as a scheduler class plus config options. This module is the one table that
translates, so the page, the API and the infotext all agree on names.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sampler:
    name: str  # A1111's UI name
    aliases: tuple[str, ...]
    scheduler_class: str  # diffusers class name
    options: dict[str, Any] = field(default_factory=dict)
    default_schedule: str | None = None  # what "Automatic" means for this sampler (a Schedule.name)
    seeded_noise_tree: bool = False  # Brownian-tree SDE sampler: needs explicit per-image seeds


@dataclass(frozen=True)
class Schedule:
    label: str  # shown in the UI and written to infotext
    name: str  # the API name
    aliases: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


def _k(**options: Any) -> dict[str, Any]:
    """Options of a k-diffusion-style sampler. A1111 spaces their steps over the whole noise
    range (k-diffusion's linspace); a checkpoint config saying "leading" (SDXL's) would
    otherwise start them below the model's highest noise level."""
    return {"timestep_spacing": "linspace", **options}


# In A1111's order: the first one is the UI default.
SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", ("k_dpmpp_2m",), "DPMSolverMultistepScheduler", _k(algorithm_type="dpmsolver++", solver_order=2), "karras"),
    Sampler("DPM++ SDE", ("k_dpmpp_sde",), "DPMSolverSDEScheduler", _k(), "karras", seeded_noise_tree=True),
    Sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "DPMSolverMultistepScheduler", _k(algorithm_type="sde-dpmsolver++", solver_order=2), "exponential"),
    Sampler(
        "DPM++ 2M SDE Heun",
        ("k_dpmpp_2m_sde_heun",),
        "DPMSolverMultistepScheduler",
        _k(algorithm_type="sde-dpmsolver++", solver_order=2, solver_type="heun"),
        "exponential",
    ),
    Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), "EulerAncestralDiscreteScheduler", _k()),
    Sampler("Euler", ("k_euler",), "EulerDiscreteScheduler", _k()),
    Sampler("LMS", ("k_lms",), "LMSDiscreteScheduler", _k()),
    Sampler("Heun", ("k_heun",), "HeunDiscreteScheduler", _k()),
    Sampler("DPM2", ("k_dpm_2",), "KDPM2DiscreteScheduler", _k(), "karras"),
    Sampler("DPM2 a", ("k_dpm_2_a",), "KDPM2AncestralDiscreteScheduler", _k(), "karras"),
    Sampler("DDIM", ("ddim",), "DDIMScheduler", {"set_alpha_to_one": False}),
    Sampler("PLMS", ("plms",), "PNDMScheduler", {"skip_prk_steps": True}),
    # A1111 defaults UniPC to its bh1 variant, but diffusers' bh1 path turns latents into NaN
    # (seen with diffusers 0.42); bh2 is diffusers' and SD.Next's default.
    Sampler("UniPC", ("unipc",), "UniPCMultistepScheduler", {"solver_type": "bh2"}),
    Sampler("LCM", ("k_lcm",), "LCMScheduler"),
)

SCHEDULES: tuple[Schedule, ...] = (
    Schedule("Automatic", "automatic"),
    Schedule("Uniform", "uniform"),
    Schedule("Karras", "karras", options={"use_karras_sigmas": True}),
    Schedule("Exponential", "exponential", options={"use_exponential_sigmas": True}),
    Schedule("SGM Uniform", "sgm_uniform", ("SGMUniform",), {"timestep_spacing": "trailing"}),
    Schedule("Simple", "simple", options={"timestep_spacing": "trailing"}),
    Schedule("Beta", "beta", options={"use_beta_sigmas": True}),
)


def _norm(text: str) -> str:
    return text.strip().lower()


def find_sampler(name: str) -> Sampler | None:
    key = _norm(name)
    for s in SAMPLERS:
        if key == _norm(s.name) or key in (_norm(a) for a in s.aliases):
            return s
    return None


def find_schedule(name: str) -> Schedule | None:
    key = _norm(name)
    for s in SCHEDULES:
        if key in (_norm(s.label), _norm(s.name), *(_norm(a) for a in s.aliases)):
            return s
    return None


def resolve(sampler_name: str, schedule_name: str | None = "Automatic") -> tuple[Sampler, Schedule]:
    """Turn user-supplied names into a (sampler, schedule) pair, A1111-style.

    Accepts legacy combined names such as "DPM++ 2M Karras": a trailing schedule label is split
    off and wins over `schedule_name` when that is Automatic or empty. Unknown names raise
    ValueError with the list of valid ones.
    """
    sampler_name = (sampler_name or "").strip()
    schedule = find_schedule(schedule_name or "Automatic")
    if schedule is None:
        raise ValueError(f"Unknown schedule type '{schedule_name}'. Choose one of: {', '.join(s.label for s in SCHEDULES)}.")
    sampler = find_sampler(sampler_name)
    if sampler is None:
        for sched in SCHEDULES[1:]:
            for spelling in (sched.label, sched.name, *sched.aliases):
                if _norm(sampler_name).endswith(" " + _norm(spelling)):
                    base = find_sampler(sampler_name[: -len(spelling)].strip())
                    if base is not None:
                        sampler = base
                        if schedule.name == "automatic":
                            schedule = sched
                        break
            if sampler is not None:
                break
    if sampler is None:
        raise ValueError(f"Sampler not found: '{sampler_name}'. Choose one of: {', '.join(s.name for s in SAMPLERS)}.")
    if schedule.name == sampler.default_schedule:
        schedule = SCHEDULES[0]  # A1111 stores a sampler's own default as Automatic
    check_supported(sampler, schedule)
    return sampler, schedule


def effective_schedule(sampler: Sampler, schedule: Schedule) -> Schedule:
    """What 'Automatic' means for this sampler (A1111: DPM++ 2M -> Karras, Euler a -> model default)."""
    if schedule.name == "automatic" and sampler.default_schedule:
        return find_schedule(sampler.default_schedule)  # type: ignore[return-value]
    return schedule


def scheduler_class(sampler: Sampler) -> type:
    """The diffusers class, imported on first use: listing names must not pull in diffusers
    (the page is served while diffusers still loads in the background)."""
    import diffusers

    return getattr(diffusers, sampler.scheduler_class)


def check_supported(sampler: Sampler, schedule: Schedule) -> None:
    wanted = effective_schedule(sampler, schedule).options
    accepted = inspect.signature(scheduler_class(sampler).__init__).parameters
    missing = [k for k in wanted if k not in accepted]
    if missing:
        raise ValueError(
            f"Schedule type '{schedule.label}' is not available for sampler '{sampler.name}'. "
            "Choose Automatic or Uniform, or another sampler."
        )


def infotext_schedule_label(sampler: Sampler, schedule: Schedule) -> str:
    """A1111 writes the resolved schedule: 'Karras' for DPM++ 2M on Automatic, 'Automatic' for Euler a."""
    return effective_schedule(sampler, schedule).label


def build_scheduler(base_config: dict, sampler: Sampler, schedule: Schedule, seeds: list[int] | None = None):
    """A fresh diffusers scheduler for one batch, starting from the checkpoint's own config
    (beta schedule, prediction type) so v-prediction and SDXL models keep their settings."""
    cls = scheduler_class(sampler)
    options = {**sampler.options, **effective_schedule(sampler, schedule).options}
    if sampler.seeded_noise_tree and seeds is not None:
        options["noise_sampler_seed"] = list(seeds) if len(seeds) > 1 else seeds[0]
    accepted = inspect.signature(cls.__init__).parameters
    config = {k: v for k, v in dict(base_config).items() if k in accepted}  # PNDM's skip_prk_steps means nothing to LCM
    return cls.from_config({**config, **options})
