"""A1111's sampler and schedule-type menus, and which engine runs each pair.

A1111 users pick a sampler ("DPM++ 2M") and a schedule type ("Karras"), any pair of them.
This module is the one table of names, so the page, the API and the infotext agree, and it
decides how a pair runs:

- `diffusers`: a diffusers scheduler doing A1111's arithmetic (Euler, DPM++ 2M, LMS, Heun,
  DPM++ SDE with the schedules diffusers has; DDIM, PLMS and UniPC, which work on timesteps
  and ignore the schedule type, as in A1111). Our images equal diffusers' pipelines there.
- `sigmas`: our own samplers over a sigma schedule (modules.generation.ksampling): every
  pair diffusers cannot do exactly as A1111 does, A1111's sampler parameters (eta, churn,
  sigma range, rho) and noise diffusers cannot draw (the NV source).
- `timesteps`: DDIM CFG++ (A1111's timestep-space variant of DDIM).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

SIGMAS, DIFFUSERS, TIMESTEPS = "sigmas", "diffusers", "timesteps"


@dataclass(frozen=True)
class Sampler:
    name: str  # A1111's UI name
    aliases: tuple[str, ...]
    solver: str  # our function in modules.generation.ksampling (SIGMAS/TIMESTEPS engines)
    scheduler_class: str | None = None  # the diffusers class doing the same arithmetic, if any
    options: dict[str, Any] = field(default_factory=dict)  # for the diffusers class
    default_schedule: str | None = None  # what "Automatic" means for this sampler (a Schedule.name)
    seeded_noise_tree: bool = False  # Brownian-tree noise seeded per image (the SDE samplers)
    discard_penultimate: bool = False  # A1111 computes steps + 1 sigmas and drops the next-to-last
    second_order: bool = False  # two model calls per step
    uses_ensd: bool = False  # draws fresh noise per step from the image generators (Eta noise seed delta applies)
    eta: str | None = None  # "ancestral" or "ddim": which eta setting it takes; None: no eta
    churn: bool = False  # takes s_churn, s_tmin, s_tmax (and s_noise)
    takes_s_noise: bool = False
    timestep_based: bool = False  # works on the model's timesteps: the schedule type does not apply
    schedule_free: bool = False  # DPM fast / adaptive: integrate between the schedule's ends only
    engine_always: str | None = None  # forces an engine (A1111's arithmetic exists only there)


@dataclass(frozen=True)
class Schedule:
    label: str  # shown in the UI and written to infotext
    name: str  # the API name
    aliases: tuple[str, ...] = ()
    options: dict[str, Any] | None = None  # diffusers options doing the same, None if diffusers has none
    default_rho: float = -1  # A1111's: -1 where rho does not apply
    need_inner_model: bool = False  # A1111's: reads the model's own noise levels


def _k(**options: Any) -> dict[str, Any]:
    """Options of a k-diffusion-style sampler. A1111 spaces their steps over the whole noise
    range (k-diffusion's linspace); a checkpoint config saying "leading" (SDXL's) would
    otherwise start them below the model's highest noise level."""
    return {"timestep_spacing": "linspace", **options}


# A1111 1.10's menu, in its order: the first one is the UI default.
SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", ("k_dpmpp_2m",), "dpmpp_2m", "DPMSolverMultistepScheduler", _k(algorithm_type="dpmsolver++", solver_order=2), "karras"),
    Sampler("DPM++ SDE", ("k_dpmpp_sde",), "dpmpp_sde", "DPMSolverSDEScheduler", _k(), "karras", seeded_noise_tree=True, second_order=True,
            eta="ancestral", takes_s_noise=True),
    # A1111's 2M SDE draws its noise from a Brownian tree; diffusers' draws plain Gaussian noise.
    Sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "dpmpp_2m_sde", None, {}, "exponential", seeded_noise_tree=True, eta="ancestral",
            takes_s_noise=True),
    Sampler("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "dpmpp_2m_sde", None, {"solver_type": "heun"}, "exponential",
            seeded_noise_tree=True, eta="ancestral", takes_s_noise=True),
    Sampler("DPM++ 2S a", ("k_dpmpp_2s_a",), "dpmpp_2s_ancestral", None, {}, "karras", uses_ensd=True, second_order=True, eta="ancestral",
            takes_s_noise=True),
    Sampler("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "dpmpp_3m_sde", None, {}, "exponential", seeded_noise_tree=True, discard_penultimate=True,
            eta="ancestral", takes_s_noise=True),
    Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), "euler_ancestral", "EulerAncestralDiscreteScheduler", _k(), uses_ensd=True,
            eta="ancestral"),
    Sampler("Euler", ("k_euler",), "euler", "EulerDiscreteScheduler", _k(), churn=True, takes_s_noise=True),
    Sampler("LMS", ("k_lms",), "lms", "LMSDiscreteScheduler", _k()),
    Sampler("Heun", ("k_heun",), "heun", "HeunDiscreteScheduler", _k(), second_order=True, churn=True, takes_s_noise=True),
    # diffusers' KDPM2 schedulers keep the next-to-last sigma that A1111 drops.
    Sampler("DPM2", ("k_dpm_2",), "dpm_2", None, {}, "karras", discard_penultimate=True, second_order=True, churn=True, takes_s_noise=True),
    Sampler("DPM2 a", ("k_dpm_2_a",), "dpm_2_ancestral", None, {}, "karras", discard_penultimate=True, uses_ensd=True, second_order=True,
            eta="ancestral", takes_s_noise=True),
    Sampler("DPM fast", ("k_dpm_fast",), "dpm_fast", uses_ensd=True, eta="ancestral", takes_s_noise=True, schedule_free=True),
    Sampler("DPM adaptive", ("k_dpm_ad",), "dpm_adaptive", uses_ensd=True, eta="ancestral", schedule_free=True),
    Sampler("Restart", ("restart",), "restart", None, {}, "karras", second_order=True),
    Sampler("DDIM", ("ddim",), "ddim", "DDIMScheduler", {"set_alpha_to_one": False}, eta="ddim", timestep_based=True),
    Sampler("DDIM CFG++", ("ddim_cfgpp",), "ddim_cfgpp", eta="ddim", timestep_based=True, engine_always=TIMESTEPS),
    Sampler("PLMS", ("plms",), "plms", "PNDMScheduler", {"skip_prk_steps": True}, timestep_based=True),
    # A1111 defaults UniPC to its bh1 variant, but diffusers' bh1 path turns latents into NaN
    # (seen with diffusers 0.42); bh2 is diffusers' and SD.Next's default.
    Sampler("UniPC", ("unipc",), "unipc", "UniPCMultistepScheduler", {"solver_type": "bh2"}, timestep_based=True),
    # A1111's LCM is the latent-consistency step over a sigma schedule; diffusers' LCMScheduler
    # picks its own timesteps.
    Sampler("LCM", ("k_lcm",), "lcm"),
)

SCHEDULES: tuple[Schedule, ...] = (
    Schedule("Automatic", "automatic", options={}),
    Schedule("Uniform", "uniform", options={}, need_inner_model=True),
    Schedule("Karras", "karras", options={"use_karras_sigmas": True}, default_rho=7.0),
    Schedule("Exponential", "exponential", options={"use_exponential_sigmas": True}),
    Schedule("Polyexponential", "polyexponential", default_rho=1.0),
    Schedule("SGM Uniform", "sgm_uniform", ("SGMUniform",), need_inner_model=True),
    Schedule("KL Optimal", "kl_optimal"),
    Schedule("Align Your Steps", "align_your_steps"),
    Schedule("Simple", "simple", need_inner_model=True),
    Schedule("Normal", "normal", need_inner_model=True),
    Schedule("DDIM", "ddim", need_inner_model=True),
    Schedule("Beta", "beta", options={"use_beta_sigmas": True}, need_inner_model=True),
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
    """Turn user-supplied names into a (sampler, schedule) pair, A1111-style: any pair works.

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
    return sampler, schedule


def effective_schedule(sampler: Sampler, schedule: Schedule) -> Schedule:
    """What 'Automatic' means for this sampler (A1111: DPM++ 2M -> Karras, Euler a -> the
    model's own uniform levels)."""
    if schedule.name == "automatic" and sampler.default_schedule:
        return find_schedule(sampler.default_schedule)  # type: ignore[return-value]
    return schedule


def infotext_schedule_label(sampler: Sampler, schedule: Schedule) -> str:
    """A1111 writes the resolved schedule: 'Karras' for DPM++ 2M on Automatic, 'Automatic' for Euler a."""
    return effective_schedule(sampler, schedule).label


@dataclass(frozen=True)
class SamplerOptions:
    """A1111's "Sampler parameters" settings as they apply to one job (0 means the model's own
    sigma range / the schedule's own rho, as in A1111; s_tmax 0 means no upper limit)."""

    eta: float | None = None  # a request's eta; None: the setting for the sampler's kind below
    eta_ancestral: float = 1.0
    eta_ddim: float = 0.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 0.0
    s_noise: float = 1.0
    sigma_min: float = 0.0
    sigma_max: float = 0.0
    rho: float = 0.0
    discard_penultimate: bool = False  # always_discard_next_to_last_sigma
    beta_alpha: float = 0.6
    beta_beta: float = 0.6

    def eta_for(self, sampler: Sampler) -> float:
        """A1111: the request's eta, else eta_ddim for the timestep samplers and eta_ancestral
        for the others."""
        if self.eta is not None:
            return self.eta
        return self.eta_ddim if sampler.eta == "ddim" else self.eta_ancestral


def engine(sampler: Sampler, schedule: Schedule, options: SamplerOptions | None = None, nv_noise: bool = False) -> str:
    """Which engine runs this pair (see the module docstring)."""
    options = options or SamplerOptions()
    if sampler.engine_always:
        return sampler.engine_always
    if sampler.scheduler_class is None:
        return SIGMAS
    if sampler.timestep_based:  # DDIM's eta noise comes from the image generators, which NV replaces
        return TIMESTEPS if nv_noise and sampler.eta is not None and options.eta_for(sampler) > 0 else DIFFUSERS
    wanted = effective_schedule(sampler, schedule)
    if wanted.options is None or not _accepts(sampler, wanted.options):
        return SIGMAS
    if wanted.name == "beta" and (options.beta_alpha, options.beta_beta) != (0.6, 0.6):
        return SIGMAS  # diffusers' Beta schedule has A1111's default alpha and beta only
    if nv_noise and sampler.uses_ensd:
        return SIGMAS  # step noise that only our generators can draw
    if sampler.eta is not None and options.eta_for(sampler) != 1.0:
        return SIGMAS
    if (options.s_churn, options.s_tmin, options.s_tmax, options.s_noise) != (0.0, 0.0, 0.0, 1.0) and (sampler.churn or sampler.takes_s_noise):
        return SIGMAS
    if options.sigma_min or options.sigma_max or options.rho or options.discard_penultimate:
        return SIGMAS
    return DIFFUSERS


def scheduler_class(sampler: Sampler) -> type:
    """The diffusers class, imported on first use: listing names must not pull in diffusers
    (the page is served while diffusers still loads in the background)."""
    import diffusers

    return getattr(diffusers, sampler.scheduler_class)


def _accepts(sampler: Sampler, options: dict[str, Any]) -> bool:
    accepted = inspect.signature(scheduler_class(sampler).__init__).parameters
    return all(k in accepted for k in options)


def build_scheduler(base_config: dict, sampler: Sampler, schedule: Schedule, seeds: list[int] | None = None):
    """A fresh diffusers scheduler for one batch, starting from the checkpoint's own config
    (beta schedule, prediction type) so v-prediction and SDXL models keep their settings.
    Only for pairs whose engine is `diffusers`; the timestep samplers ignore the schedule."""
    cls = scheduler_class(sampler)
    wanted = {} if sampler.timestep_based else (effective_schedule(sampler, schedule).options or {})
    options = {**sampler.options, **wanted}
    if sampler.seeded_noise_tree and seeds is not None:
        options["noise_sampler_seed"] = list(seeds) if len(seeds) > 1 else seeds[0]
    accepted = inspect.signature(cls.__init__).parameters
    config = {k: v for k, v in dict(base_config).items() if k in accepted}  # PNDM's skip_prk_steps means nothing to LCM
    return cls.from_config({**config, **options})
