"""A1111's schedule types: how a number of steps becomes a descending list of noise levels.

Each function returns n sigmas from high to low followed by a final 0 (n + 1 values; KL
Optimal ends at the lowest level instead, as in A1111). The
range is the model's own (its highest and lowest trained noise level) unless the sampler
settings override it; `rho` shapes Karras and Polyexponential.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from modules.generation.ksampling.model_sigmas import ModelSigmas

# Align Your Steps (Sabour et al., NVIDIA 2024): the published 10-step noise levels for
# SD 1.5 and SDXL, stretched log-linearly to other step counts.
AYS_SD1 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


@dataclass(frozen=True)
class Range:
    """What a schedule is computed from."""

    model: ModelSigmas
    sigma_min: float
    sigma_max: float
    rho: float | None = None  # None: the schedule's own default
    sdxl: bool = False  # which Align Your Steps table
    beta_alpha: float = 0.6
    beta_beta: float = 0.6


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas.float(), sigmas.new_zeros(1, dtype=torch.float32)])


def _with_zero(values) -> torch.Tensor:
    sigmas = torch.as_tensor(np.ascontiguousarray(values, dtype=np.float64), dtype=torch.float32)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def uniform(n: int, r: Range) -> torch.Tensor:
    """The model's own levels at n evenly spaced timesteps, from the last to the first."""
    t = torch.linspace(r.model.t_max, r.model.t_min, n)
    return _with_zero(r.model.t_to_sigma(t).numpy())


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022: n levels evenly spaced in sigma^(1/rho), then 0."""
    ramp = torch.linspace(0, 1, n)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((high + ramp * (low - high)) ** rho)


def karras(n: int, r: Range) -> torch.Tensor:
    return karras_sigmas(n, r.sigma_min, r.sigma_max, r.rho or 7.0)


def exponential(n: int, r: Range) -> torch.Tensor:
    """Evenly spaced in log sigma."""
    return _append_zero(torch.linspace(math.log(r.sigma_max), math.log(r.sigma_min), n).exp())


def polyexponential(n: int, r: Range) -> torch.Tensor:
    """Log sigma falling along a polynomial ramp of power rho (1: exponential)."""
    rho = r.rho or 1.0
    ramp = torch.linspace(1, 0, n) ** rho
    return _append_zero(torch.exp(ramp * (math.log(r.sigma_max) - math.log(r.sigma_min)) + math.log(r.sigma_min)))


def _timesteps_between(n: int, r: Range, drop_last: bool) -> torch.Tensor:
    start = float(r.model.sigma_to_t(torch.tensor(r.sigma_max)))
    end = float(r.model.sigma_to_t(torch.tensor(r.sigma_min)))
    t = torch.linspace(start, end, n + 1)[:-1] if drop_last else torch.linspace(start, end, n)
    return _with_zero(r.model.t_to_sigma(t).numpy())


def sgm_uniform(n: int, r: Range) -> torch.Tensor:
    """Evenly spaced timesteps from the top of the range, not reaching its bottom (SGM's)."""
    return _timesteps_between(n, r, drop_last=True)


def normal(n: int, r: Range) -> torch.Tensor:
    """Evenly spaced timesteps across the whole range, both ends included."""
    return _timesteps_between(n, r, drop_last=False)


def simple(n: int, r: Range) -> torch.Tensor:
    """Every (len/n)-th of the model's levels, from the top."""
    table = r.model.sigmas
    stride = len(table) / n
    return _with_zero([float(table[-(1 + int(i * stride))]) for i in range(n)])


def ddim(n: int, r: Range) -> torch.Tensor:
    """DDIM's uniform timesteps: every (len // n)-th level starting at index 1, highest first."""
    table = r.model.sigmas
    stride = max(len(table) // n, 1)
    picked = [float(table[i]) for i in range(1, len(table), stride)]
    return _with_zero(picked[::-1])


def kl_optimal(n: int, r: Range) -> torch.Tensor:
    """Evenly spaced in arctan(sigma) (the KL-optimal schedule of Sabour et al.). As A1111 has
    it, the n + 1 levels end at sigma_min rather than 0."""
    low, high = math.atan(r.sigma_min), math.atan(r.sigma_max)
    fraction = torch.arange(n + 1) / n
    return torch.tan(fraction * low + (1.0 - fraction) * high).float()


def align_your_steps(n: int, r: Range) -> torch.Tensor:
    table = AYS_SDXL if r.sdxl else AYS_SD1
    if n == len(table):
        return _with_zero(table)
    # stretch the log levels over n points, keeping both ends
    known = np.linspace(0, 1, len(table))
    wanted = np.linspace(0, 1, n)
    return _with_zero(np.exp(np.interp(wanted, known, np.log(table[::-1])))[::-1])


def beta(n: int, r: Range) -> torch.Tensor:
    """Timesteps at the quantiles of a Beta(alpha, beta) distribution (Lee et al. 2024)."""
    from scipy import stats

    quantiles = 1 - np.linspace(0, 1, n)
    spread = stats.beta.ppf(quantiles, r.beta_alpha, r.beta_beta)
    return _with_zero([r.sigma_min + x * (r.sigma_max - r.sigma_min) for x in spread])


SCHEDULES: dict[str, Callable[[int, Range], torch.Tensor]] = {
    "uniform": uniform,
    "karras": karras,
    "exponential": exponential,
    "polyexponential": polyexponential,
    "sgm_uniform": sgm_uniform,
    "kl_optimal": kl_optimal,
    "align_your_steps": align_your_steps,
    "simple": simple,
    "normal": normal,
    "ddim": ddim,
    "beta": beta,
}


def sigmas_for(schedule: str, n: int, r: Range) -> torch.Tensor:
    """n steps of the named schedule (an A1111 schedule `name`; 'automatic' means uniform)."""
    if n < 1:
        raise ValueError(f"A schedule needs at least one step, not {n}.")
    return SCHEDULES.get(schedule, uniform)(n, r)
