"""Pixel-space steps of img2img, inpainting and hires fix: resize modes, masks, crops and the
final composite. Pure PIL and numpy, so each step is testable without a model.

A1111 users know these by name (resize mode, mask blur, masked content "fill", inpaint area
"Only masked"); the behaviour follows theirs, the code is our own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from modules.generation.image_input import read_image, to_mask, to_rgb
from modules.generation.params import RESIZE_MODES

LATENT_RESIZE = RESIZE_MODES.index("Just resize (latent upscale)")

# Resampling of the hires fix's pixel upscalers ("None" is a plain resize, as in A1111).
PIXEL_RESAMPLING = {"None": Image.Resampling.LANCZOS, "Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}


def open_image(data: bytes | str | Image.Image, what: str = "init image", max_pixels: int | None = None) -> Image.Image:
    """Open an uploaded image (bytes, a path or a PIL image) as RGB, with EXIF rotation and
    its colour profile applied; anything that is not an image becomes a readable ValueError."""
    return to_rgb(read_image(data, what, max_pixels))


def open_mask(data: bytes | str | Image.Image, what: str = "mask", max_pixels: int | None = None) -> Image.Image:
    """Like `open_image` but as L or RGBA: a mask's transparency can be what marks it."""
    return to_mask(read_image(data, what, max_pixels))


def flatten(image: Image.Image) -> Image.Image:
    """RGB; transparent parts become white, as A1111 flattens uploads."""
    return to_rgb(image)


def resize_image(image: Image.Image, width: int, height: int, mode: int = 0, resample=Image.Resampling.LANCZOS) -> Image.Image:
    """Fit `image` to width x height with A1111's resize mode:
    0 stretches, 1 scales to cover and crops the centre, 2 scales to fit and fills the bands
    with the image's stretched edges; 3 (latent upscale) is 0 here, the latent half is the runner's."""
    if image.size == (width, height):
        return image.copy()
    if mode in (0, LATENT_RESIZE):
        return image.resize((width, height), resample)
    ratio, src_ratio = width / height, image.width / image.height
    if mode == 1:
        w, h = (width, round(width / src_ratio)) if ratio > src_ratio else (round(height * src_ratio), height)
        scaled = image.resize((max(1, w), max(1, h)), resample)
        left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
        return scaled.crop((left, top, left + width, top + height))
    if mode == 2:
        w, h = (round(height * src_ratio), height) if ratio > src_ratio else (width, round(width / src_ratio))
        scaled = image.resize((max(1, w), max(1, h)), resample)
        out = Image.new(image.mode, (width, height))
        left, top = (width - scaled.width) // 2, (height - scaled.height) // 2
        out.paste(scaled, (left, top))
        # Stretch the outermost row/column of pixels over each empty band.
        if left > 0:
            out.paste(scaled.crop((0, 0, 1, scaled.height)).resize((left, scaled.height)), (0, top))
            right = width - left - scaled.width
            out.paste(scaled.crop((scaled.width - 1, 0, scaled.width, scaled.height)).resize((right, scaled.height)), (left + scaled.width, top))
        if top > 0:
            out.paste(scaled.crop((0, 0, scaled.width, 1)).resize((scaled.width, top)), (left, 0))
            bottom = height - top - scaled.height
            out.paste(scaled.crop((0, scaled.height - 1, scaled.width, scaled.height)).resize((scaled.width, bottom)), (left, top + scaled.height))
        return out
    raise ValueError(f"Resize mode must be 0-3 ({', '.join(RESIZE_MODES)}), got {mode}.")


def mask_from_image(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A user's mask as 'L' at the init image's size: white (or opaque, for a transparent
    layer) marks what to repaint. A mask of another size is stretched to fit, as A1111 does."""
    if mask.mode in ("RGBA", "LA"):
        alpha = mask.getchannel("A")
        luma = mask.convert("L")
        # A drawn layer is transparent where untouched; a plain upload is opaque everywhere.
        mask = alpha if alpha.getextrema()[0] < 255 else luma
    else:
        mask = mask.convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.LANCZOS)
    return mask.point(lambda v: 255 if v >= 128 else 0)


def is_empty(mask: Image.Image) -> bool:
    return mask.getextrema()[1] == 0


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask.copy()


@dataclass(frozen=True)
class Region:
    """A crop box (left, top, right, bottom), right and bottom exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.right, self.bottom)

    @property
    def size(self) -> tuple[int, int]:
        return (self.right - self.left, self.bottom - self.top)


def masked_region(mask: Image.Image, padding: int, width: int, height: int) -> Region:
    """The box "Only masked" works on: the mask's bounding box grown by `padding`, then
    grown again to the aspect ratio of the width x height it will be generated at, kept inside
    the image."""
    bbox = mask.getbbox()
    if bbox is None:
        raise ValueError("The mask is empty: paint over the part of the image to change.")
    iw, ih = mask.size
    left, top = max(bbox[0] - padding, 0), max(bbox[1] - padding, 0)
    right, bottom = min(bbox[2] + padding, iw), min(bbox[3] + padding, ih)
    w, h = right - left, bottom - top
    target = width / height
    if w / h < target:  # too narrow: widen
        want = min(round(h * target), iw)
        left, right = _grow(left, right, want, iw)
    else:
        want = min(round(w / target), ih)
        top, bottom = _grow(top, bottom, want, ih)
    return Region(left, top, right, bottom)


def _grow(start: int, end: int, want: int, limit: int) -> tuple[int, int]:
    """Widen [start, end) to `want` around its centre, shifted to stay within [0, limit)."""
    extra = want - (end - start)
    start -= extra // 2
    end += extra - extra // 2
    if start < 0:
        end, start = end - start, 0
    if end > limit:
        start, end = max(start - (end - limit), 0), limit
    return start, end


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Masked content "fill": paint the masked area with colours bled in from around it, so
    the model starts from the surroundings rather than from what was there."""
    rgb = np.asarray(image, dtype=np.float32)
    keep = (np.asarray(mask, dtype=np.float32) < 128).astype(np.float32)
    if keep.sum() == 0:
        return Image.new("RGB", image.size, tuple(int(c) for c in rgb.reshape(-1, 3).mean(0)))
    out = rgb * keep[..., None]
    filled = keep.copy()
    # Normalised blurs from wide to narrow: each pass fills what is still empty with the
    # average of the known pixels within its radius.
    for radius in (64, 32, 16, 8, 4, 2, 1):
        num = _blur(rgb * keep[..., None], radius)
        den = _blur(keep, radius)[..., None]
        estimate = np.divide(num, den, out=np.zeros_like(num), where=den > 1e-6)
        fresh = (den[..., 0] > 1e-6) & (filled == 0)
        out[fresh] = estimate[fresh]
        filled[fresh] = 1
        if filled.all():
            break
    out[filled == 0] = rgb[keep > 0].mean(0)
    result = np.where(keep[..., None] > 0, rgb, out)
    return Image.fromarray(np.clip(result + 0.5, 0, 255).astype(np.uint8))


def _blur(array: np.ndarray, radius: int) -> np.ndarray:
    """Box blur (sum over a (2r+1)-square window, zero outside) of an HxW or HxWxC array;
    `fill_masked` divides two of these, so the scale cancels."""
    out = array
    for axis in (0, 1):
        padded = np.concatenate(
            [np.zeros_like(out.take(range(1), axis=axis)).repeat(radius + 1, axis=axis), out, np.zeros_like(out.take(range(1), axis=axis)).repeat(radius, axis=axis)],
            axis=axis,
        )
        summed = np.cumsum(padded, axis=axis)
        n = out.shape[axis]
        out = summed.take(range(2 * radius + 1, 2 * radius + 1 + n), axis=axis) - summed.take(range(0, n), axis=axis)
    return out


def composite(original: Image.Image, generated: Image.Image, blurred_mask: Image.Image, region: Region | None = None) -> Image.Image:
    """Put the generated pixels back onto the original through the blurred mask: unmasked
    pixels come back exactly, the blur band blends. With a region ("Only masked"), the
    generated crop is first scaled back to the region and pasted in place."""
    if region is not None:
        patch = resize_image(generated, *region.size, mode=1)
        base = original.copy()
        base.paste(patch, region.box[:2])
        generated = base
    return Image.composite(generated.convert("RGB"), original.convert("RGB"), blurred_mask)
