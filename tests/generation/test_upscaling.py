"""The Extras upscale step, pixel by pixel: scale by, scale to with and without crop, the
second upscaler's blend, and readable errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules.generation.upscaling import ExtrasParams, Resampler, UpscalerRegistry, builtin_upscalers, info_text, postprocess

RED, BLUE, GREEN, WHITE = (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 255)


def two_colour(size: int = 16) -> Image.Image:
    """Left half red, right half blue, with one white pixel in the top-left corner."""
    image = Image.new("RGB", (size, size), BLUE)
    image.paste(RED, (0, 0, size // 2, size))
    image.putpixel((0, 0), WHITE)
    return image


def stripes(colours, width: int = 10, height: int = 20) -> Image.Image:
    image = Image.new("RGB", (width * len(colours), height))
    for i, colour in enumerate(colours):
        image.paste(colour, (i * width, 0, (i + 1) * width, height))
    return image


def test_nearest_scale_by_2_gives_exact_2x2_blocks():
    done = postprocess(two_colour(), ExtrasParams.create(upscaling_resize=2, upscaler_1="Nearest"))
    assert done.image.size == (32, 32)
    pixels = np.asarray(done.image)
    assert (pixels[:2, :2] == WHITE).all() and (pixels[2:, :16] == RED).all() and (pixels[:, 16:] == BLUE).all()
    assert (pixels[0, 2:16] == RED).all()
    assert done.info == {"Postprocess upscale by": "2", "Postprocess upscaler": "Nearest"}
    assert info_text(done.info) == "Postprocess upscale by: 2, Postprocess upscaler: Nearest"


@pytest.mark.parametrize("upscaler", ["Lanczos", "None"])
def test_lanczos_and_none_resize_to_the_scaled_size(upscaler):
    done = postprocess(Image.new("RGB", (100, 60), GREEN), ExtrasParams.create(upscaling_resize=1.5, upscaler_1=upscaler))
    assert done.image.size == (150, 90)
    assert done.image.getpixel((75, 45)) == GREEN
    assert done.info["Postprocess upscale by"] == "1.5" and done.info["Postprocess upscaler"] == upscaler


def test_scale_to_with_crop_keeps_the_centre_at_the_exact_size():
    source = stripes([RED, GREEN, BLUE, WHITE])  # 40x20
    done = postprocess(source, ExtrasParams.create(resize_mode=1, upscaling_resize_w=40, upscaling_resize_h=40, upscaler_1="Nearest"))
    # Scaled by 2 to 80x40 to cover 40x40, then the centre kept: columns 20..60, the green and blue stripes.
    assert done.image.size == (40, 40)
    pixels = np.asarray(done.image)
    assert (pixels[:, :20] == GREEN).all() and (pixels[:, 20:] == BLUE).all()
    assert done.info == {"Postprocess upscale to": "40x40", "Postprocess crop to": "40x40", "Postprocess upscaler": "Nearest"}


def test_scale_to_without_crop_stretches():
    source = stripes([RED, GREEN, BLUE, WHITE])  # 40x20
    done = postprocess(source, ExtrasParams.create(resize_mode=1, upscaling_resize_w=40, upscaling_resize_h=40, upscaling_crop=False,
                                                   upscaler_1="Nearest"))
    assert done.image.size == (40, 40)
    pixels = np.asarray(done.image)
    assert (pixels[:, :10] == RED).all() and (pixels[:, 30:] == WHITE).all()  # every stripe is still there, twice as tall
    assert "Postprocess crop to" not in done.info


def test_scale_to_with_crop_on_a_non_integer_factor_is_exact():
    done = postprocess(Image.new("RGB", (300, 200), GREEN), ExtrasParams.create(resize_mode=1, upscaling_resize_w=1001, upscaling_resize_h=999,
                                                                                 upscaler_1="Lanczos"))
    assert done.image.size == (1001, 999)
    assert np.asarray(done.image)[..., 1].min() > 200  # green to every edge: nothing uncovered


def test_upscaler_2_blends_at_its_visibility():
    class Solid(Resampler):
        """A stand-in for a model upscaler that paints everything one colour."""

        def __init__(self, name, colour):
            super().__init__(name, Image.Resampling.NEAREST)
            self.colour = colour

        def resize_to(self, image, size):
            return Image.new("RGB", size, self.colour)

    registry = UpscalerRegistry([*builtin_upscalers(), Solid("White", WHITE)])
    params = ExtrasParams.create(upscalers=registry, upscaling_resize=2, upscaler_1="Nearest", upscaler_2="White", extras_upscaler_2_visibility=0.5)
    done = postprocess(Image.new("RGB", (8, 8), (0, 0, 100)), params, registry)
    assert done.image.size == (16, 16)
    assert done.image.getpixel((5, 5)) in ((127, 127, 177), (128, 128, 178), (127, 127, 178), (128, 128, 177))
    assert done.info["Postprocess upscaler 2"] == "White" and done.info["Postprocess upscaler 2 visibility"] == "0.5"
    # Visibility 0 leaves upscaler 2 out altogether.
    params = ExtrasParams.create(upscalers=registry, upscaling_resize=2, upscaler_1="Nearest", upscaler_2="White")
    done = postprocess(Image.new("RGB", (8, 8), (0, 0, 100)), params, registry)
    assert done.image.getpixel((5, 5)) == (0, 0, 100) and "Postprocess upscaler 2" not in done.info


def test_builtin_upscalers_blend_too():
    params = ExtrasParams.create(upscaling_resize=2, upscaler_1="Nearest", upscaler_2="Lanczos", extras_upscaler_2_visibility=0.5)
    done = postprocess(two_colour(), params)
    assert done.image.size == (32, 32)
    assert done.image.getpixel((31, 31)) == BLUE  # far from any edge both agree


@pytest.mark.parametrize(
    "values, message",
    [
        ({"upscaler_1": "ESRGAN_4x"}, "Upscaler 1 'ESRGAN_4x' not found. Choose one of: None, Lanczos, Nearest."),
        ({"upscaler_2": "nope"}, "Upscaler 2 'nope' not found"),
        ({"upscaling_resize": 0}, "Resize: Input should be greater than 0"),
        ({"upscaling_resize": 9}, "Resize: Input should be less than or equal to 8"),
        ({"resize_mode": 1, "upscaling_resize_w": 9000}, "Width: Input should be less than or equal to 8192"),
        ({"resize_mode": 2}, "Resize mode"),
        ({"extras_upscaler_2_visibility": 1.5}, "Upscaler 2 visibility"),
        ({"gfpgan": 1}, "is not a known parameter"),
    ],
)
def test_bad_values_are_readable(values, message):
    with pytest.raises(ValueError) as caught:
        ExtrasParams.create(**values)
    assert message in str(caught.value)


def test_a_result_too_large_or_too_small_is_refused():
    with pytest.raises(ValueError, match="The result would be 8800x800; each side must be 1 to 8192"):
        postprocess(Image.new("RGB", (1100, 100)), ExtrasParams.create(upscaling_resize=8))
    with pytest.raises(ValueError, match="The result would be 0x0"):
        postprocess(Image.new("RGB", (2, 2)), ExtrasParams.create(upscaling_resize=0.1))


def test_the_registry_describes_what_a1111_lists():
    assert [u["name"] for u in UpscalerRegistry().describe()] == ["None", "Lanczos", "Nearest"]
    assert UpscalerRegistry().describe()[1] == {"name": "Lanczos", "model_name": None, "model_path": None, "model_url": None, "scale": 4}


@pytest.mark.parametrize("upscale_first", [False, True])
def test_faces_are_restored_on_the_upscaled_picture_gfpgan_then_codeformer(upscale_first):
    """A1111 1.x runs its postprocessing scripts Upscale, GFPGAN, CodeFormer in that order and
    ignores the API's older upscale_first field."""
    seen = []

    class Faces:
        def restore(self, image, name, visibility=1.0, weight=0.5, exact=False):
            seen.append((name, image.size))
            return image

    params = ExtrasParams.create(upscaling_resize=2, upscaler_1="Nearest", gfpgan_visibility=1, codeformer_visibility=0.5,
                                 upscale_first=upscale_first)
    done = postprocess(Image.new("RGB", (20, 10), "white"), params, faces=Faces())
    assert seen == [("GFPGAN", (40, 20)), ("CodeFormer", (40, 20))]
    assert list(done.info) == ["Postprocess upscale by", "Postprocess upscaler", "GFPGAN visibility", "CodeFormer visibility", "CodeFormer weight"]
