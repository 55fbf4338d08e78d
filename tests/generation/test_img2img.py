"""img2img, inpainting and hires fix through the generation core, checked on pixels.

Where meaning matters (does a recolouring inpaint recolour?) the embedded demo model draws and
its judge reads the result; the tiny random model covers the mechanics quickly.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.demo import judge, shapes
from modules.generation import images as imgops
from modules.generation.control import RunControl
from modules.generation.params import GenerationParams, Img2ImgParams
from modules.generation.runner import InitImages, Runner


def scene(colour: str, shape: str, background: str) -> Image.Image:
    return shapes.draw(shapes.Scene(colour, shape, background), (32.0, 32.0), 18.0)


def read(image: Image.Image) -> tuple:
    r = judge.read_picture(image)
    return (r.background, r.colour, r.shape)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=int)


def img2img(runner: Runner, init: Image.Image, mask: Image.Image | None = None, seed: int = 1, **values) -> list[Image.Image]:
    params = Img2ImgParams.create(**{"width": 64, "height": 64, "steps": 20, "cfg_scale": 5, **values})
    return [im for b in runner.img2img(params, InitImages((init,), mask), seed) for im in b.images]


def centre_mask(size: int = 64, box: tuple[int, int, int, int] = (14, 14, 50, 50)) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    return mask


@pytest.fixture(scope="module")
def demo(demo_model):
    return Runner(demo_model)


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return Runner(tiny_model)


def test_strength_0_returns_the_init_image_after_the_vae_round_trip(demo):
    init = scene("red", "circle", "blue")
    [out] = img2img(demo, init, denoising_strength=0.0, prompt="a yellow star on a black background")
    assert (pixels(out) == pixels(demo.decode(demo.encode([init]))[0])).all()
    assert np.abs(pixels(out) - pixels(init)).mean() < 8  # the demo VAE keeps the picture
    assert read(out) == ("blue", "red", "circle")


def test_strength_1_ignores_the_init_image(demo):
    prompt = "a red circle on a blue background"
    a = img2img(demo, scene("yellow", "star", "black"), denoising_strength=1.0, prompt=prompt, batch_size=2)
    b = img2img(demo, scene("white", "square", "green"), denoising_strength=1.0, prompt=prompt, batch_size=2)
    for x, y in zip(a, b):
        assert (pixels(x) == pixels(y)).all()
        assert read(x)[:2] == ("blue", "red")


def test_restyle_keeps_the_layout_and_follows_the_prompt(demo):
    """Strength 0.6 on a green background: the prompt's blue background wins, the shape stays."""
    outs = img2img(demo, scene("red", "circle", "green"), denoising_strength=0.6, prompt="a red circle on a blue background", batch_size=4)
    readings = [judge.read_picture(o) for o in outs]
    assert sum(r.background == "blue" for r in readings) >= 3, readings
    assert sum(r.colour == "red" for r in readings) >= 3, readings


def test_same_seed_same_pixels_and_steps_follow_strength(tiny):
    init = scene("red", "circle", "blue")
    first = img2img(tiny, init, seed=7, steps=10, denoising_strength=0.5, prompt="x")
    again = img2img(tiny, init, seed=7, steps=10, denoising_strength=0.5, prompt="x")
    assert (pixels(first[0]) == pixels(again[0])).all()

    def steps_run(**values) -> list[int]:
        seen: list[int] = []
        control = RunControl(on_step=lambda info: seen.append(info.step))
        params = Img2ImgParams.create(prompt="x", width=64, height=64, steps=10, **values)
        list(tiny.img2img(params, InitImages((init,)), 1, control))
        return seen

    assert steps_run(denoising_strength=0.5) == [1, 2, 3, 4, 5]  # A1111: steps x strength
    assert len(steps_run(denoising_strength=0.5, img2img_fix_steps=True)) == 10  # exactly the slider's steps
    assert max(steps_run(denoising_strength=0.5, sampler_name="Heun")) == 5  # second-order samplers too


@pytest.mark.parametrize("sampler", ["DPM++ 2M", "Euler a", "DDIM", "Heun", "UniPC", "DPM++ SDE"])
def test_inpainting_leaves_unmasked_pixels_alone(tiny, sampler):
    init = scene("red", "circle", "blue")
    mask = centre_mask(box=(20, 20, 44, 44))
    [out] = img2img(tiny, init, mask, sampler_name=sampler, steps=6, mask_blur=4, prompt="x", denoising_strength=0.9)
    band = np.asarray(imgops.blur_mask(mask, 4)) > 0
    assert (pixels(out)[~band] == pixels(init)[~band]).all()
    assert np.abs(pixels(out)[28:36, 28:36] - pixels(init)[28:36, 28:36]).mean() > 10  # the tiny model's noise went in


def test_a_recolouring_inpaint_recolours_the_masked_shape(demo):
    init = scene("red", "circle", "blue")
    mask = centre_mask(box=(8, 8, 56, 56))
    outs = img2img(demo, init, mask, prompt="a green circle on a blue background", denoising_strength=1.0, batch_size=4, mask_blur=2)
    readings = [judge.read_picture(o) for o in outs]
    assert sum(r.colour == "green" for r in readings) >= 3, readings
    assert all(r.background == "blue" for r in readings), readings
    corner = np.zeros((64, 64), bool)
    corner[:4, :4] = True
    for out in outs:
        assert (pixels(out)[corner] == pixels(init)[corner]).all()


def test_masked_content_options_change_where_the_masked_area_starts(tiny):
    init = scene("red", "circle", "blue")
    mask = centre_mask()
    results = {
        fill: pixels(img2img(tiny, init, mask, inpainting_fill=fill, denoising_strength=0.5, steps=4, prompt="x")[0])
        for fill in range(4)
    }
    inside = np.asarray(centre_mask(box=(24, 24, 40, 40))) > 0
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(results[a][inside] - results[b][inside]).mean() > 1, (a, b)


def test_inpaint_not_masked_repaints_the_outside(tiny):
    init = scene("red", "circle", "blue")
    mask = centre_mask(box=(16, 16, 48, 48))
    [out] = img2img(tiny, init, mask, inpainting_mask_invert=1, mask_blur=0, prompt="x", steps=4)
    inside = np.asarray(mask) > 0
    assert (pixels(out)[inside] == pixels(init)[inside]).all()
    assert np.abs(pixels(out)[~inside] - pixels(init)[~inside]).mean() > 10


def test_only_masked_changes_only_the_crop_and_keeps_the_size(tiny):
    init = Image.new("RGB", (160, 96), (40, 120, 200))
    ImageDraw.Draw(init).rectangle((100, 30, 140, 70), fill=(220, 40, 40))
    mask = Image.new("L", (160, 96), 0)
    ImageDraw.Draw(mask).rectangle((110, 40, 130, 60), fill=255)
    [out] = img2img(tiny, init, mask, inpaint_full_res=True, inpaint_full_res_padding=8, mask_blur=2, prompt="x", steps=4)
    assert out.size == init.size  # the whole picture comes back, not the 64x64 crop
    band = np.asarray(imgops.blur_mask(mask, 2)) > 0
    assert (pixels(out)[~band] == pixels(init)[~band]).all()
    assert np.abs(pixels(out)[45:55, 115:125] - pixels(init)[45:55, 115:125]).mean() > 10


def test_bad_masks(tiny):
    init = scene("red", "circle", "blue")
    with pytest.raises(ValueError, match="mask is empty"):
        img2img(tiny, init, Image.new("L", (64, 64), 0), prompt="x", steps=2)
    # A mask of another size is stretched over the picture, as A1111 does.
    small = Image.new("L", (16, 16), 0)
    ImageDraw.Draw(small).rectangle((0, 0, 7, 15), fill=255)  # left half
    [out] = img2img(tiny, init, small, mask_blur=0, prompt="x", steps=3)
    assert (pixels(out)[:, 40:] == pixels(init)[:, 40:]).all()
    assert np.abs(pixels(out)[:, :24] - pixels(init)[:, :24]).mean() > 10


def test_resize_modes_give_the_requested_size(tiny):
    wide = Image.new("RGB", (128, 64), (200, 30, 30))
    for mode in range(4):
        [out] = img2img(tiny, wide, width=64, height=96, resize_mode=mode, prompt="x", steps=2)
        assert out.size == (64, 96), mode


def test_an_inpainting_checkpoint_uses_its_own_path(tiny_inpainting_model):
    runner = Runner(tiny_inpainting_model)
    assert runner.inpainting_model and tiny_inpainting_model.unet.config.in_channels == 9
    init = scene("red", "circle", "blue")
    mask = centre_mask(box=(20, 20, 44, 44))
    [out] = img2img(runner, init, mask, prompt="x", steps=3)
    band = np.asarray(imgops.blur_mask(mask, 4)) > 0
    assert (pixels(out)[~band] == pixels(init)[~band]).all()
    # txt2img and plain img2img run on it too (the whole picture counts as masked).
    params = GenerationParams.create(prompt="x", width=64, height=64, steps=2, seed=1)
    assert [im.size for b in runner.txt2img(params, 1) for im in b.images] == [(64, 64)]
    assert img2img(runner, init, prompt="x", steps=2)[0].size == (64, 64)


@pytest.mark.parametrize("upscaler", ["Latent", "Latent (nearest)", "Lanczos", "Nearest"])
def test_hires_fix_makes_the_requested_size(tiny, upscaler):
    params = GenerationParams.create(
        prompt="x", width=64, height=64, steps=3, enable_hr=True, hr_upscaler=upscaler, hr_scale=1.5, hr_second_pass_steps=4, denoising_strength=0.5,
    )
    seen: list[tuple[int, int]] = []
    control = RunControl(on_step=lambda info: seen.append((info.step, info.steps)))
    [image] = [im for b in tiny.txt2img(params, 3, control) for im in b.images]
    assert image.size == (96, 96)
    assert seen[-1] == (7, 7) and len(seen) == 7  # 3 first-pass steps + 4 hires steps: A1111 runs exactly the hires steps
    cropped = GenerationParams.create(prompt="x", width=64, height=64, steps=2, enable_hr=True, hr_upscaler=upscaler, hr_resize_x=128, hr_resize_y=96)
    assert [im.size for b in tiny.txt2img(cropped, 3) for im in b.images] == [(128, 96)]


def test_hires_fix_keeps_the_demo_picture(demo):
    """The second pass refines the first: same scene, twice the size."""
    params = GenerationParams.create(
        prompt="a red circle on a blue background", width=64, height=64, steps=20, cfg_scale=5, enable_hr=True, hr_upscaler="Lanczos",
        denoising_strength=0.3, batch_size=2,
    )
    for image in (im for b in demo.txt2img(params, 11) for im in b.images):
        assert image.size == (128, 128)
        assert read(image.resize((64, 64), Image.Resampling.BOX))[:2] == ("blue", "red")
