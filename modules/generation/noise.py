"""Seeds and initial noise, A1111-style: seed -1 means random, image i of a job uses seed+i,
and each image's noise comes from its own generator so a batch of 4 starting at seed S
gives the same four images as four single runs with seeds S..S+3.

Noise is drawn on the CPU with torch's generator, so a seed gives the same picture on CUDA,
MPS and CPU (A1111's "RNG: CPU"; its GPU default differs per card).
"""

from __future__ import annotations

import random

import torch
from diffusers.utils.torch_utils import randn_tensor

MAX_SEED = 4294967294  # what A1111 draws random seeds below


def resolve_seed(seed: int, rng: random.Random | None = None) -> int:
    if seed is None or int(seed) < 0:
        return (rng or random.SystemRandom()).randrange(MAX_SEED)
    return int(seed)


def job_seeds(first_seed: int, n_iter: int, batch_size: int) -> list[list[int]]:
    """Seeds per batch: [[s, s+1], [s+2, s+3]] for 2 batches of 2."""
    return [[first_seed + b * batch_size + i for i in range(batch_size)] for b in range(n_iter)]


def generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def initial_noise(gens: list[torch.Generator], shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """One [C, H/8, W/8] draw per image from its own generator (diffusers' layout for a list of generators)."""
    return randn_tensor((len(gens), *shape), generator=gens, device=device, dtype=dtype)
