"""Training the demo's 4× upscaler: a small RealESRGAN Compact (SRVGGNetCompact) network.

The model is built with spandrel's own architecture class, so the saved state dict has
exactly the layout spandrel detects, and any ESRGAN-folder loader picks it up. It learns
to turn a picture drawn like the demo model's (flat colours, shapes anti-aliased by a
box filter) at one size into the same picture drawn at four times the size: each training
pair is rendered twice from one scene description, not made by degrading the large one.
Blur (up to as soft as the demo model's own 64-px output, which comes through its VAE) and
mild noise on some small pictures teach it to sharpen those too.

Every step draws its scenes and augmentations from a generator seeded with (seed, step),
so a rerun on the same software gives the same weights and a run resumed from
``state.pt`` in the work folder continues exactly where it stopped.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from modules.demo import shapes
from modules.files import atomic_path

SCALE = 4
FILE_NAME = "4x-demo-shapes-compact.safetensors"  # in models/ESRGAN/
STATE_FILE = "state.pt"
PHASE_CODE = 21  # seeds the training steps apart from the demo model's phases
SCENES = shapes.training_scenes()  # the demo's held-out colour/shape/background triples stay unseen


@dataclass(frozen=True)
class Recipe:
    """Every number that decides the weights. Change one and the model changes."""

    seed: int = 20261206
    num_feat: int = 32
    num_conv: int = 8
    steps: int = 3000
    batch: int = 16
    lr_size: int = 32  # side of a training picture before upscaling
    learning_rate: float = 2e-3
    final_learning_rate: float = 2e-5
    loss: str = "mse"  # or "l1": sharper-looking, but it places edges worse and loses to Lanczos in PSNR
    max_shapes: int = 3
    palette_share: float = 0.6  # the rest of the colours are random RGB
    blur_share: float = 0.35  # the demo model's own 64-px pictures have soft edges (VAE output)
    blur_sigma: tuple[float, float] = (0.2, 1.6)  # in small-picture pixels
    noise_share: float = 0.2
    noise_sigma: tuple[float, float] = (0.5, 2.5)  # in 8-bit levels
    checkpoint_every: int = 250

    @classmethod
    def quick(cls) -> "Recipe":
        """A few steps: checks the pipeline end to end in seconds (not a usable model)."""
        return cls(steps=20, checkpoint_every=10)


# --------------------------------------------------------------------------- pictures


@dataclass(frozen=True)
class Layer:
    """One flat-coloured shape: ``box`` is (left, top, right, bottom) as fractions of the
    picture's side, so one scene renders at any size."""

    outline: tuple[tuple[float, float], ...] | None
    colour: tuple[int, int, int]
    box: tuple[float, float, float, float]


def render(background: tuple[int, int, int], layers: list[Layer], size: int) -> np.ndarray:
    """The scene at ``size``×``size`` as uint8 HxWx3, each shape anti-aliased as the demo's
    pictures are (drawn supersampled, box-filtered) and laid over the ones before it."""
    picture = np.empty((size, size, 3), np.float32)
    picture[:] = background
    for layer in layers:
        coverage = shapes.outline_mask(layer.outline, tuple(v * size for v in layer.box), size)[..., None]
        picture += coverage * (np.asarray(layer.colour, np.float32) - picture)
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def _rotated(outline, angle: float):
    if outline is None:
        return None
    c, s = math.cos(angle), math.sin(angle)
    return tuple((0.5 + c * (x - 0.5) - s * (y - 0.5), 0.5 + s * (x - 0.5) + c * (y - 0.5)) for x, y in outline)


def random_scene(recipe: Recipe, rng: np.random.Generator) -> tuple[tuple[int, int, int], list[Layer]]:
    """A background and 1..max_shapes shapes of random size, place, aspect and rotation,
    some running off the edge (as in a crop of a larger picture)."""
    scenes = SCENES

    def colour(name: str) -> tuple[int, int, int]:
        if rng.random() < recipe.palette_share:
            return shapes.PALETTE[name]
        return tuple(int(v) for v in rng.integers(0, 256, 3))

    first = scenes[rng.integers(len(scenes))]
    background = colour(first.background)
    layers = []
    for k in range(int(rng.integers(1, recipe.max_shapes + 1))):
        scene = first if k == 0 else scenes[rng.integers(len(scenes))]
        outline = shapes.OUTLINES[scene.shape]
        if rng.random() < 0.5:
            outline = _rotated(outline, rng.uniform(0, 2 * math.pi))
        half_w = rng.uniform(2.5, 24.0) / recipe.lr_size
        half_h = half_w * math.exp(rng.uniform(-0.4, 0.4)) if rng.random() < 0.3 else half_w
        cx, cy = rng.uniform(-0.1, 1.1, 2)
        layers.append(Layer(outline, colour(scene.colour), (cx - half_w, cy - half_h, cx + half_w, cy + half_h)))
    return background, layers


def random_pair(recipe: Recipe, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (small, large) uint8 pair of the same random scene, lr_size and SCALE× that."""
    background, layers = random_scene(recipe, rng)
    return render(background, layers, recipe.lr_size), render(background, layers, recipe.lr_size * SCALE)


def to_tensor(pictures: np.ndarray) -> torch.Tensor:
    """N×H×W×3 uint8 (or one H×W×3) -> N×3×H×W float in 0..1."""
    if pictures.ndim == 3:
        pictures = pictures[None]
    return torch.from_numpy(np.ascontiguousarray(pictures)).permute(0, 3, 1, 2).float() / 255.0


def to_pictures(tensor: torch.Tensor) -> np.ndarray:
    """N×3×H×W float in 0..1 -> N×H×W×3 uint8, rounded."""
    return (tensor.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def training_batch(recipe: Recipe, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s (small, large) batch, the same on every run: fresh scenes, a random
    transpose, and on some small pictures a mild blur and/or noise, re-quantised to 8 bits."""
    rng = np.random.default_rng([recipe.seed, PHASE_CODE, step])
    small, large = [], []
    for _ in range(recipe.batch):
        lo, hi = random_pair(recipe, rng)
        if rng.random() < 0.5:
            lo, hi = lo.transpose(1, 0, 2), hi.transpose(1, 0, 2)
        if rng.random() < recipe.blur_share:
            blur = ImageFilter.GaussianBlur(float(rng.uniform(*recipe.blur_sigma)))
            lo = np.asarray(Image.fromarray(np.ascontiguousarray(lo)).filter(blur))
        if rng.random() < recipe.noise_share:
            sigma = float(rng.uniform(*recipe.noise_sigma))
            lo = np.clip(np.rint(lo + sigma * rng.standard_normal(lo.shape)), 0, 255).astype(np.uint8)
        small.append(lo)
        large.append(hi)
    return to_tensor(np.stack(small)), to_tensor(np.stack(large))


# --------------------------------------------------------------------------- model


def build_model(recipe: Recipe) -> torch.nn.Module:
    """spandrel's SRVGGNetCompact at 4×: the state dict spandrel reads back as 'Compact'."""
    from spandrel.architectures.Compact import Compact

    return Compact(num_in_ch=3, num_out_ch=3, num_feat=recipe.num_feat, num_conv=recipe.num_conv, upscale=SCALE)


def _learning_rate(recipe: Recipe, step: int) -> float:
    """Cosine from learning_rate to final_learning_rate over the run, after a short warm-up."""
    warmup = min(100, recipe.steps // 10 or 1)
    if step < warmup:
        return recipe.learning_rate * (step + 1) / warmup
    t = (step - warmup) / max(1, recipe.steps - warmup)
    return recipe.final_learning_rate + 0.5 * (recipe.learning_rate - recipe.final_learning_rate) * (1 + math.cos(math.pi * t))


def train(
    recipe: Recipe,
    work: Path,
    device: torch.device,
    progress: Callable[[int, float], None] | None = None,
) -> torch.nn.Module:
    """Train (or resume from ``work/state.pt``) and return the model in eval mode.

    ``progress(step, loss)`` is called after every step (after any checkpoint). The squared
    loss is what PSNR measures; an L1 loss trained this briefly draws crisp but misplaced edges."""
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate, betas=(0.9, 0.99))
    step = 0
    state_file = work / STATE_FILE
    if state_file.is_file():
        state = torch.load(state_file, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
    model.train()
    while step < recipe.steps:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(recipe, step)
        small, large = (t.to(device) for t in training_batch(recipe, step))
        loss = (F.mse_loss if recipe.loss == "mse" else F.l1_loss)(model(small), large)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % recipe.checkpoint_every == 0 or step == recipe.steps:
            with atomic_path(state_file) as temp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, temp)
        if progress is not None:
            progress(step, loss.item())
    return model.eval()


def write_model(model: torch.nn.Module, path: Path, recipe: Recipe, extra: dict | None = None) -> Path:
    """Write the weights as an fp32 safetensors file (what spandrel loads) with the recipe in
    its metadata, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    metadata = {"architecture": "Compact", "scale": str(SCALE), "recipe": json.dumps(asdict(recipe))}
    metadata.update({k: str(v) for k, v in (extra or {}).items()})
    with atomic_path(Path(path)) as temp:
        save_file(tensors, str(temp), metadata=metadata)
    return Path(path)
