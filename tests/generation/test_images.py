"""img2img's pixel steps, checked on pixels: resize modes, masks, crops, fill and compositing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.generation import images as imgops

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 60), (30, 60, 220)


def banded(width: int = 128, height: int = 64) -> Image.Image:
    """Green, with 16-px red bands at the left and right edges and a blue top row."""
    image = Image.new("RGB", (width, height), GREEN)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 15, height - 1), fill=RED)
    draw.rectangle((width - 16, 0, width - 1, height - 1), fill=RED)
    draw.rectangle((0, 0, width - 1, 0), fill=BLUE)
    return image


def colours(image: Image.Image) -> set[tuple[int, int, int]]:
    return {tuple(c) for c in np.asarray(image.convert("RGB")).reshape(-1, 3)}


def test_just_resize_stretches():
    out = imgops.resize_image(banded(), 64, 64, 0)
    assert out.size == (64, 64)
    assert np.asarray(out)[32, 2].tolist() == list(RED)  # the red band is squeezed, not cut


def test_crop_and_resize_cuts_the_edges_off():
    out = imgops.resize_image(banded(), 64, 64, 1)
    assert out.size == (64, 64)
    middle = np.asarray(out)[1:, :]
    assert not (np.abs(middle.astype(int) - RED).sum(-1) < 60).any()  # both red bands were outside the crop


def test_resize_and_fill_keeps_everything_and_stretches_the_edges():
    out = np.asarray(imgops.resize_image(banded(), 64, 64, 2)).astype(int)
    # 128x64 fits as 64x32 in the middle (rows 16..47); the bands repeat its first and last rows.
    assert np.abs(out[19:48, 0] - RED).sum(-1).max() < 60
    assert (out[0:16] == out[16]).all() and (out[48:] == out[47]).all()
    assert out[16, 32, 2] > out[30, 32, 2] + 30  # the blue top row made it into the band
    assert np.abs(out[50:, 32] - GREEN).sum(-1).max() < 60


def test_bad_resize_mode_is_refused():
    with pytest.raises(ValueError, match="Resize mode"):
        imgops.resize_image(banded(), 64, 64, 7)


def test_masks_from_a_painted_layer_and_from_an_upload_of_another_size():
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(layer).ellipse((10, 10, 30, 30), fill=(255, 255, 255, 255))
    mask = imgops.mask_from_image(layer, (64, 64))
    assert mask.getpixel((20, 20)) == 255 and mask.getpixel((50, 50)) == 0
    upload = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(upload).rectangle((16, 0, 31, 31), fill=255)  # right half
    mask = imgops.mask_from_image(upload.convert("RGB"), (64, 64))
    assert mask.size == (64, 64)
    assert mask.getpixel((60, 10)) == 255 and mask.getpixel((5, 10)) == 0
    assert imgops.is_empty(imgops.mask_from_image(Image.new("RGB", (8, 8)), (8, 8)))


def test_only_masked_region_pads_and_matches_the_aspect_ratio():
    mask = Image.new("L", (200, 100), 0)
    ImageDraw.Draw(mask).rectangle((90, 40, 109, 59), fill=255)  # 20x20 box
    region = imgops.masked_region(mask, padding=8, width=64, height=32)
    left, top, right, bottom = region.box
    assert left <= 82 and top <= 32 and right >= 118 and bottom >= 68
    assert abs(region.size[0] / region.size[1] - 2.0) < 0.05
    assert 0 <= left and right <= 200 and 0 <= top and bottom <= 100
    # Near an edge the box shifts inside the picture instead of leaving it.
    corner = Image.new("L", (200, 100), 0)
    ImageDraw.Draw(corner).rectangle((0, 0, 9, 9), fill=255)
    region = imgops.masked_region(corner, padding=4, width=64, height=64)
    assert region.box[0] == 0 and region.box[1] == 0 and region.size[0] == region.size[1]
    with pytest.raises(ValueError, match="mask is empty"):
        imgops.masked_region(Image.new("L", (10, 10)), 4, 64, 64)


def test_fill_paints_the_hole_with_the_surrounding_colour():
    image = Image.new("RGB", (64, 64), RED)
    ImageDraw.Draw(image).rectangle((20, 20, 43, 43), fill=BLUE)
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((18, 18, 45, 45), fill=255)
    filled = np.asarray(imgops.fill_masked(image, mask)).astype(int)
    assert np.abs(filled[32, 32] - RED).sum() < 30  # the blue square is gone
    assert (filled[0:10] == RED).all()  # outside the mask nothing moved


def test_composite_keeps_unmasked_pixels_exactly():
    original = banded(64, 64)
    generated = Image.new("RGB", (64, 64), (0, 0, 0))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((24, 24, 39, 39), fill=255)
    blurred = imgops.blur_mask(mask, 4)
    out = np.asarray(imgops.composite(original, generated, blurred))
    untouched = np.asarray(blurred) == 0
    assert (out[untouched] == np.asarray(original)[untouched]).all()
    assert out[31, 31].max() < 40  # the middle of the mask is (almost wholly) the generated pixels
    # With a region, the crop is scaled back into place and the rest stays.
    region = imgops.Region(16, 16, 48, 48)
    out = np.asarray(imgops.composite(original, Image.new("RGB", (64, 64), (0, 0, 0)), blurred, region))
    assert (out[untouched] == np.asarray(original)[untouched]).all() and out[31, 31].max() < 40


def test_uploads_that_are_not_images_get_a_clear_error():
    with pytest.raises(ValueError, match="init image is not an image that can be read"):
        imgops.open_image(b"this is a text file")
    with pytest.raises(ValueError, match="mask is not an image that can be read"):
        imgops.open_mask(b"\x89PNG\r\n\x1a\nbroken")
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    buffer = io.BytesIO()
    rgba.save(buffer, "PNG")
    assert imgops.open_image(buffer.getvalue()).getpixel((0, 0)) == (255, 255, 255)  # transparent becomes white
