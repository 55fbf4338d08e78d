"""Brownian-tree noise for the SDE samplers, drawn from the job's random number source.

The SDE samplers (DPM++ SDE, 2M SDE, 3M SDE) take their noise from a Brownian tree seeded
with each image's seed (torchsde's BrownianInterval), so an image does not change with the
batch it is made in. torchsde draws every node of the tree with `torch.randn` on the
latents' device; A1111 replaces that draw with its own seeded noise, which follows the
`randn_source` setting (CPU, GPU or NV). To remake A1111's pictures we must draw the same
numbers, and torchsde offers no hook for it: `_randn` is a module-level function that every
interval of the tree calls. So this module wraps it once, and the wrapper asks a context
variable which source the current job uses (the original draw when none is set). The
setting is per thread and per job: nothing global changes between jobs.
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from typing import Callable, Iterator

import torch

# torchsde compares the query times with the tree's ends in float64 while the schedule is
# float32, and warns on every step of every SDE job about a difference of 1e-9.
warnings.filterwarnings("ignore", message=r"Should have (ta|tb)", category=UserWarning, module=r"torchsde")

Draw = Callable[[int, tuple[int, ...]], torch.Tensor]  # (seed, shape) -> float32 noise

_current: contextvars.ContextVar[Draw | None] = contextvars.ContextVar("brownian_draw", default=None)


def _install() -> None:
    from torchsde._brownian import brownian_interval

    original = brownian_interval._randn
    if getattr(original, "follows_job_noise", False):
        return

    def randn(size, dtype, device, seed):
        draw = _current.get()
        if draw is None:
            return original(size, dtype, device, seed)
        return draw(int(seed), tuple(size)).to(device=device, dtype=dtype)

    randn.follows_job_noise = True
    brownian_interval._randn = randn


@contextlib.contextmanager
def noise_source(draw: Draw | None) -> Iterator[None]:
    """Within this block, Brownian trees built and sampled on this thread draw with `draw`."""
    if draw is None:
        yield
        return
    _install()
    token = _current.set(draw)
    try:
        yield
    finally:
        _current.reset(token)


def tree_noise(x: torch.Tensor, sigmas: torch.Tensor, seeds: list[int]):
    """A noise sampler (sigma, sigma_next) -> unit noise over the schedule's range, one tree
    per image seeded with its seed, as A1111 makes it for its SDE samplers."""
    from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

    positive = sigmas[sigmas > 0]
    return BrownianTreeNoiseSampler(x, float(positive.min()), float(sigmas.max()), seed=list(seeds))
