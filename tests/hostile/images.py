"""Pictures in every mode and format Pillow reads, and files it cannot or should not read.

Each maker takes `kind` ("picture": colour shapes with some transparency, or "mask": a white
square on black whose transparency marks the same square) and returns the file's bytes. They
are built with Pillow where it writes the format and by hand where it does not (16-bit colour
PNG, bombs), at 64 px so a case costs a few milliseconds.
"""

from __future__ import annotations

import base64
import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageCms, ImageDraw, features
from PIL.PngImagePlugin import PngInfo

SIZE = (64, 64)


def base(kind: str = "picture", size: tuple[int, int] = SIZE) -> Image.Image:
    w, h = size
    if kind == "mask":
        image = Image.new("RGBA", size, (0, 0, 0, 0))
        ImageDraw.Draw(image).rectangle((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(255, 255, 255, 255))
        return image
    image = Image.new("RGBA", size, (30, 60, 200, 255))
    draw = ImageDraw.Draw(image)
    draw.ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(220, 40, 40, 255))
    draw.rectangle((0, 0, w // 3, h // 3), fill=(250, 250, 20, 96))  # some transparency
    return image


def save(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def rgb(kind: str) -> Image.Image:
    return base(kind).convert("RGB")


def grey(kind: str) -> Image.Image:
    return base(kind).convert("L")


def rgba(kind: str) -> Image.Image:
    return base(kind)


# --------------------------------------------------------------------------- PNG by hand


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: list[bytes] | None = None,
            idat: bytes | None = None, extra: list[tuple[bytes, bytes]] = ()) -> bytes:
    """A PNG from its scanlines (filter 0 is added), or with `idat` given as is."""
    if idat is None:
        idat = zlib.compress(b"".join(b"\x00" + row for row in rows), 9)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + b"".join(_chunk(k, d) for k, d in extra)
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def png16(kind: str, channels: str) -> bytes:
    """16 bits per channel: grey+alpha (4), RGB (2) or RGBA (6), which Pillow reads but does not write."""
    picture = np.asarray(base(kind).convert(channels)).astype(">u2") * 257
    colour_type = {"LA": 4, "RGB": 2, "RGBA": 6}[channels]
    return raw_png(SIZE[0], SIZE[1], 16, colour_type, [row.tobytes() for row in picture])


def png_low_bit_grey(kind: str, bits: int = 2) -> bytes:
    levels = (np.asarray(grey(kind)) >> (8 - bits)).astype(np.uint8)
    per_byte = 8 // bits
    rows = []
    for row in levels:
        packed = bytearray()
        for i in range(0, len(row), per_byte):
            value = 0
            for v in row[i:i + per_byte]:
                value = (value << bits) | int(v)
            packed.append(value)
        rows.append(bytes(packed))
    return raw_png(SIZE[0], SIZE[1], bits, 0, rows)


def png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A 100-byte PNG that declares width x height (grey): its pixels would take gigabytes."""
    return raw_png(width, height, 8, 0, idat=zlib.compress(b"\x00" * 1024))


@functools.lru_cache(maxsize=None)
def png_big_grey(side: int = 10_240) -> bytes:
    """A real side x side grey PNG (100 MP at 10240: over the server's pixel limit, under
    Pillow's own bomb guard), compressed to about 100 kB."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    parts = [compressor.compress(row) for _ in range(side)]
    parts.append(compressor.flush())
    return raw_png(side, side, 8, 0, idat=b"".join(parts))


def gif_bomb() -> bytes:
    """A GIF whose screen and frame declare 65535 x 65535."""
    lzw = bytes([2, 0x4C, 0x01])  # a clear code and one pixel: enough for a header
    return (b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0) + b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0)
            + b"\x08" + bytes([len(lzw)]) + lzw + b"\x00;")


def jpeg_bomb() -> bytes:
    """A small JPEG whose frame header is patched to say 65000 x 65000."""
    data = bytearray(save(rgb("picture"), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


# --------------------------------------------------------------------------- Pillow-written variants


def _palette(kind: str, transparency: bool) -> bytes:
    image = base(kind)
    p = image.convert("RGB").quantize(16)
    if not transparency:
        return save(p, "PNG")
    # index 0 becomes the transparent colour wherever the source is transparent
    alpha = np.asarray(image.getchannel("A"))
    indices = np.asarray(p).copy()
    indices = np.where(alpha < 128, 15, np.minimum(indices, 14)).astype(np.uint8)
    out = Image.frombytes("P", image.size, indices.tobytes())
    out.putpalette(p.getpalette())
    return save(out, "PNG", transparency=15)


def _exif_rotated(kind: str) -> bytes:
    image = base(kind, (64, 48)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    return save(image, "JPEG", exif=exif.tobytes())


def _broken_exif(kind: str) -> bytes:
    return save(rgb(kind), "JPEG", exif=b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xf0garbage")


def _animated(kind: str, fmt: str) -> bytes:
    frames = [base(kind).convert("RGBA"), base("mask" if kind == "picture" else "picture").convert("RGBA"), base(kind).convert("RGBA")]
    if fmt == "GIF":
        frames = [f.convert("RGB").quantize(32) for f in frames]
    return save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _lab_tiff(kind: str) -> bytes:
    transform = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    return save(ImageCms.applyTransform(rgb(kind), transform), "TIFF")


def _float_tiff(kind: str) -> bytes:
    values = np.asarray(grey(kind)).astype(np.float32) / 255.0  # 0..1, as scientific tools write
    return save(Image.fromarray(values), "TIFF")


def _int16(kind: str, fmt: str) -> bytes:
    values = np.asarray(grey(kind)).astype(np.uint16) * 257
    return save(Image.fromarray(values), fmt)


def _int32_tiff(kind: str) -> bytes:
    values = np.asarray(grey(kind)).astype(np.int32) * 1000
    return save(Image.fromarray(values), "TIFF")


def _icc_png(kind: str, broken: bool = False) -> bytes:
    profile = b"\x00garbage profile" * 8 if broken else ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return save(rgb(kind), "PNG", icc_profile=profile)


def _multipage_tiff(kind: str) -> bytes:
    return save(rgb(kind), "TIFF", save_all=True, append_images=[grey(kind)])


def _huge_text_png(kind: str) -> bytes:
    """A PNG whose `parameters` text ends in a 500 kB line with no ':' (quadratic for a naive parser)."""
    info = PngInfo()
    info.add_text("parameters", "a prompt\n" + "word " * 100_000)
    return save(rgb(kind), "PNG", pnginfo=info)


def _text_bomb_png(kind: str) -> bytes:
    """A compressed text chunk that inflates to 50 MB (Pillow refuses it)."""
    info = PngInfo()
    info.add_text("parameters", "a" * 50_000_000, zip=True)
    return save(rgb(kind), "PNG", pnginfo=info)


def _bad_crc_png(kind: str) -> bytes:
    data = bytearray(save(rgb(kind), "PNG"))
    data[29] ^= 0xFF  # IHDR's CRC
    return bytes(data)


def _wide(kind: str) -> bytes:
    return save(base(kind, (2048, 8)).convert("RGB"), "PNG")


def _one_pixel(kind: str) -> bytes:
    return save(base(kind, (1, 1)).convert("RGB"), "PNG")


# name -> maker(kind) -> bytes, for files Pillow opens: img2img and extras must take every one.
READABLE = {
    "png-rgb": lambda k: save(rgb(k), "PNG"),
    "png-rgba": lambda k: save(rgba(k), "PNG"),
    "png-1bit": lambda k: save(grey(k).convert("1"), "PNG"),
    "png-2bit-grey": png_low_bit_grey,
    "png-L": lambda k: save(grey(k), "PNG"),
    "png-LA": lambda k: save(base(k).convert("LA"), "PNG"),
    "png-palette": lambda k: _palette(k, False),
    "png-palette-transparency": lambda k: _palette(k, True),
    "png-16bit-grey": lambda k: _int16(k, "PNG"),
    "png-16bit-grey-alpha": lambda k: png16(k, "LA"),
    "png-16bit-rgb": lambda k: png16(k, "RGB"),
    "png-16bit-rgba": lambda k: png16(k, "RGBA"),
    "png-icc-srgb": _icc_png,
    "png-icc-broken": lambda k: _icc_png(k, broken=True),
    "png-1x1": _one_pixel,
    "png-2048x8": _wide,
    "jpeg-rgb": lambda k: save(rgb(k), "JPEG"),
    "jpeg-grey": lambda k: save(grey(k), "JPEG"),
    "jpeg-cmyk": lambda k: save(rgb(k).convert("CMYK"), "JPEG"),
    "jpeg-progressive": lambda k: save(rgb(k), "JPEG", progressive=True),
    "jpeg-exif-rotated": _exif_rotated,
    "jpeg-exif-broken": _broken_exif,
    "gif-animated": lambda k: _animated(k, "GIF"),
    "gif-transparent": lambda k: save(rgb(k).quantize(16), "GIF", transparency=0),
    "webp-lossy": lambda k: save(rgb(k), "WEBP"),
    "webp-lossless-rgba": lambda k: save(rgba(k), "WEBP", lossless=True),
    "webp-animated": lambda k: _animated(k, "WEBP"),
    "tiff-lab": _lab_tiff,
    "tiff-float-F": _float_tiff,
    "tiff-16bit": lambda k: _int16(k, "TIFF"),
    "tiff-32bit-I": _int32_tiff,
    "tiff-cmyk": lambda k: save(rgb(k).convert("CMYK"), "TIFF"),
    "tiff-1bit-g4": lambda k: save(grey(k).convert("1"), "TIFF", compression="group4"),
    "tiff-multipage": _multipage_tiff,
    "bmp-1bit": lambda k: save(grey(k).convert("1"), "BMP"),
    "bmp-rgb": lambda k: save(rgb(k), "BMP"),
    "ico": lambda k: save(rgba(k), "ICO"),
    "tga-rgba": lambda k: save(rgba(k), "TGA"),
    "ppm": lambda k: save(rgb(k), "PPM"),
    "pcx": lambda k: save(rgb(k), "PCX"),
    "sgi": lambda k: save(rgb(k), "SGI"),
    "dds": lambda k: save(rgba(k), "DDS"),
    "qoi": lambda k: save(rgba(k), "QOI"),
    "xbm-1bit": lambda k: save(grey(k).convert("1"), "XBM"),
}
if features.check("jpg_2000"):
    READABLE["jpeg2000"] = lambda k: save(rgb(k), "JPEG2000")
if features.check("avif"):
    READABLE["avif"] = lambda k: save(rgb(k), "AVIF")

# name -> (maker, what the message must say besides the field): files that must be refused with 400.
UNREADABLE = {
    "plain-text": (lambda k: b"hello, this is not a picture", r"readable|image"),
    "empty-bytes": (lambda k: b"", r"empty|readable|image"),
    "truncated-png": (lambda k: save(rgb(k), "PNG")[:120], r"readable|image|truncated"),
    "png-bad-crc": (_bad_crc_png, r"readable|image"),
    "svg": (lambda k: b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>', r"readable|image|format"),
    "pdf": (lambda k: b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", r"readable|image|format"),
    "png-text-bomb": (_text_bomb_png, r"readable|image|large"),
}

# name -> maker: pictures too large to accept: 400 that mentions the limit.
TOO_LARGE = {
    "bomb-png-40000x40000": lambda k: png_bomb(),
    "bomb-gif-65535x65535": lambda k: gif_bomb(),
    "bomb-jpeg-65000x65000": lambda k: jpeg_bomb(),
    "real-png-10240x10240": lambda k: png_big_grey(),
}

# Only for PNG Info: parameters that a naive parser would choke on.
PNG_INFO_ONLY = {
    "png-500kB-parameters": _huge_text_png,
}


@functools.lru_cache(maxsize=None)
def file_bytes(name: str, kind: str = "picture") -> bytes:
    for table in (READABLE, PNG_INFO_ONLY, TOO_LARGE):
        if name in table:
            return table[name](kind)
    return UNREADABLE[name][0](kind)


def b64_file(name: str, kind: str = "picture") -> str:
    return base64.b64encode(file_bytes(name, kind)).decode("ascii")


def png_b64(kind: str = "picture", size: tuple[int, int] = SIZE) -> str:
    return base64.b64encode(save(base(kind, size).convert("RGB"), "PNG")).decode("ascii")
