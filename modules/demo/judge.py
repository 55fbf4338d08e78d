"""Reading a demo-model picture back: background colour, shape colour and shape.

This is how the evaluation and the tests check that pixels answer the prompt.

* Background: the palette colour nearest the median of the 3-pixel border (shapes are
  drawn at least 4 pixels in, so the border is pure background in a correct picture).
* Shape colour: the palette colour nearest the median pixel of the largest 8-connected
  region of pixels more than ``FOREGROUND_DISTANCE`` RGB units from the background colour.
  A region smaller than ``MIN_SHAPE_PIXELS`` is no shape at all.
* Shape outline: the largest region of pixels nearer the shape colour than the background
  colour, i.e. the edge where the picture is half one and half the other, which is where
  an anti-aliased drawing's edge lies whatever the two colours' contrast.
* Shape: each outline is drawn into the region's bounding box, as the training pictures
  are drawn, and the one overlapping the region best (intersection over union) names the
  shape, provided that overlap is at least ``MIN_SHAPE_IOU``; otherwise there is no shape.
  A soft blob is therefore a circle only if it is round. Stars are tried with blunt points
  too (inner radius 45 %, as drawn, to 65 % of the outer): an 8× latent autoencoder rounds
  the notches between points, and people still see a five-pointed star.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from modules.demo.shapes import COLOURS, OUTLINES, PALETTE, Scene, outline_mask, star_outline

FOREGROUND_DISTANCE = 80.0
MIN_SHAPE_PIXELS = 30
MIN_SHAPE_IOU = 0.6
STAR_INNER_RATIOS = (0.45, 0.55, 0.65)
TEMPLATES = {
    **{shape: (outline,) for shape, outline in OUTLINES.items() if shape != "star"},
    "star": tuple(star_outline(inner=r) for r in STAR_INNER_RATIOS),
}
_PALETTE = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)


@dataclass(frozen=True)
class Reading:
    """What a picture shows; ``shape``/``colour`` are None when no shape was found."""

    background: str
    colour: str | None
    shape: str | None
    shape_iou: float  # overlap of the best-fitting outline, 0 when there is no shape

    def matches(self, scene: Scene) -> dict[str, bool]:
        return {
            "background": self.background == scene.background,
            "colour": self.colour == scene.colour,
            "shape": self.shape == scene.shape,
        }


def nearest_colour(rgb, palette: Mapping[str, tuple[int, int, int]] | None = None) -> str:
    """The palette's colour nearest `rgb`: the demo model's eight unless another palette is
    given (a LoRA that taught the model a new colour word is judged with it added)."""
    names, values = (COLOURS, _PALETTE) if palette is None else (tuple(palette), np.array(list(palette.values()), dtype=np.float32))
    distances = ((values - np.asarray(rgb, dtype=np.float32)[None]) ** 2).sum(axis=1)
    return names[int(distances.argmin())]


def border_pixels(pixels: np.ndarray, width: int = 3) -> np.ndarray:
    return np.concatenate(
        [pixels[:width].reshape(-1, 3), pixels[-width:].reshape(-1, 3),
         pixels[:, :width].reshape(-1, 3), pixels[:, -width:].reshape(-1, 3)]
    )


def _distance(pixels: np.ndarray, colour: str, palette: Mapping[str, tuple[int, int, int]] = PALETTE) -> np.ndarray:
    return np.sqrt(((pixels - np.array(palette[colour], dtype=np.float32)) ** 2).sum(axis=-1))


def largest_region(mask: np.ndarray) -> np.ndarray | None:
    """The largest 8-connected region of `mask`; None when it is empty."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        return None
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    return labels == int(np.argmax(sizes)) + 1


def read_picture(image, palette: Mapping[str, tuple[int, int, int]] | None = None, outlines: Mapping[str, tuple] | None = None) -> Reading:
    """Judge one picture (PIL image or H×W×3 uint8 array); `palette` replaces the demo
    model's eight colours (name -> RGB) and `outlines` its shape templates (name -> tuple of
    outlines, as `TEMPLATES`) when given: a LoRA that taught a new word is judged with it added."""
    colours = PALETTE if palette is None else palette
    pixels = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.float32)
    background = nearest_colour(np.median(border_pixels(pixels), axis=0), palette)
    region = largest_region(_distance(pixels, background, colours) > FOREGROUND_DISTANCE)
    if region is None or region.sum() < MIN_SHAPE_PIXELS:
        return Reading(background, None, None, 0.0)
    colour = nearest_colour(np.median(pixels[region], axis=0), palette)
    outline = largest_region(_distance(pixels, colour, colours) < _distance(pixels, background, colours)) if colour != background else None
    if outline is None:
        return Reading(background, colour, None, 0.0)
    shape, iou = fit_outline(outline, TEMPLATES if outlines is None else outlines)
    return Reading(background, colour, shape if iou >= MIN_SHAPE_IOU else None, iou)


def fit_outline(region: np.ndarray, templates: Mapping[str, tuple] = TEMPLATES) -> tuple[str, float]:
    """The shape whose outline best overlaps ``region`` when drawn into its bounding box."""
    ys, xs = np.nonzero(region)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    scores = {}
    for shape, outlines in templates.items():
        best = 0.0
        for outline in outlines:
            template = outline_mask(outline, box, region.shape[0]) >= 0.5
            union = np.logical_or(template, region).sum()
            best = max(best, float(np.logical_and(template, region).sum() / union) if union else 0.0)
        scores[shape] = best
    shape = max(scores, key=scores.get)
    return shape, scores[shape]


def score(images, scenes) -> dict[str, float]:
    """Fractions of pictures with the right background, shape colour, shape, and all three."""
    totals = {"background": 0, "colour": 0, "shape": 0, "all": 0}
    for image, scene in zip(images, scenes, strict=True):
        found = read_picture(image).matches(scene)
        for key, ok in found.items():
            totals[key] += ok
        totals["all"] += all(found.values())
    return {k: v / len(scenes) for k, v in totals.items()}
