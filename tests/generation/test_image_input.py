"""Every picture Pillow can open becomes the RGB (or L/RGBA mask) the pipeline uses, with the
colours a person sees; what cannot be opened, or is too large, is a sentence naming the field."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from modules.generation.image_input import read_image, to_mask, to_rgb

RED = (200, 30, 30)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def rgb() -> Image.Image:
    return Image.new("RGB", (64, 48), RED)


def lab(image: Image.Image) -> Image.Image:
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    return ImageCms.applyTransform(image, to_lab)


def close(a, b, tolerance=4) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b))


@pytest.mark.parametrize("name, data, expected", [
    ("CMYK JPEG", lambda: encoded(rgb().convert("CMYK"), "JPEG", quality=95), RED),
    ("LAB TIFF", lambda: encoded(lab(rgb()), "TIFF"), RED),
    ("YCbCr JPEG", lambda: encoded(rgb(), "JPEG", quality=95), RED),
    ("palette PNG", lambda: encoded(rgb().convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), RED),
    ("animated GIF, first frame", lambda: encoded(rgb(), "GIF", save_all=True, append_images=[Image.new("RGB", (64, 48), "blue")]), RED),
    ("animated WebP, first frame", lambda: encoded(rgb(), "WEBP", lossless=True, save_all=True, append_images=[Image.new("RGB", (64, 48), "blue")]),
     RED),
    ("HSV", lambda: rgb().convert("HSV"), RED),
])
def test_colour_images_keep_their_colour(name, data, expected):
    image = to_rgb(read_image(data(), "init image"))
    assert image.mode == "RGB" and image.size == (64, 48)
    assert close(image.getpixel((10, 10)), expected), (name, image.getpixel((10, 10)))


@pytest.mark.parametrize("name, image, grey", [
    ("float TIFF in 0..1", Image.fromarray(np.full((48, 64), 0.5, "float32"), "F"), 128),
    ("float with NaN", Image.fromarray(np.array([[np.nan, 1.0]] * 48 * 32, "float32").reshape(48, 64), "F"), 0),
    ("16-bit PNG", Image.fromarray(np.full((48, 64), 32768, "uint16")), 128),
    ("16-bit big-endian TIFF", Image.fromarray(np.full((48, 64), 65535, ">u2")), 255),
    ("32-bit integer", Image.fromarray(np.full((48, 64), 100, "int32")), 100),
])
def test_deep_grey_images_are_scaled_not_clipped(name, image, grey):
    fmt = "TIFF" if image.mode in ("F", "I;16B", "I") else "PNG"
    opened = read_image(encoded(image, fmt), "init image")
    assert abs(to_rgb(opened).getpixel((0, 0))[0] - grey) <= 1, name
    assert to_mask(opened).mode == "L"


def test_exif_rotation_is_applied_as_a1111_does():
    image = Image.new("RGB", (80, 40), RED)
    image.paste((0, 0, 255), (0, 0, 10, 10))  # a blue corner at the top left
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    opened = to_rgb(read_image(encoded(image, "JPEG", exif=exif, quality=95), "init image"))
    assert opened.size == (40, 80)
    assert close(opened.getpixel((35, 3)), (0, 0, 255), 40)  # the corner is now top right


def swapped_primaries_profile() -> bytes:
    """sRGB's ICC profile with its red and blue primaries exchanged: a valid RGB profile under
    which the pixel values of pure red mean blue."""
    import struct

    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    count = struct.unpack(">I", data[128:132])[0]
    entries = {bytes(data[132 + 12 * i:136 + 12 * i]): 132 + 12 * i for i in range(count)}
    red, blue = entries[b"rXYZ"], entries[b"bXYZ"]
    data[red + 4:red + 12], data[blue + 4:blue + 12] = data[blue + 4:blue + 12], data[red + 4:red + 12]
    return bytes(data)


def test_an_embedded_colour_profile_is_applied():
    plain = Image.new("RGB", (8, 8), (255, 0, 0))
    tagged = to_rgb(read_image(encoded(plain, "PNG", icc_profile=swapped_primaries_profile()), "init image")).getpixel((0, 0))
    untagged = to_rgb(read_image(encoded(plain, "PNG"), "init image")).getpixel((0, 0))
    assert untagged == (255, 0, 0)
    assert tagged[2] > 200 and tagged[0] < 60, tagged  # shown as the profile says: blue


def test_transparency_is_white_in_an_init_image_and_kept_in_a_mask():
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    image.putpixel((1, 1), (10, 20, 30, 255))
    data = encoded(image, "PNG")
    assert to_rgb(read_image(data, "init image")).getpixel((0, 0)) == (255, 255, 255)
    mask = to_mask(read_image(data, "mask"))
    assert mask.mode == "RGBA" and mask.getpixel((0, 0))[3] == 0 and mask.getpixel((1, 1))[3] == 255


def test_palette_with_a_transparent_index_is_flattened_to_white():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    image.putpixel((1, 1), 1)
    opened = to_rgb(read_image(encoded(image, "PNG", transparency=0), "init image"))
    assert opened.getpixel((0, 0)) == (255, 255, 255) and opened.getpixel((1, 1)) == RED


def test_images_over_the_pixel_limit_are_refused_before_decoding():
    big = encoded(Image.new("1", (12000, 10000)), "PNG")  # 120 MP, a few kB
    with pytest.raises(ValueError, match=r"12000x10000 = 120.0 megapixels, over this server's limit of 50 megapixels"):
        read_image(big, "init image", 50_000_000)


def test_a_decompression_bomb_is_refused_with_the_limit_named():
    bomb = encoded(Image.new("1", (20000, 20000)), "PNG")  # 400 MP: Pillow itself refuses it
    with pytest.raises(ValueError, match=r"The mask is too large to open \(this server's limit: 50 megapixels"):
        read_image(bomb, "mask", 50_000_000)


@pytest.mark.parametrize("data", [b"", b"plain text", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, b"GIF89a" + b"\xff" * 30,
                                  encoded(rgb(), "JPEG")[:200]])
def test_what_cannot_be_opened_names_the_field(data):
    with pytest.raises(ValueError, match=r"^The init_images\[0\] is not an image that can be read \("):
        read_image(data, "init_images[0]")
