"""PNG files written with the fast compression level keep the picture and its infotext, and the
API answers a saved picture with its file's bytes only when they are what it would encode."""

from __future__ import annotations

import base64
import io
from datetime import datetime

import numpy as np
import pytest
from PIL import Image

from modules.generation.params import GenerationParams
from modules.jobs.generation_task import GenerationResult
from modules.outputs.saving import OutputWriter, SaveSettings, encode_image, saved_png

TEXT = "a cat, ünïcode ✓\nNegative prompt: dog\nSteps: 20, Sampler: Euler, Seed: 5, Size: 64x64"


def picture(size: int = 64, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def writer(folder, embed: bool = True) -> OutputWriter:
    return OutputWriter(SaveSettings(folder, save_to_dirs=False, embed_infotext=embed), clock=lambda: datetime(2026, 12, 6))


def test_saved_png_has_the_same_pixels_and_the_infotext(tmp_path):
    image = picture()
    image.info["extra"] = "kept"
    path = writer(tmp_path).save_image(image, seed=5, infotext=TEXT)
    with Image.open(path) as saved:
        assert saved.format == "PNG"
        assert saved.info["parameters"] == TEXT and saved.info["extra"] == "kept"
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(image))


def test_saved_png_bytes_are_reused_only_when_they_match(tmp_path):
    image = picture()
    path = writer(tmp_path).save_image(image, seed=5, infotext=TEXT)
    assert saved_png(path, image, TEXT) == path.read_bytes()
    assert saved_png(path, image, TEXT + " more") is None  # another infotext
    assert saved_png(path, picture(128), TEXT) is None  # another size
    tagged = image.copy()
    tagged.info["extra"] = "x"
    assert saved_png(path, tagged, TEXT) is None  # a text chunk the file lacks
    bare = writer(tmp_path / "bare", embed=False).save_image(image, seed=5, infotext=TEXT)
    assert saved_png(bare, image, TEXT) is None  # enable_pnginfo off: the file has no infotext
    assert saved_png(tmp_path / "gone.png", image, TEXT) is None
    jpeg = tmp_path / "x.jpg"
    image.save(jpeg)
    assert saved_png(jpeg, image, TEXT) is None
    assert saved_png(None, image, TEXT) is None
    edited = image.copy()
    edited.putpixel((3, 3), (1, 2, 3))
    assert saved_png(path, edited, TEXT) is None  # same size and text, another picture: not the file


@pytest.mark.parametrize("embed", [True, False])
def test_api_pictures_of_saved_images_carry_pixels_and_infotext(tmp_path, embed):
    from modules.api.routes import _pictures_base64

    images = [picture(seed=1), picture(seed=2)]
    out = writer(tmp_path, embed)
    paths = [out.save_image(im, seed=i, infotext=f"{TEXT} #{i}") for i, im in enumerate(images)]
    result = GenerationResult(GenerationParams(prompt="a cat"), seeds=[0, 1], images=images, infotexts=[f"{TEXT} #{i}" for i in range(2)], paths=paths)
    answers = _pictures_base64(result, "png", 80)
    for i, (answer, image) in enumerate(zip(answers, images)):
        data = base64.b64decode(answer)
        assert (data == paths[i].read_bytes()) is embed  # the file itself when it carries the infotext
        with Image.open(io.BytesIO(data)) as sent:
            assert sent.info["parameters"] == f"{TEXT} #{i}"
            assert np.array_equal(np.asarray(sent.convert("RGB")), np.asarray(image))


def test_encode_image_png_round_trips_large_pictures():
    image = picture(256, seed=3)
    buffer = io.BytesIO()
    encode_image(image, buffer, "png", TEXT)
    with Image.open(io.BytesIO(buffer.getvalue())) as back:
        assert back.info["parameters"] == TEXT
        assert np.array_equal(np.asarray(back), np.asarray(image))
