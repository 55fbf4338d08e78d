"""A1111's Tiling: the picture wraps around without a seam, and only for the job that asks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.generation.params import GenerationParams
from modules.generation.runner import Runner
from modules.generation.tiling import circular


@pytest.fixture(scope="module")
def runner(tiny_model):
    return Runner(tiny_model)


def generate(runner: Runner, tiling: bool) -> np.ndarray:
    params = GenerationParams.create(prompt="a brick wall", width=64, height=64, steps=4, sampler_name="Euler", seed=1, batch_size=4,
                                     tiling=tiling)
    return np.stack([np.asarray(im, dtype=np.float32) for batch in runner.txt2img(params, 1) for im in batch.images])


def seam_ratios(pictures: np.ndarray) -> tuple[float, float]:
    """How much the last column differs from the first (and the last row from the first row),
    over how much neighbouring columns (rows) differ inside the pictures, averaged over a batch."""
    ratios = []
    for axis in (2, 1):  # columns, rows of [N, H, W, C]
        inside = np.abs(np.diff(pictures, axis=axis)).mean()
        edge = np.abs(pictures.take(0, axis=axis) - pictures.take(-1, axis=axis)).mean()
        ratios.append(float(edge / inside))
    return ratios[0], ratios[1]


def test_a_tiled_picture_wraps_around_and_the_next_job_is_untouched(runner):
    before = generate(runner, tiling=False)
    tiled = generate(runner, tiling=True)
    after = generate(runner, tiling=False)
    columns, rows = seam_ratios(tiled)
    # Edge to edge like neighbours inside (1.0 = the same; a 4-picture sample varies by a few per cent).
    assert columns <= 1.1 and rows <= 1.1 and (columns + rows) / 2 <= 1.0
    assert min(seam_ratios(before)) > 1.2  # the same measure finds the seams of the untiled pictures
    assert np.array_equal(after, before)  # the model is as it was for the next job


def test_circular_padding_is_undone_even_when_the_job_fails(tiny_model):
    convs = [layer for model in (tiny_model.unet, tiny_model.vae) for layer in model.modules() if isinstance(layer, torch.nn.Conv2d)]
    padded = [layer for layer in convs if layer.padding != (0, 0)]
    assert padded and all(layer.padding_mode == "zeros" for layer in convs)
    with pytest.raises(RuntimeError):
        with circular((tiny_model.unet, tiny_model.vae)):
            assert all(layer.padding_mode == "circular" for layer in padded)
            raise RuntimeError("out of memory")
    assert all(layer.padding_mode == "zeros" for layer in convs)
    with circular((tiny_model.unet,), enabled=False):
        assert all(layer.padding_mode == "zeros" for layer in convs)
