"""Seeds and noise, A1111-style: seed -1 means random, image i of a job uses seed+i, and each
image's noise comes from its own generator, so a batch of 4 starting at seed S gives the
same four images as four single runs with seeds S..S+3.

Where the noise is drawn is A1111's `randn_source` setting (infotext `RNG`):
- GPU (the default): on the generating device, as A1111 does on NVIDIA cards; on the CPU and
  on Apple's MPS, where A1111 also falls back, on the CPU.
- CPU: always on the CPU, so a seed gives the same picture on every device.
- NV: NVIDIA's CUDA noise computed on any device (modules.generation.philox), so a picture
  made on an NVIDIA card with the default setting can be remade on a Mac or a CPU.
"""

from __future__ import annotations

import random
from typing import Sequence

import torch

from modules.generation.params import RNG_SOURCES
from modules.generation.philox import PhiloxGenerator

MAX_SEED = 4294967294  # what A1111 draws random seeds below


def resolve_seed(seed: int, rng: random.Random | None = None) -> int:
    if seed is None or int(seed) < 0:
        return (rng or random.SystemRandom()).randrange(MAX_SEED)
    return int(seed)


def job_seeds(first_seed: int, n_iter: int, batch_size: int) -> list[list[int]]:
    """Seeds per batch: [[s, s+1], [s+2, s+3]] for 2 batches of 2."""
    return [[first_seed + b * batch_size + i for i in range(batch_size)] for b in range(n_iter)]


def generator_device(source: str, device: torch.device) -> torch.device:
    """Where a torch generator for `source` lives: the device itself only for GPU on a
    device with its own generator (CUDA, XPU...); MPS and the CPU draw on the CPU."""
    device = torch.device(device)
    if source == "GPU" and device.type not in ("cpu", "mps"):
        return device
    return torch.device("cpu")


def seeded_noise(source: str, seed: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """One float32 draw from a fresh generator seeded with `seed` (A1111's randn_local, which
    also feeds the SDE samplers' Brownian trees)."""
    return ImageNoise([seed], tuple(shape), device, torch.float32, source).first()[0]


class ImageNoise:
    """The noise of one batch, one generator per image (A1111's ImageRNG).

    `first()` is each image's initial latent noise; `next()` the noise ancestral and SDE
    samplers add at each step, drawn from the same generators. With Eta noise seed delta
    (`ensd`), the generators are seeded again with seed + ENSD after the first draw, as
    A1111 does, so the step noise changes while the initial noise stays.
    """

    def __init__(self, seeds: Sequence[int], shape: tuple[int, ...], device: torch.device, dtype: torch.dtype,
                 source: str = "GPU", ensd: int = 0):
        if source not in RNG_SOURCES:
            raise ValueError(f"Random number source '{source}' is not one of: {', '.join(RNG_SOURCES)}.")
        self.seeds = [int(s) for s in seeds]
        self.shape = tuple(shape)  # one image's latent: (C, H, W)
        self.device, self.dtype = torch.device(device), dtype
        self.source = source
        self.ensd = int(ensd or 0)
        self._generators = self._make(self.seeds)
        self._drawn = False

    def _make(self, seeds: list[int]) -> list:
        if self.source == "NV":
            return [PhiloxGenerator(s) for s in seeds]
        where = generator_device(self.source, self.device)
        return [torch.Generator(where).manual_seed(s) for s in seeds]

    def _draw(self) -> torch.Tensor:
        if self.source == "NV":
            drawn = [torch.from_numpy(g.randn(self.shape)) for g in self._generators]
        else:  # float32 like A1111, whatever the model's dtype, then moved
            drawn = [torch.randn(self.shape, generator=g, device=g.device, dtype=torch.float32) for g in self._generators]
        return torch.stack(drawn).to(self.device, self.dtype)

    def first(self) -> torch.Tensor:
        """[B, C, H, W]: each image's initial noise."""
        noise = self._draw()
        if not self._drawn and self.ensd:
            self._generators = self._make([s + self.ensd for s in self.seeds])
        self._drawn = True
        return noise

    def next(self) -> torch.Tensor:
        """[B, C, H, W]: the next step noise."""
        if not self._drawn:
            self.first()
        return self._draw()

    def torch_generators(self) -> list[torch.Generator] | None:
        """The generators for diffusers' schedulers, which draw step noise themselves; None
        for NV, whose noise only this class can draw."""
        return None if self.source == "NV" else list(self._generators)
