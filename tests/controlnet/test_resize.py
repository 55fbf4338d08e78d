"""Fitting detected maps to a pass's size: the extension's three resize modes and pixel perfect."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.controlnet import resize


def square_picture(width: int, height: int, side: int, colour=(255, 255, 255), background=(100, 100, 100)) -> Image.Image:
    """A white square centred on a grey background (two colours, but not a binary map)."""
    img = Image.new("RGB", (width, height), background)
    left, top = (width - side) // 2, (height - side) // 2
    ImageDraw.Draw(img).rectangle([left, top, left + side - 1, top + side - 1], fill=colour)
    return img


def extent(img: Image.Image, colour) -> tuple[int, int, int, int]:
    """The bounding box (left, top, right, bottom) of the pixels close to `colour`."""
    a = np.asarray(img.convert("RGB")).astype(int)
    near = np.abs(a - np.array(colour)).sum(axis=2) < 60
    ys, xs = np.nonzero(near)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_just_resize_stretches_to_the_target():
    out = resize.fit(square_picture(64, 64, 32), 128, 64, "Just Resize")
    assert out.size == (128, 64) and out.mode == "RGB"
    left, top, right, bottom = extent(out, (255, 255, 255))
    assert (right - left) == pytest.approx(64, abs=2) and (bottom - top) == pytest.approx(32, abs=2)


def test_crop_and_resize_keeps_squares_square_and_cuts_the_long_side():
    # a 128x64 picture with a 48 px square, fitted to 64x64: scaled to cover (x1), 32 px cut off each side
    out = resize.fit(square_picture(128, 64, 48), 64, 64, "Crop and Resize")
    assert out.size == (64, 64)
    left, top, right, bottom = extent(out, (255, 255, 255))
    assert right - left == bottom - top == 48
    assert (left, top) == (8, 8)  # still centred


def test_resize_and_fill_keeps_squares_square_and_pads_with_the_border_colour():
    # a 128x64 picture fitted to 64x64: scaled by 1/2 into a 64x32 band, 16 px of padding above and below
    out = resize.fit(square_picture(128, 64, 48), 64, 64, "Resize and Fill")
    assert out.size == (64, 64)
    left, top, right, bottom = extent(out, (255, 255, 255))
    assert right - left == pytest.approx(bottom - top, abs=1) and right - left == pytest.approx(24, abs=1)
    a = np.asarray(out)
    # the padding (top and bottom rows) is the median border colour: the grey background
    assert (a[:16] == 100).all() and (a[48:] == 100).all()


def test_resize_modes_accept_their_index():
    pic = square_picture(128, 64, 48)
    for index, name in enumerate(resize.RESIZE_MODES):
        assert np.array_equal(np.asarray(resize.fit(pic, 64, 64, index)), np.asarray(resize.fit(pic, 64, 64, name)))
    with pytest.raises(ValueError, match="Just Resize"):
        resize.fit(pic, 64, 64, "Stretch it")


def test_binary_maps_stay_binary_when_enlarged():
    edges = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(edges).rectangle([16, 16, 47, 47], outline="white")
    out = np.asarray(resize.fit(edges, 128, 128, "Just Resize"))
    assert set(np.unique(out)) <= {0, 255}
    assert (out[64, 30:34] == 255).any()  # the left side of the outline survives
    assert (out[64, 60:70] == 0).all()  # the middle stays empty


def test_maps_with_few_colours_are_resized_without_new_colours():
    seg = Image.new("RGB", (32, 32), (10, 20, 30))
    ImageDraw.Draw(seg).rectangle([0, 0, 15, 31], fill=(200, 100, 50))
    ImageDraw.Draw(seg).rectangle([16, 16, 31, 31], fill=(5, 250, 5))
    out = np.asarray(resize.fit(seg, 80, 80, "Just Resize"))
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert colours == {(10, 20, 30), (200, 100, 50), (5, 250, 5)}


def test_inpaint_maps_keep_a_binary_mask_and_padding_counts_as_masked():
    rgba = np.zeros((32, 64, 4), np.uint8)
    rgba[:, :, :3] = 120
    rgba[:, 32:, 3] = 255  # the right half is to be repainted
    out = resize.fit(Image.fromarray(rgba, "RGBA"), 64, 64, "Resize and Fill")
    assert out.mode == "RGBA" and out.size == (64, 64)
    alpha = np.asarray(out)[:, :, 3]
    assert set(np.unique(alpha)) == {0, 255}
    assert (alpha[:16] == 255).all() and (alpha[48:] == 255).all()  # padding: outpaint it
    assert (alpha[20:44, :30] == 0).all() and (alpha[20:44, 34:] == 255).all()


def test_control_array_marks_masked_pixels_minus_one():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :, :3] = 255
    rgba[:4, :, 3] = 255
    cond = resize.control_array(Image.fromarray(rgba, "RGBA"))
    assert cond.shape == (8, 8, 3) and cond.dtype == np.float32
    assert (cond[:4] == -1).all() and (cond[4:] == 1).all()
    plain = resize.control_array(Image.new("RGB", (4, 4), (255, 0, 51)))
    assert np.allclose(plain[0, 0], [1.0, 0.0, 0.2])


def test_display_image_shows_the_masked_part_half_transparent():
    rgba = np.full((4, 4, 4), 200, np.uint8)
    rgba[:, :2, 3] = 255
    rgba[:, 2:, 3] = 0
    shown = np.asarray(resize.display_image(Image.fromarray(rgba, "RGBA")))
    assert (shown[:, :2, 3] == 128).all() and (shown[:, 2:, 3] == 255).all()
    assert resize.display_image(Image.new("RGB", (4, 4))).mode == "RGB"


@pytest.mark.parametrize("mode, expected", [
    ("Just Resize", 1024),      # covers: the larger scale (2x width) times the short side 512
    ("Crop and Resize", 1024),
    ("Resize and Fill", 768),   # fits: the smaller scale (1.5x height) times 512
])
def test_pixel_perfect_resolution(mode, expected):
    # a 512x512 picture for a 1024x768 image
    assert resize.pixel_perfect_resolution((512, 512), 1024, 768, mode) == expected


def test_pixel_perfect_resolution_for_a_wide_picture():
    # 1024x512 into 512x512: covering scales by 1 (height), fitting by 0.5 (width)
    assert resize.pixel_perfect_resolution((1024, 512), 512, 512, "Crop and Resize") == 512
    assert resize.pixel_perfect_resolution((1024, 512), 512, 512, "Resize and Fill") == 256
