"""Any picture a user sends, made into the modes the pipeline works in.

Uploads come from phones, print workflows and scientific tools as much as from other web UIs:
CMYK JPEGs, LAB and float TIFFs, 16-bit PNGs, palettes with transparency, animations, rotated
photos. Each is turned into RGB (init images) or L/RGBA (masks) with its colour profile applied,
and what cannot be read, or is larger than the pixel limit, becomes a ValueError that names the
field, so the API answers 400 and the page shows a message instead of a traceback.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_DIRECT = {"RGB", "RGBA", "L", "LA", "1", "P", "PA", "CMYK", "YCbCr", "RGBX", "RGBa", "La", "HSV", "LAB"}  # 8 bits per channel


def read_image(data: bytes | str | Path | Image.Image, what: str, max_pixels: int | None = None) -> Image.Image:
    """Open an upload (bytes, a path or a PIL image): its first frame, EXIF rotation applied
    (as A1111 does), after checking its declared size against `max_pixels` before any pixel is
    decoded, so a decompression bomb costs nothing."""
    if isinstance(data, Image.Image):
        image = data
        _check_size(image, what, max_pixels)
    else:
        source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else str(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below decides
                image = Image.open(source)
                _check_size(image, what, max_pixels)
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)
                image.load()
        except Image.DecompressionBombError as exc:
            limit = f" (this server's limit: {max_pixels / 1e6:g} megapixels, setting 'Largest image accepted')" if max_pixels else ""
            raise ValueError(f"The {what} is too large to open{limit}: {exc}") from None
        except ValueError as exc:
            if str(exc).startswith(f"The {what} "):
                raise
            raise ValueError(f"The {what} is not an image that can be read ({_short(exc)}).") from None
        except Exception as exc:  # Pillow's decoders raise many kinds on malformed files  # noqa: BLE001
            reason = "not a picture format this server reads" if isinstance(exc, UnidentifiedImageError) else _short(exc)
            raise ValueError(f"The {what} is not an image that can be read ({reason}).") from None
    try:
        rotated = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not cost the picture  # noqa: BLE001
        rotated = None
    return rotated or image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB in sRGB: the colour profile applied where there is one, 16-bit and float values
    scaled to 8 bits, transparent parts white (as A1111 flattens uploads)."""
    image = _eight_bit(image)
    if "icc_profile" in image.info:
        converted = _to_srgb(image)
        if converted is not None:
            image = converted
    if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        back = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(back, rgba).convert("RGB")
    if image.mode == "LAB":
        return _lab_to_rgb(image)
    return image.convert("RGB")


def to_mask(image: Image.Image) -> Image.Image:
    """A mask as L, or RGBA where transparency can be what marks it (a drawn layer)."""
    image = _eight_bit(image)
    if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA")
    if image.mode == "L":
        return image
    return to_rgb(image).convert("L")


def _check_size(image: Image.Image, what: str, max_pixels: int | None) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(f"The {what} has no pixels ({width}x{height}).")
    if max_pixels and width * height > max_pixels:
        raise ValueError(f"The {what} is {width}x{height} = {width * height / 1e6:.1f} megapixels, over this server's limit of "
                         f"{max_pixels / 1e6:g} megapixels (setting 'Largest image accepted'): scale it down first.")


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float single-channel images as 8-bit L, their range scaled
    rather than clipped (Pillow's own conversion would clip a 16-bit PNG to white)."""
    if image.mode in _DIRECT:
        return image
    values = np.asarray(image).astype(np.float64)
    if values.ndim != 2:
        return image.convert("RGB")
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    top = values.max(initial=0.0)
    if image.mode == "F":
        scale = 255.0 if top <= 1.0 else (1.0 if top <= 255 else 255.0 / top)
    elif image.mode.startswith("I;16") or top > 255:
        scale = 255.0 / 65535.0 if top <= 65535 else 255.0 / top
    else:
        scale = 1.0
    out = Image.fromarray(np.clip(values * scale + 0.5, 0, 255).astype(np.uint8), "L")
    out.info = {k: v for k, v in image.info.items() if k != "icc_profile"}
    return out


def _to_srgb(image: Image.Image) -> Image.Image | None:
    """Apply an embedded ICC profile; None when the profile cannot be used (the plain
    conversion then stands in, as in browsers)."""
    out_mode = "RGBA" if image.mode in ALPHA_MODES else "RGB"
    source = image.convert("RGBA") if image.mode in ("LA", "PA", "La", "RGBa") else image
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        return ImageCms.profileToProfile(source, profile, ImageCms.createProfile("sRGB"), outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _lab_to_rgb(image: Image.Image) -> Image.Image:
    """CIELAB (Pillow's LAB mode, as in LAB TIFFs) to sRGB through little-cms."""
    transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
    return ImageCms.applyTransform(image, transform)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
