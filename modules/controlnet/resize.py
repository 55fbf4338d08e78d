"""Fitting a detected map to a generation pass's size, as the A1111 ControlNet extension does.

The three resize modes are the extension's: "Just Resize" stretches, "Crop and Resize" covers
the target and cuts the overflow from the middle (its INNER_FIT), "Resize and Fill" fits the
whole map inside and pads the rest with the median colour of the map's border (OUTER_FIT).
Interpolation follows the map's content so that thin edges and flat colours survive: nearest
for maps of few colours (segmentation), area when shrinking, cubic when growing, and a fresh
black/white threshold for binary maps (canny, scribbles). Inpaint maps are RGBA: the alpha is
the mask (255 = repaint), kept binary, and padding counts as masked, so outpainting works.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from modules.controlnet.units import RESIZE_MODES

JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL = RESIZE_MODES


def resize_mode_name(resize_mode: str | int) -> str:
    """One of RESIZE_MODES from its name (any case) or its index."""
    if isinstance(resize_mode, int) and not isinstance(resize_mode, bool) and 0 <= resize_mode < len(RESIZE_MODES):
        return RESIZE_MODES[resize_mode]
    if isinstance(resize_mode, str):
        for name in RESIZE_MODES:
            if name.lower() == resize_mode.strip().lower():
                return name
    raise ValueError(f"Unknown resize mode {resize_mode!r}: choose one of {', '.join(RESIZE_MODES)}.")


def pixel_perfect_resolution(image_size: tuple[int, int], width: int, height: int, resize_mode: str | int) -> int:
    """The preprocessor resolution that makes the map's short side match the target's pixels.

    `image_size` is the input picture's (width, height), as PIL gives it. "Resize and Fill"
    fits the whole picture, so the smaller scale wins; the other modes cover, the larger wins.
    """
    raw_w, raw_h = image_size
    if raw_w <= 0 or raw_h <= 0:
        raise ValueError("The control image is empty.")
    scale_h = float(height) / float(raw_h)
    scale_w = float(width) / float(raw_w)
    if resize_mode_name(resize_mode) == RESIZE_AND_FILL:
        scale = min(scale_h, scale_w)
    else:
        scale = max(scale_h, scale_w)
    return int(np.round(scale * float(min(raw_h, raw_w))))


def _as_array(image: Image.Image) -> np.ndarray:
    if image.mode == "RGBA":
        return np.asarray(image, dtype=np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _thin_nms(gray: np.ndarray) -> np.ndarray:
    """Keep only the ridge of a blurred one-pixel line: a pixel survives where it is the
    maximum along one of the four directions through it."""
    x = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 0.5)
    kept = np.zeros_like(x)
    kernels = (
        np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=np.uint8),
        np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=np.uint8),
        np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.uint8),
        np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.uint8),
    )
    for kernel in kernels:
        np.putmask(kept, cv2.dilate(x, kernel=kernel) == x, x)
    return kept.clip(0, 255).astype(np.uint8)


def _resize_map(x: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an RGB or RGBA (inpaint) map with the interpolation its content wants."""
    mask = None
    if x.shape[2] == 4:
        x, mask = x[:, :, :3], x[:, :, 3]
    if x.shape[0] != height or x.shape[1] != width:
        new_area, old_area = width * height, x.shape[0] * x.shape[1]
        packed = (x[:, :, 0].astype(np.uint32) << 16) | (x[:, :, 1].astype(np.uint32) << 8) | x[:, :, 2]
        colours = len(np.unique(packed))  # one integer per colour: far quicker than unique rows
        binary = colours == 2 and int(x.min()) < 16 and int(x.max()) > 240
        one_pixel_edge = False
        if binary:
            opened = cv2.dilate(cv2.erode(x, np.ones((3, 3), np.uint8)), np.ones((3, 3), np.uint8))
            one_pixel_edge = np.count_nonzero(opened < x) * 2 > np.count_nonzero(x > 127)
        if 2 < colours < 200:
            interpolation = cv2.INTER_NEAREST
        elif new_area < old_area:
            interpolation = cv2.INTER_AREA
        else:
            interpolation = cv2.INTER_CUBIC
        y = cv2.resize(x, (width, height), interpolation=interpolation)
        if mask is not None:
            mask = cv2.resize(mask, (width, height), interpolation=interpolation)
        if binary:
            gray = np.mean(y.astype(np.float32), axis=2).clip(0, 255).astype(np.uint8)
            if one_pixel_edge:
                gray = _thin_nms(gray)
            _, gray = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            y = np.stack([gray] * 3, axis=2)
    else:
        y = x
    if mask is not None:
        mask = np.where(mask > 127, 255, 0).astype(np.uint8)
        y = np.concatenate([y, mask[:, :, None]], axis=2)
    return np.ascontiguousarray(y)


def fit(image: Image.Image, width: int, height: int, resize_mode: str | int) -> Image.Image:
    """The map at exactly width x height, placed by the extension's resize mode.

    RGB in, RGB out; an RGBA inpaint map (alpha = mask) stays RGBA with a 0/255 alpha.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"Cannot fit a control map to {width}x{height}.")
    mode = resize_mode_name(resize_mode)
    x = _as_array(image)
    if mode == JUST_RESIZE:
        return Image.fromarray(_resize_map(x, width, height))
    old_h, old_w = float(x.shape[0]), float(x.shape[1])
    scale_h, scale_w = height / old_h, width / old_w
    if mode == RESIZE_AND_FILL:
        scale = min(scale_h, scale_w)
        border = np.concatenate([x[0, :, :], x[-1, :, :], x[:, 0, :], x[:, -1, :]], axis=0)
        colour = np.median(border, axis=0).astype(np.uint8)
        if colour.shape[0] == 4:
            colour[3] = 255  # padding is to be painted: outpainting
        canvas = np.tile(colour[None, None], (height, width, 1))
        inner = _resize_map(x, int(np.round(old_w * scale)), int(np.round(old_h * scale)))
        new_h, new_w = inner.shape[:2]
        top, left = max(0, (height - new_h) // 2), max(0, (width - new_w) // 2)
        canvas[top:top + new_h, left:left + new_w] = inner[:height, :width]
        return Image.fromarray(canvas)
    scale = max(scale_h, scale_w)
    outer = _resize_map(x, int(np.round(old_w * scale)), int(np.round(old_h * scale)))
    new_h, new_w = outer.shape[:2]
    top, left = max(0, (new_h - height) // 2), max(0, (new_w - width) // 2)
    return Image.fromarray(np.ascontiguousarray(outer[top:top + height, left:left + width]))


def control_array(detected_map: Image.Image) -> np.ndarray:
    """The ControlNet's condition for a (fitted) map: float32 [H, W, 3] in [0, 1].

    An RGBA inpaint map follows the extension's inpaint protocol: pixels under the mask
    (alpha > 127) become -1 on all three channels, so the ControlNet sees what to repaint.
    """
    x = _as_array(detected_map).astype(np.float32) / 255.0
    if x.shape[2] == 4:
        masked = (x[:, :, 3:4] > 0.5).astype(np.float32)
        return np.ascontiguousarray(x[:, :, :3] * (1.0 - masked) - masked)
    return np.ascontiguousarray(x)


def display_image(detected_map: Image.Image) -> Image.Image:
    """How a map is shown (gallery, `/controlnet/detect`): RGB maps as they are; an inpaint
    map keeps its picture with the masked part half transparent, as the extension shows it."""
    if detected_map.mode != "RGBA":
        return detected_map.convert("RGB")
    x = np.array(detected_map, dtype=np.uint8)
    x[:, :, 3] = 255 - x[:, :, 3] // 2
    return Image.fromarray(x)
