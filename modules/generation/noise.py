"""Seeds and noise, A1111-style: seed -1 means random, image i of a job uses seed+i, and each
image's noise comes from its own generator, so a batch of 4 starting at seed S gives the
same four images as four single runs with seeds S..S+3.

Where the noise is drawn is A1111's `randn_source` setting (infotext `RNG`):
- GPU (the default): on the generating device, as A1111 does on NVIDIA cards; on the CPU and
  on Apple's MPS, where A1111 also falls back, on the CPU.
- CPU: always on the CPU, so a seed gives the same picture on every device.
- NV: NVIDIA's CUDA noise computed on any device (modules.generation.philox), so a picture
  made on an NVIDIA card with the default setting can be remade on a Mac or a CPU.

A1111's variation seeds and seed resize change only each image's first noise: it is the seed's
noise spherically interpolated towards the variation seed's (strength 0 is the seed's picture,
1 the variation seed's), and with "Resize seed from" both are drawn at that size and pasted on
the centre of the full-size noise, so a picture keeps its composition when its size changes.
The step noise of ancestral and SDE samplers stays the seed's, as in A1111.
"""

from __future__ import annotations

import random
from typing import Sequence

import torch

from modules.generation.params import MAX_SEED, RNG_SOURCES
from modules.generation.philox import PhiloxGenerator



def resolve_seed(seed: int, rng: random.Random | None = None) -> int:
    if seed is None or int(seed) < 0:
        return (rng or random.SystemRandom()).randrange(MAX_SEED)
    return int(seed)


def job_seeds(first_seed: int, n_iter: int, batch_size: int, subseed_strength: float = 0.0) -> list[list[int]]:
    """Seeds per batch: [[s, s+1], [s+2, s+3]] for 2 batches of 2. With a variation strength
    every image keeps the first seed and only the variation seeds count up, as in A1111, so a
    batch shows variations of one picture."""
    step = 0 if subseed_strength else 1
    return [[first_seed + (b * batch_size + i) * step for i in range(batch_size)] for b in range(n_iter)]


def job_subseeds(first_subseed: int, n_iter: int, batch_size: int) -> list[list[int]]:
    """Variation seeds per batch: image i of the job uses first_subseed + i."""
    return job_seeds(first_subseed, n_iter, batch_size)


def slerp(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from `a` (t=0) to `b` (t=1) of one image's [C, H, W] noise, taken
    per channel and column over the rows, where A1111 takes it (its norms run over dim 1), so the
    same seeds give A1111's pictures. Nearly parallel noises are interpolated linearly."""
    a_unit = a / a.norm(dim=1, keepdim=True)
    b_unit = b / b.norm(dim=1, keepdim=True)
    cosine = (a_unit * b_unit).sum(dim=1)
    if cosine.mean() > 0.9995:
        return a * (1 - t) + b * t
    angle = cosine.acos()
    sine = angle.sin()
    weight_a = (((1.0 - t) * angle).sin() / sine).unsqueeze(1)
    weight_b = ((t * angle).sin() / sine).unsqueeze(1)
    return weight_a * a + weight_b * b


def paste_centred(small: torch.Tensor, big: torch.Tensor) -> torch.Tensor:
    """`big` [C, H, W] with `small`'s centre written over its centre (A1111's seed resize): a
    smaller `small` lands whole in the middle, a larger one is cropped to its middle. Offsets
    round down as A1111's do, so an odd difference leaves A1111's one row or column of `big`."""
    out = big.clone()
    spans = []
    for small_size, big_size in zip(small.shape[1:], big.shape[1:]):
        offset = (big_size - small_size) // 2
        if offset >= 0:
            spans.append((offset, 0, small_size))
        else:
            spans.append((0, -offset, small_size + 2 * offset))
    (top, src_top, rows), (left, src_left, cols) = spans
    out[:, top : top + rows, left : left + cols] = small[:, src_top : src_top + rows, src_left : src_left + cols]
    return out


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

    `subseeds` and `subseed_strength` mix each image's first noise towards its variation seed's;
    `resize_from` (latent height, width) draws the seed's (and variation seed's) noise at that
    size and pastes it on the centre. Neither changes the step noise.
    """

    def __init__(self, seeds: Sequence[int], shape: tuple[int, ...], device: torch.device, dtype: torch.dtype,
                 source: str = "GPU", ensd: int = 0, subseeds: Sequence[int] = (), subseed_strength: float = 0.0,
                 resize_from: tuple[int, int] | None = None):
        if source not in RNG_SOURCES:
            raise ValueError(f"Random number source '{source}' is not one of: {', '.join(RNG_SOURCES)}.")
        self.seeds = [int(s) for s in seeds]
        self.shape = tuple(shape)  # one image's latent: (C, H, W)
        self.device, self.dtype = torch.device(device), dtype
        self.source = source
        self.ensd = int(ensd or 0)
        self.subseeds = [int(s) for s in subseeds]
        self.subseed_strength = float(subseed_strength or 0.0)
        if self.subseed_strength and len(self.subseeds) < len(self.seeds):
            raise ValueError(f"Variation seeds: {len(self.subseeds)} given for {len(self.seeds)} images.")
        self.seed_shape = self.shape
        if resize_from is not None and min(resize_from) > 0:
            self.seed_shape = (self.shape[0], int(resize_from[0]), int(resize_from[1]))
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

    def _fresh(self, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
        """The first float32 draw of a new generator for `seed` (A1111's randn(seed, shape)),
        on the generators' device, leaving the image generators as they are."""
        if self.source == "NV":
            return torch.from_numpy(PhiloxGenerator(seed).randn(shape))
        generator = self._make([seed])[0]
        return torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)

    def _varied(self) -> torch.Tensor:
        """The first noise with variation seeds or seed resize: each image's generator still
        draws one full-size tensor, so its step noise is what it would be without them."""
        images = []
        for i, generator in enumerate(self._generators):
            if self.source == "NV":
                full = torch.from_numpy(generator.randn(self.shape))
            else:
                full = torch.randn(self.shape, generator=generator, device=generator.device, dtype=torch.float32)
            resized = self.seed_shape != self.shape
            picture = self._fresh(self.seeds[i], self.seed_shape) if resized else full
            if self.subseed_strength:
                picture = slerp(self.subseed_strength, picture, self._fresh(self.subseeds[i], self.seed_shape).to(picture.device))
            images.append(paste_centred(picture, full) if resized else picture)
        return torch.stack(images).to(self.device, self.dtype)

    def first(self) -> torch.Tensor:
        """[B, C, H, W]: each image's initial noise."""
        plain = not self.subseed_strength and self.seed_shape == self.shape
        noise = self._draw() if plain else self._varied()
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
