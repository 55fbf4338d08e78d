"""What each img2img mode hands the core, from the values gradio's widgets give the handler."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from modules.ui.img2img import _scaled, init_from_widgets


def editor_value(strokes: list[tuple[int, int, int, int]]) -> dict:
    """An ImageEditor value as gradio passes it with type="pil": background, layers, composite."""
    background = Image.new("RGBA", (64, 48), (0, 0, 255, 255))
    layer = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    for box in strokes:
        ImageDraw.Draw(layer).rectangle(box, fill=(255, 0, 0, 255))
    return {"background": background, "layers": [layer], "composite": Image.alpha_composite(background, layer)}


def test_sketch_uses_the_drawing_as_the_init_image():
    image, mask = init_from_widgets(1, None, editor_value([(10, 10, 20, 20)]), None, None, None)
    assert mask is None
    assert image.getpixel((15, 15))[:3] == (255, 0, 0) and image.getpixel((40, 40))[:3] == (0, 0, 255)


def test_inpaint_turns_the_painted_strokes_into_the_mask():
    image, mask = init_from_widgets(2, None, None, editor_value([(0, 0, 9, 9), (50, 30, 60, 40)]), None, None)
    assert image.getpixel((5, 5))[:3] == (0, 0, 255)  # the picture without the strokes
    assert mask.size == (64, 48)
    assert mask.getpixel((5, 5)) == 255 and mask.getpixel((55, 35)) == 255 and mask.getpixel((30, 20)) == 0


@pytest.mark.parametrize(
    "mode, args, message",
    [
        (0, (None, None, None, None, None), "Upload an image to the img2img tab"),
        (1, (None, {"background": None, "layers": [], "composite": None}, None, None, None), "Sketch tab"),
        (2, (None, None, {"background": None, "layers": [], "composite": None}, None, None), "Inpaint tab"),
        (3, (None, None, None, Image.new("RGB", (8, 8)), None), "both an image and a mask"),
    ],
)
def test_a_missing_image_is_named(mode, args, message):
    with pytest.raises(ValueError, match=message):
        init_from_widgets(mode, *args)


def test_resize_by_scales_to_multiples_of_8_within_limits():
    assert _scaled((100, 60), 2.0) == (200, 120)
    assert _scaled((100, 60), 0.05) == (64, 64)
    assert _scaled((1500, 1000), 4.0) == (2048, 2048)
