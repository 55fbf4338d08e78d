"""What A1111's two outpainting scripts share (scripts/outpainting_mk_2.py and
scripts/poor_mans_outpainting.py): the direction argument, the keep-rectangle mask, the child
inpaint job's forced settings, and Outpainting mk2's per-side geometry and noised canvas.

Either script grows the picture to a multiple of 64 (see `outpaint_pixels.expansion`). Each
inpaint is a child img2img job, exactly the job a user would run with that picture and mask;
its result is composited onto its own init through the blurred mask, so pixels outside the
mask come back unchanged.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from modules.extensions.api import Img2ImgParams

from .outpaint_pixels import DIRECTIONS, noised_picture

if TYPE_CHECKING:  # Pillow loads when a picture is made, not when the registry starts
    from PIL import Image

MAX_BLUR = int(Img2ImgParams.field_meta("mask_blur")["maximum"])


def checked_directions(title: str, position: int, values: list[str]) -> list[str]:
    """The chosen sides, in lower case; ValueError naming argument `position` when one is unknown or none is chosen."""
    chosen = [str(v).strip().lower() for v in values]
    unknown = [v for v in chosen if v not in DIRECTIONS]
    if unknown:
        raise ValueError(f"{title}: argument {position} (Outpainting direction, direction): {', '.join(map(repr, unknown))} "
                         f"is not one of: {', '.join(DIRECTIONS)}")
    if not chosen:
        raise ValueError(f"{title}: argument {position} (Outpainting direction, direction): choose at least one of "
                         f"{', '.join(DIRECTIONS)}")
    return chosen


def keep_rectangle(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """A mask, white (repaint) everywhere but black (keep) over box = (left, top, right, bottom),
    right and bottom exclusive."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", size, 255)
    left, top, right, bottom = box
    if right > left and bottom > top:
        ImageDraw.Draw(mask).rectangle((left, top, right - 1, bottom - 1), fill=0)
    return mask


def inpaint_params(params, blur: int, fill: int, **update: Any):
    """A child job's parameters: the request's with the inpainting settings the scripts force."""
    return params.model_copy(update={"mask_blur": min(blur, MAX_BLUR), "inpainting_fill": fill, "inpaint_full_res": False,
                                     "inpainting_mask_invert": 0, "resize_mode": 0, "n_iter": 1, **update})


def mk2_geometry(width: int, height: int, side: str, amount: int, max_w: int, max_h: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    """One Outpainting mk2 side on a width x height picture: the canvas size (the grown size
    rounded up to 64), the grown size, and the box of the canvas the model works on: at most
    the request's width (height) across the new strip, the whole canvas along it, whole
    multiples of 8 as the model needs."""
    horizontal = side in ("left", "right")
    first = side in ("left", "up")  # the new strip is at the start (left or top) of the canvas
    out_w, out_h = width + (amount if horizontal else 0), height + (0 if horizontal else amount)
    canvas_w, canvas_h = math.ceil(out_w / 64) * 64, math.ceil(out_h / 64) * 64
    crop_w = min(max_w, out_w - out_w % 8) if horizontal else canvas_w
    crop_h = canvas_h if horizontal else min(max_h, out_h - out_h % 8)
    x0 = 0 if first or not horizontal else canvas_w - crop_w
    y0 = 0 if first or horizontal else canvas_h - crop_h
    return (canvas_w, canvas_h), (out_w, out_h), (x0, y0, x0 + crop_w, y0 + crop_h)


def mk2_pass(pictures: list[Image.Image], side: str, amount: int, blur: int, noise_q: float, color_variation: float,
             max_w: int, max_h: int) -> tuple[list[Image.Image], list[Image.Image], Image.Image, tuple[int, int, int, int], tuple[int, int]]:
    """One Outpainting mk2 side. Returns the noised canvases, the crops to inpaint, their
    mask, where the crop lies on the canvas, and the size to crop the canvas to afterwards."""
    from PIL import Image

    (canvas_w, canvas_h), (out_w, out_h), box = mk2_geometry(*pictures[0].size, side, amount, max_w, max_h)
    at = (amount if side == "left" else 0, amount if side == "up" else 0)
    reach = amount + blur  # the new strip plus `blur` pixels of the picture are repainted
    keep = (reach if side == "left" else 0, reach if side == "up" else 0,
            canvas_w - reach if side == "right" else out_w, canvas_h - reach if side == "down" else out_h)
    mask = keep_rectangle((canvas_w, canvas_h), keep)
    noised: dict[int, Image.Image] = {}  # a batch's first pass starts from one picture: fill it once
    canvases = []
    for picture in pictures:
        if id(picture) not in noised:
            canvas = Image.new("RGB", (canvas_w, canvas_h))
            canvas.paste(picture, at)
            noised[id(picture)] = noised_picture(canvas, mask, noise_q, color_variation)
        canvases.append(noised[id(picture)].copy())
    return canvases, [c.crop(box) for c in canvases], mask.crop(box), box, (out_w, out_h)
