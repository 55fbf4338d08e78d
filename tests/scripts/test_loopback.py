"""Loopback: img2img of the previous picture, loop after loop, its denoising strength on A1111's curves."""

from __future__ import annotations

import math

import pytest

from modules.scripts.loopback import denoising_strength


@pytest.mark.parametrize("curve, middle", [("Linear", 0.5), ("Aggressive", math.sin(math.pi / 4)), ("Lazy", 1 - math.cos(math.pi / 4))])
def test_curves_run_from_the_requests_strength_to_the_final_one(curve, middle):
    strengths = [denoising_strength(loop, 3, 0.2, 0.6, curve) for loop in range(3)]
    assert strengths[0] == pytest.approx(0.2)
    assert strengths[1] == pytest.approx(0.2 + 0.4 * middle)
    assert strengths[2] == pytest.approx(0.6)


def test_a_single_loop_keeps_the_requests_strength():
    assert denoising_strength(1, 1, 0.3, 0.9, "Linear") == 0.3


def test_aggressive_is_above_linear_and_lazy_below():
    args = (2, 5, 0.1, 0.9)
    assert denoising_strength(*args, "Aggressive") > denoising_strength(*args, "Linear") > denoising_strength(*args, "Lazy")
