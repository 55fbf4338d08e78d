"""Procedural pictures of one coloured shape on a plain background, and their captions.

The demo model is trained on these and judged against them, so drawing, the prompt
grammar and the held-out prompts live in one place. Every colour and shape word is a
single token in CLIP's vocabulary, so the real tokenizer sees them whole.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64  # the model's one native size
SUPERSAMPLE = 4  # drawn large, then box-filtered: anti-aliased edges like a real picture
BORDER = 4  # shapes keep this many pixels clear of the edge, where the background is read
HALF_SIZE = (13.0, 24.0)  # half the side of the shape's bounding box, in pixels

PALETTE = MappingProxyType(
    {
        "red": (220, 30, 30),
        "green": (30, 170, 50),
        "blue": (30, 60, 220),
        "yellow": (245, 220, 30),
        "purple": (140, 40, 180),
        "orange": (250, 140, 20),
        "white": (245, 245, 245),
        "black": (15, 15, 15),
    }
)
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "star")


def star_outline(points: int = 5, inner: float = 0.45) -> tuple[tuple[float, float], ...]:
    """A point-up star, stretched to fill the unit square like the other shapes."""
    angles = [-np.pi / 2 + k * np.pi / points for k in range(2 * points)]
    raw = [((1 if k % 2 == 0 else inner) * np.cos(a), (1 if k % 2 == 0 else inner) * np.sin(a)) for k, a in enumerate(angles)]
    xs, ys = zip(*raw)
    return tuple(((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in raw)


# Outlines in bounding-box coordinates (0..1 both ways); None means the inscribed ellipse.
OUTLINES = MappingProxyType(
    {
        "circle": None,
        "square": ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)),
        "triangle": ((0.5, 0.0), (1.0, 1.0), (0.0, 1.0)),
        "star": star_outline(),
    }
)

FULL_TEMPLATES = (
    "a {c} {s} on a {b} background",
    "{c} {s} on {b} background",
    "a {c} {s} on {b}",
    "a {b} background with a {c} {s}",
    "{c} {s}, {b} background",
    "a picture of a {c} {s} on a {b} background",
)
# Partial captions teach single words, so "a red shape" or "blue background" work alone.
PARTIAL_TEMPLATES = (
    "a {c} {s}",
    "{c} {s}",
    "a {s}",
    "{s}",
    "{c}",
    "a {s} on a {b} background",
    "{b} background",
    "a {c} shape",
    "a {c} shape on a {b} background",
)
EVAL_TEMPLATE = FULL_TEMPLATES[0]
P_EMPTY, P_PARTIAL = 0.10, 0.15  # the empty caption is what classifier-free guidance needs


@dataclass(frozen=True)
class Scene:
    """What one picture shows: ``colour`` is the shape's, ``background`` the rest's."""

    colour: str
    shape: str
    background: str

    def prompt(self, template: str = EVAL_TEMPLATE) -> str:
        return template.format(c=self.colour, s=self.shape, b=self.background)


def all_scenes() -> tuple[Scene, ...]:
    """Every colour × shape × different-background combination (8·4·7 = 224)."""
    return tuple(
        Scene(c, s, b) for c, s, b in itertools.product(COLOURS, SHAPES, COLOURS) if b != c
    )


def held_out_scenes() -> tuple[Scene, ...]:
    """64 scenes the model never sees in training, for judging how prompts are followed.

    Two backgrounds are held out per colour-and-shape pair, rotating through the seven
    choices, so every pair of words (colour+shape, colour+background, shape+background)
    still occurs in training and the test is of composition, not of unseen words.
    """
    held = []
    for k, (c, s) in enumerate(itertools.product(COLOURS, SHAPES)):
        backgrounds = [b for b in COLOURS if b != c]
        held += [Scene(c, s, backgrounds[(2 * k) % 7]), Scene(c, s, backgrounds[(2 * k + 1) % 7])]
    return tuple(held)


def training_scenes() -> tuple[Scene, ...]:
    held = set(held_out_scenes())
    return tuple(s for s in all_scenes() if s not in held)


def outline_mask(outline, box: tuple[float, float, float, float], size: int, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Coverage (0..1) of ``outline`` (an ``OUTLINES`` value) drawn into ``box`` =
    (left, top, right, bottom) pixels."""
    big = Image.new("L", (size * supersample, size * supersample), 0)
    _draw_outline(ImageDraw.Draw(big), outline, [v * supersample for v in box], 255)
    return np.asarray(big.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def _draw_outline(draw: ImageDraw.ImageDraw, outline, box, fill) -> None:
    left, top, right, bottom = box
    if outline is None:
        draw.ellipse([left, top, right, bottom], fill=fill)
    else:
        draw.polygon([(left + x * (right - left), top + y * (bottom - top)) for x, y in outline], fill=fill)


def draw(scene: Scene, centre: tuple[float, float], half_size: float, size: int = SIZE) -> Image.Image:
    """The picture of ``scene`` with the shape's bounding box centred on ``centre``."""
    ss = SUPERSAMPLE
    big = Image.new("RGB", (size * ss, size * ss), PALETTE[scene.background])
    cx, cy = centre
    box = [(cx - half_size) * ss, (cy - half_size) * ss, (cx + half_size) * ss, (cy + half_size) * ss]
    _draw_outline(ImageDraw.Draw(big), OUTLINES[scene.shape], box, PALETTE[scene.colour])
    return big.resize((size, size), Image.BOX)


def random_picture(scene: Scene, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """``scene`` at a random size and place, as an HxWx3 uint8 array."""
    half = rng.uniform(*HALF_SIZE)
    low, high = BORDER + half, size - BORDER - half
    centre = (rng.uniform(low, high), rng.uniform(low, high))
    return np.asarray(draw(scene, centre, half, size))


def random_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption in the training mix: mostly full sentences, some partial, some empty."""
    u = rng.random()
    if u < P_EMPTY:
        return ""
    templates = PARTIAL_TEMPLATES if u < P_EMPTY + P_PARTIAL else FULL_TEMPLATES
    return scene.prompt(templates[rng.integers(len(templates))])


def random_batch(scenes: tuple[Scene, ...], count: int, rng: np.random.Generator) -> tuple[np.ndarray, list[Scene]]:
    """``count`` random pictures (N×H×W×3 uint8) of scenes drawn from ``scenes``."""
    chosen = [scenes[i] for i in rng.integers(len(scenes), size=count)]
    return np.stack([random_picture(s, rng) for s in chosen]), chosen
