"""A1111's variation seeds and seed resize: strength 0 is the seed's picture, 1 the variation
seed's, in between a third picture; a batch keeps its seed and counts the variation seeds up;
"Resize seed from" keeps the composition of the size it names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modules.generation.noise import ImageNoise, job_seeds, job_subseeds
from modules.generation.params import GenerationParams, Img2ImgParams, infotext_fields
from modules.generation.runner import InitImages, Runner

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def runner(tiny_model):
    return Runner(tiny_model)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def batches(runner: Runner, **values):
    params = GenerationParams.create(**{"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 4, "sampler_name": "Euler", **values})
    return list(runner.txt2img(params, params.seed))


def generate(runner: Runner, **values) -> list[np.ndarray]:
    return [pixels(im) for batch in batches(runner, **values) for im in batch.images]


@pytest.mark.parametrize("source", ["CPU", "NV"])  # GPU is the CPU's generator here; its noise is checked below
def test_strength_0_is_the_seeds_picture_and_1_the_variation_seeds(runner, source):
    [plain] = generate(runner, seed=11, randn_source=source)
    [zero] = generate(runner, seed=11, subseed=77, subseed_strength=0.0, randn_source=source)
    [one] = generate(runner, seed=11, subseed=77, subseed_strength=1.0, randn_source=source)
    [other] = generate(runner, seed=77, randn_source=source)
    [half] = generate(runner, seed=11, subseed=77, subseed_strength=0.5, randn_source=source)
    assert np.array_equal(zero, plain)
    assert np.array_equal(one, other)
    assert np.abs(half - plain).mean() > 5 and np.abs(half - other).mean() > 5


def test_the_noise_endpoints_are_exact_and_the_step_noise_stays_the_seeds():
    for source in ("GPU", "CPU", "NV"):
        seed_noise = ImageNoise([11], (4, 8, 8), CPU, torch.float32, source)
        mixed = ImageNoise([11], (4, 8, 8), CPU, torch.float32, source, subseeds=[77], subseed_strength=1.0)
        assert torch.equal(mixed.first(), ImageNoise([77], (4, 8, 8), CPU, torch.float32, source).first())
        seed_noise.first()
        assert torch.equal(mixed.next(), seed_noise.next())  # ancestral samplers' noise: the seed's, as A1111


def test_a_batch_keeps_its_seed_and_counts_the_variation_seeds_up(runner):
    assert job_seeds(5, 2, 2, subseed_strength=0.3) == [[5, 5], [5, 5]]
    assert job_subseeds(40, 2, 2) == [[40, 41], [42, 43]]
    [batch] = batches(runner, seed=21, subseed=500, subseed_strength=0.5, batch_size=2)
    assert batch.seeds == [21, 21] and batch.subseeds == [500, 501]
    [single] = generate(runner, seed=21, subseed=501, subseed_strength=0.5)
    assert np.abs(pixels(batch.images[1]) - single).max() <= 1
    assert np.abs(pixels(batch.images[0]) - pixels(batch.images[1])).mean() > 5


def test_a_random_variation_seed_is_drawn_and_reported(runner):
    [batch] = batches(runner, seed=3, subseed=-1, subseed_strength=0.2, batch_size=2)
    first = batch.subseeds[0]
    assert first >= 0 and batch.subseeds == [first, first + 1]
    [again] = generate(runner, seed=3, subseed=first, subseed_strength=0.2)
    assert np.abs(pixels(batch.images[0]) - again).max() <= 1


def test_the_hires_pass_and_img2img_use_the_variation_seed(runner):
    hires = {"enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 2, "denoising_strength": 0.6}
    [one] = generate(runner, seed=11, subseed=77, subseed_strength=1.0, **hires)
    [other] = generate(runner, seed=77, **hires)
    assert one.shape == (96, 96, 3) and np.array_equal(one, other)

    init = InitImages((Image.new("RGB", (64, 64), (180, 60, 40)),))

    def img2img(seed: int, **values) -> np.ndarray:
        params = Img2ImgParams.create(prompt="a lighthouse", width=64, height=64, steps=4, sampler_name="Euler", denoising_strength=0.6,
                                      seed=seed, **values)
        return pixels(next(iter(runner.img2img(params, init, seed))).images[0])

    assert np.array_equal(img2img(11, subseed=77, subseed_strength=1.0), img2img(77))
    assert not np.array_equal(img2img(11, subseed=77, subseed_strength=0.5), img2img(11))


def test_seed_resize_pastes_the_seeds_noise_on_the_centre():
    for source in ("GPU", "CPU", "NV"):
        small = ImageNoise([9], (4, 8, 8), CPU, torch.float32, source).first()[0]
        wide = ImageNoise([9], (4, 8, 12), CPU, torch.float32, source, resize_from=(8, 8))
        noise = wide.first()[0]
        assert torch.equal(noise[:, :, 2:10], small)
        plain = ImageNoise([9], (4, 8, 12), CPU, torch.float32, source)
        assert torch.equal(noise[:, :, :2], plain.first()[0][:, :, :2])  # the rest is the full size's own noise
        assert torch.equal(wide.next(), plain.next())
        narrow = ImageNoise([9], (4, 8, 4), CPU, torch.float32, source, resize_from=(8, 8)).first()[0]
        assert torch.equal(narrow, small[:, :, 2:6])  # a larger size is cropped to its middle


def test_seed_resize_keeps_the_composition_of_the_smaller_picture(runner):
    """The 64x64 picture reappears in the middle of the 96x64 one made with "Resize seed from
    64x64"; the 96x64 picture without it is another picture."""
    [small] = generate(runner, seed=2, width=64)
    [resized] = generate(runner, seed=2, width=96, seed_resize_from_w=64, seed_resize_from_h=64)
    [plain] = generate(runner, seed=2, width=96)
    kept = np.abs(resized[:, 16:80] - small).mean()
    assert kept < 20 and kept * 2 < np.abs(plain[:, 16:80] - small).mean()
    [same] = generate(runner, seed=2, width=64, seed_resize_from_w=64, seed_resize_from_h=64)
    assert np.array_equal(same, small)  # resizing from the picture's own size changes nothing


def test_infotext_keys_only_when_in_use():
    base = {"prompt": "x", "width": 64, "height": 64}
    keys = lambda p, **kw: dict((k, v) for k, v in infotext_fields(p, seed=1, model_hash=None, model_name=None, version="v", **kw) if v is not None)  # noqa: E731
    plain = keys(GenerationParams.create(**base, subseed=5))
    assert not {"Variation seed", "Variation seed strength", "Seed resize from", "Tiling"} & set(plain)
    used = keys(GenerationParams.create(**base, subseed=5, subseed_strength=0.25, seed_resize_from_w=128, seed_resize_from_h=96, tiling=True),
                subseed=6)
    assert used["Variation seed"] == 6 and used["Variation seed strength"] == "0.25" and used["Seed resize from"] == "128x96"
    assert used["Tiling"] == "True"
    order = [k for k in used if k in ("Size", "Variation seed", "Variation seed strength", "Seed resize from", "Tiling", "Version")]
    assert order == ["Size", "Variation seed", "Variation seed strength", "Seed resize from", "Tiling", "Version"]  # A1111's places
    assert GenerationParams.create(seed_resize_from_w=-1, seed_resize_from_h=-1).seed_resize_from_w == 0  # A1111's API "off"
    with pytest.raises(ValueError, match="Variation strength"):
        GenerationParams.create(subseed_strength=1.5)
