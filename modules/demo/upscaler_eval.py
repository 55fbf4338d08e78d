"""Judging a 4× upscaler on held-out demo pictures: PSNR against Lanczos and bicubic.

A held-out pair is one of the demo's held-out scenes (colour/shape/background combinations
its training never draws) at a random size and place from a seed the training never uses,
drawn at the demo model's 64 px and again at 4× that: the large drawing is the truth the
upscaled small one is measured against. Shared by bench/upscaler_psnr.py and the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from modules.demo import shapes

SCALE = 4
HELD_OUT_SEED = 777_2026  # the training draws from Recipe.seed; this one it never sees
PIL_FILTERS = {"Lanczos": Image.Resampling.LANCZOS, "Bicubic": Image.Resampling.BICUBIC}


def held_out_pairs(count: int, seed: int = HELD_OUT_SEED, size: int = shapes.SIZE) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` (small, large) uint8 pairs: held-out scenes placed as the demo's pictures are
    (shapes.random_picture's size and place), drawn at ``size`` and at ``SCALE * size``."""
    scenes = shapes.held_out_scenes()
    rng = np.random.default_rng([seed, count])
    order = rng.permutation(len(scenes))
    pairs = []
    for k in range(count):
        scene = scenes[order[k % len(scenes)]]
        half = rng.uniform(*shapes.HALF_SIZE) * size / shapes.SIZE
        low, high = shapes.BORDER + half, size - shapes.BORDER - half
        cx, cy = rng.uniform(low, high), rng.uniform(low, high)
        small = np.asarray(shapes.draw(scene, (cx, cy), half, size))
        large = np.asarray(shapes.draw(scene, (cx * SCALE, cy * SCALE), half * SCALE, size * SCALE))
        pairs.append((small, large))
    return pairs


def psnr(picture: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 pictures (capped at 100 when equal)."""
    mse = float(np.mean((picture.astype(np.float64) - truth.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def pil_upscaler(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """A PIL resize by SCALE with one of PIL_FILTERS."""
    resample = PIL_FILTERS[name]

    def upscale(small: np.ndarray) -> np.ndarray:
        image = Image.fromarray(small)
        return np.asarray(image.resize((image.width * SCALE, image.height * SCALE), resample))

    return upscale


def load_model(path: Path):
    """The file through spandrel, checked to be a 4× RGB super-resolution model, in eval mode on CPU."""
    import spandrel

    descriptor = spandrel.ModelLoader().load_from_file(str(path))
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.scale != SCALE:
        raise ValueError(f"{Path(path).name} is not a {SCALE}x image upscaler (spandrel reads {descriptor.architecture.name}).")
    return descriptor.eval()


def model_upscaler(descriptor) -> Callable[[np.ndarray], np.ndarray]:
    """Whole-picture inference with a spandrel ImageModelDescriptor (small pictures only)."""
    import torch

    def upscale(small: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.array(small)).permute(2, 0, 1)[None].float() / 255.0
        with torch.inference_mode():
            out = descriptor(tensor.to(descriptor.device, descriptor.dtype))
        return (out[0].float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()

    return upscale


@dataclass(frozen=True)
class Scores:
    """Mean per-picture PSNR (dB) of each upscaler over the same pairs."""

    psnr: dict[str, float]
    pictures: int

    def gain(self, name: str, over: str = "Lanczos") -> float:
        return self.psnr[name] - self.psnr[over]


def compare(upscalers: dict[str, Callable[[np.ndarray], np.ndarray]], pairs: list[tuple[np.ndarray, np.ndarray]]) -> Scores:
    """Every upscaler on every pair, in one run."""
    totals = {name: 0.0 for name in upscalers}
    for small, large in pairs:
        for name, upscale in upscalers.items():
            totals[name] += psnr(upscale(small), large)
    return Scores({name: total / len(pairs) for name, total in totals.items()}, len(pairs))
