"""Judging the demo ControlNet: does a canny edge map steer where the demo model draws?

The condition is the canny map (as the ``canny`` preprocessor makes it at 64 px) of a
square drawn in the left half of the picture. Each seed is generated twice through the
project's own generation core (``Runner.txt2img`` with a ``ControlNetHook``), once with
the unit and once without, prompted with the held-out square scenes ("a COLOUR square on
a COLOUR background", never seen in training). The generated shape's mask is the largest
8-connected region of pixels far from the border's colour (holes filled), as
:mod:`modules.demo.judge` finds the shape. Reported: the share of seeds whose shape's
centroid lies in the left half, and the mean IoU of the shape's mask with the
condition's filled square.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from modules.demo import judge, shapes
from modules.demo.controlnet_training import canny_map

CONDITION_BOX = (6.0, 19.0, 32.0, 45.0)  # left, top, right, bottom pixels: a 26-px square, centroid x = 19
DEFAULT_STEPS = 20
DEFAULT_CFG = 5.0
DEFAULT_SAMPLER = "DPM++ 2M"
DEFAULT_SEEDS = tuple(range(20))
PER_PROMPT = 5  # seeds generated as one batch with one prompt


@dataclass(frozen=True)
class Demo:
    model: object  # LoadedModel: the demo checkpoint
    controlnet: object  # diffusers.ControlNetModel
    name: str = "demo-shapes-canny"


def load(folder: Path, checkpoint: Path, configs_dir: Path, device: str = "cpu") -> Demo:
    """The demo model (fp32 on ``device``) and the ControlNet folder, loaded by the app's
    ControlNet library as a unit naming it would be."""
    from modules.controlnet.models import ControlNetLibrary
    from modules.demo.evaluation import load_demo

    folder = Path(folder)
    model = load_demo(checkpoint, configs_dir, device)
    controlnet = ControlNetLibrary([folder.parent], configs_dir, cache_size=0).load(folder.name, model)
    return Demo(model, controlnet, folder.name)


# --------------------------------------------------------------------------- the condition


def condition_picture(box: tuple[float, float, float, float] = CONDITION_BOX) -> Image.Image:
    """A white square on black at ``box``, drawn as the demo's pictures are drawn."""
    coverage = shapes.outline_mask(shapes.OUTLINES["square"], box, shapes.SIZE)
    return Image.fromarray(np.rint(coverage * 255).astype(np.uint8)).convert("RGB")


def detected_map(box: tuple[float, float, float, float] = CONDITION_BOX) -> Image.Image:
    """The canny map of :func:`condition_picture`: what the ``canny`` preprocessor gives."""
    return Image.fromarray(canny_map(np.asarray(condition_picture(box))))


def silhouette(box: tuple[float, float, float, float] = CONDITION_BOX) -> np.ndarray:
    """The condition's filled square as a boolean mask."""
    return shapes.outline_mask(shapes.OUTLINES["square"], box, shapes.SIZE) >= 0.5


# --------------------------------------------------------------------------- reading pictures


def shape_mask(image) -> np.ndarray | None:
    """The generated shape: the largest 8-connected region of pixels more than
    ``judge.FOREGROUND_DISTANCE`` from the border's median colour, holes filled; None when
    it is smaller than ``judge.MIN_SHAPE_PIXELS``."""
    from scipy import ndimage

    pixels = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.float32)
    background = np.median(judge.border_pixels(pixels), axis=0)
    largest = judge.largest_region(np.sqrt(((pixels - background) ** 2).sum(axis=-1)) > judge.FOREGROUND_DISTANCE)
    if largest is None:
        return None
    region = ndimage.binary_fill_holes(largest)
    return region if region.sum() >= judge.MIN_SHAPE_PIXELS else None


def centroid_x(mask: np.ndarray | None) -> float | None:
    return None if mask is None else float(np.nonzero(mask)[1].mean())


def iou(mask: np.ndarray | None, target: np.ndarray) -> float:
    if mask is None:
        return 0.0
    union = np.logical_or(mask, target).sum()
    return float(np.logical_and(mask, target).sum() / union) if union else 0.0


def in_left_half(mask: np.ndarray | None) -> bool:
    x = centroid_x(mask)
    return x is not None and x < shapes.SIZE / 2


# --------------------------------------------------------------------------- generating


def prompts() -> list[str]:
    """The held-out square scenes, in a fixed order that mixes colours."""
    squares = [s for s in shapes.held_out_scenes() if s.shape == "square"]
    return [scene.prompt() for scene in squares[::3]] + [scene.prompt() for scene in squares[1::3]]


def unit_settings(weight: float = 1.0, guidance_start: float = 0.0, guidance_end: float = 1.0, **extra):
    """A canny unit as the API or the page would send it (its image already a detected map)."""
    from modules.controlnet.units import UnitSettings

    return UnitSettings(enabled=True, module="canny", model="demo-shapes-canny", weight=weight,
                        resize_mode="Just Resize", processor_res=shapes.SIZE, threshold_a=100, threshold_b=200,
                        guidance_start=guidance_start, guidance_end=guidance_end, **extra)


def make_hooks(demo: Demo, settings, detected: Image.Image):
    """The job's hooks for one ControlNet unit (the project's ControlNetHook)."""
    from modules.controlnet.hook import ControlNetHook, PreparedUnit
    from modules.generation.hooks import Hooks

    return Hooks([ControlNetHook([PreparedUnit(settings, demo.controlnet, detected, "canny")])])


def generate(runner, demo: Demo, prompt: str, seed: int, settings=None, *, batch_size: int = 1,
             detected: Image.Image | None = None, steps: int = DEFAULT_STEPS, cfg: float = DEFAULT_CFG,
             sampler: str = DEFAULT_SAMPLER) -> list[Image.Image]:
    """txt2img pictures (seeds ``seed``...) with one ControlNet unit, or none when
    ``settings`` is None, through ``runner`` (a Runner of ``demo.model``)."""
    from modules.demo import evaluation

    hooks = None if settings is None else make_hooks(demo, settings, detected or detected_map())
    return evaluation.generate(runner, prompt, seed, cfg=cfg, steps=steps, sampler=sampler, batch_size=batch_size, hooks=hooks)


@dataclass
class Steering:
    """Per-seed readings with and without the ControlNet unit."""

    seeds: list[int]
    left_with: list[bool]
    left_without: list[bool]
    iou_with: list[float]
    iou_without: list[float]
    pictures_with: list = field(repr=False, default_factory=list)
    pictures_without: list = field(repr=False, default_factory=list)

    def summary(self) -> dict:
        return {
            "seeds": len(self.seeds),
            "left_share_with": sum(self.left_with) / len(self.seeds),
            "left_share_without": sum(self.left_without) / len(self.seeds),
            "iou_with": round(statistics.fmean(self.iou_with), 3),
            "iou_without": round(statistics.fmean(self.iou_without), 3),
        }


def measure(demo: Demo, seeds=DEFAULT_SEEDS, steps: int = DEFAULT_STEPS, cfg: float = DEFAULT_CFG,
            sampler: str = DEFAULT_SAMPLER, settings=None) -> Steering:
    """Generate every seed with and without the unit (``PER_PROMPT`` seeds per batch, one
    held-out square prompt per batch) and read the shapes back."""
    from modules.generation.runner import Runner

    runner = Runner(demo.model)
    settings = settings or unit_settings()
    detected, target = detected_map(), silhouette()
    seeds = list(seeds)
    texts = prompts()
    result = Steering(seeds, [], [], [], [])
    for k in range(0, len(seeds), PER_PROMPT):
        chunk = seeds[k:k + PER_PROMPT]
        prompt = texts[(k // PER_PROMPT) % len(texts)]
        options = dict(batch_size=len(chunk), detected=detected, steps=steps, cfg=cfg, sampler=sampler)
        result.pictures_with += generate(runner, demo, prompt, chunk[0], settings, **options)
        result.pictures_without += generate(runner, demo, prompt, chunk[0], None, **options)
    for picture in result.pictures_with:
        mask = shape_mask(picture)
        result.left_with.append(in_left_half(mask))
        result.iou_with.append(iou(mask, target))
    for picture in result.pictures_without:
        mask = shape_mask(picture)
        result.left_without.append(in_left_half(mask))
        result.iou_without.append(iou(mask, target))
    return result


def mean_difference(a: list[Image.Image], b: list[Image.Image]) -> float:
    """Mean absolute pixel difference (0..255) between two lists of pictures."""
    return float(np.mean([np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32)).mean() for x, y in zip(a, b, strict=True)]))


def format_summary(result: Steering) -> str:
    s = result.summary()
    return (f"Square edge map in the left half, {s['seeds']} seeds: shape centroid in the left half "
            f"{s['left_share_with']:.0%} with the ControlNet, {s['left_share_without']:.0%} without; "
            f"IoU with the condition's silhouette {s['iou_with']:.2f} with, {s['iou_without']:.2f} without")
