"""Seeds and noise sources: NVIDIA's Philox noise computed anywhere (A1111's NV), Eta noise
seed delta, and one generator per image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.generation.noise import ImageNoise, generator_device, seeded_noise
from modules.generation.philox import PhiloxGenerator, philox4x32

# What A1111 1.10.1's NV generator returned (recorded in its own venv; ../shared/reference).
REFERENCE = Path(__file__).resolve().parent / "data" / "a1111-nv-noise-seed1234.json"


@pytest.mark.parametrize(
    "counter, key, expected",
    [  # Philox4x32-10 known-answer vectors published with the Random123 library (Salmon et al. 2011)
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0), (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ],
)
def test_philox_4x32_10_matches_the_published_known_answers(counter, key, expected):
    words = philox4x32([np.array([c], dtype=np.uint64) for c in counter], key)
    assert tuple(int(w[0]) for w in words) == expected


def test_nv_noise_equals_a1111s_bit_for_bit():
    """A1111 1.10.1's NV generator, recorded: seed 1234, its next draw, and the first draw after ENSD 31337."""
    ref = json.loads(REFERENCE.read_text())
    noise = ImageNoise([1234], (4, 8, 8), torch.device("cpu"), torch.float32, "NV")
    assert np.array_equal(noise.first().numpy().ravel(), np.asarray(ref["noise"], dtype=np.float32).ravel())
    assert np.array_equal(noise.next().numpy().ravel(), np.asarray(ref["second_draw_offset1"], dtype=np.float32).ravel())
    ensd = ImageNoise([1234], (4, 8, 8), torch.device("cpu"), torch.float32, "NV", ensd=31337)
    ensd.first()
    assert np.array_equal(ensd.next().numpy().ravel(), np.asarray(ref["ensd31337_first_draw"], dtype=np.float32).ravel())


def test_nv_noise_for_seed_0_and_a_second_call():
    """Independent values (computed from the published Philox and Box-Muller description):
    seed 0, a (3, 4) draw, then a (2,) draw from the same generator."""
    generator = PhiloxGenerator(0)
    first = generator.randn((3, 4))
    assert first.dtype == np.float32 and first.shape == (3, 4)
    assert first[0].tolist() == pytest.approx([-0.9246624, -0.42534396, -2.6438458, 0.14518388], abs=1e-7)
    assert first[2].tolist() == pytest.approx([-1.074542, -0.3631441, -1.6710504, 2.265505], abs=1e-6)
    assert generator.randn((2,)).tolist() == pytest.approx([0.18082589, -0.5522627], abs=1e-7)


def test_each_image_has_its_own_generator_whatever_the_batch():
    batch = ImageNoise([7, 8, 9], (4, 8, 8), torch.device("cpu"), torch.float32, "CPU")
    single = ImageNoise([8], (4, 8, 8), torch.device("cpu"), torch.float32, "CPU")
    assert torch.equal(batch.first()[1], single.first()[0])
    assert torch.equal(batch.next()[1], single.next()[0])
    for source in ("GPU", "CPU", "NV"):
        nv = ImageNoise([7, 8], (4, 8, 8), torch.device("cpu"), torch.float32, source)
        a = nv.first()
        assert a.shape == (2, 4, 8, 8) and not torch.equal(a[0], a[1]) and not torch.equal(a, nv.next())


def test_ensd_changes_the_step_noise_but_not_the_initial_noise():
    """A1111 seeds each image's generator again with seed + ENSD after the initial noise."""
    plain = ImageNoise([5], (4, 8, 8), torch.device("cpu"), torch.float32, "CPU")
    delta = ImageNoise([5], (4, 8, 8), torch.device("cpu"), torch.float32, "CPU", ensd=31337)
    assert torch.equal(plain.first(), delta.first())
    reseeded = torch.Generator("cpu").manual_seed(5 + 31337)
    assert torch.equal(delta.next()[0], torch.randn((4, 8, 8), generator=reseeded))
    assert torch.equal(delta.next()[0], torch.randn((4, 8, 8), generator=reseeded))
    assert not torch.equal(plain.next(), ImageNoise([5], (4, 8, 8), torch.device("cpu"), torch.float32, "CPU", ensd=31337).next())


def test_gpu_source_draws_on_the_cpu_where_there_is_no_gpu_and_on_mps():
    assert generator_device("GPU", torch.device("cpu")).type == "cpu"
    assert generator_device("GPU", torch.device("mps")).type == "cpu"
    assert generator_device("GPU", torch.device("cuda", 0)).type == "cuda"
    assert generator_device("CPU", torch.device("cuda", 0)).type == "cpu"


def test_seeded_noise_is_a1111s_randn_local():
    nv = seeded_noise("NV", 1234, (4, 8, 8), torch.device("cpu"))
    assert torch.equal(nv, ImageNoise([1234], (4, 8, 8), torch.device("cpu"), torch.float32, "NV").first()[0])
    cpu = seeded_noise("CPU", 3, (2, 2), torch.device("cpu"))
    assert torch.equal(cpu, torch.randn((2, 2), generator=torch.Generator().manual_seed(3)))


def test_an_unknown_source_is_refused():
    with pytest.raises(ValueError, match="'TPU' is not one of: GPU, CPU, NV"):
        ImageNoise([1], (4, 8, 8), torch.device("cpu"), torch.float32, "TPU")
