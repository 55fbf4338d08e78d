"""Training the demo ControlNet: canny edges of the demo's drawn shapes steer the demo model.

A standard ControlNet (Zhang et al.): ``diffusers.ControlNetModel.from_unet`` copies the
demo UNet's encoder and middle block, the UNet stays frozen and receives the ControlNet's
residuals, and the loss is the UNet's epsilon-prediction error. Two choices make it steer
within a CPU budget: timesteps are drawn "cubic" (T2I-Adapter's schedule, mostly noisy
steps, where the layout is decided), and each sample's squared epsilon error is weighted by
1 + min(1/SNR, 20), i.e. its error in x0 terms is added, capped: at high noise an epsilon
error hardly shows where the shape went. With plain uniform epsilon training the same
network had learnt nothing usable after 600 steps; this recipe converges suddenly (as
ControlNets do) near step 500, steers by step 1200 (silhouette IoU 0.68) and draws the
edges' shape closely by step 2400 (IoU 0.84, bench/controlnet_steering.py). Pictures and captions are
the demo model's own (:mod:`modules.demo.shapes`, training scenes only); the condition is
the picture's canny edge map made as the built-in ``canny`` preprocessor makes it at the
picture's 64 px (``cv2.Canny(picture, 100, 200)`` on the RGB picture, grey as RGB, 0..1).

Every step draws its pictures, captions, noise and timesteps from generators seeded with
(seed, phase, step), so a rerun on the same software gives the same weights and a run
resumed from ``state.pt`` in the work folder continues exactly where it stopped.
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

from modules.demo import shapes
from modules.files import atomic_path

FOLDER_NAME = "demo-shapes-canny"  # in models/ControlNet/
STATE_FILE = "state.pt"
PHASE_CODE = 31  # seeds the steps apart from the demo model's and the upscaler's phases
CANNY_LOW, CANNY_HIGH = 100, 200  # the extension's canny defaults (Threshold A / B)


@dataclass(frozen=True)
class Recipe:
    """Every number that decides the weights. Change one and the model changes."""

    seed: int = 20261206
    steps: int = 2400
    batch: int = 16
    learning_rate: float = 1e-3
    final_learning_rate: float = 1e-4
    weight_decay: float = 0.0
    timesteps: str = "cubic"  # or "uniform"; cubic favours the noisy steps where the layout is decided
    min_snr_gamma: float = 0.0  # >0: min-SNR weighting (less weight on the nearly clean steps)
    x0_weight_cap: float = 20.0  # >0: add the error in x0 terms (epsilon error / SNR), capped at this weight
    conditioning_channels: tuple[int, ...] = (16, 32, 64, 128)  # three stride-2 steps: 64 px -> 8x8 latents
    checkpoint_every: int = 100

    @classmethod
    def quick(cls) -> "Recipe":
        """A few steps: checks the pipeline end to end in seconds (not a usable model)."""
        return cls(steps=6, batch=4, checkpoint_every=3)


# --------------------------------------------------------------------------- conditions


def canny_map(picture: np.ndarray) -> np.ndarray:
    """The canny edge map of an H×W×3 uint8 picture as H×W×3 uint8 (white edges on black),
    as the extension's ``canny`` preprocessor draws it at the picture's own resolution."""
    import cv2

    edges = cv2.Canny(np.ascontiguousarray(picture, dtype=np.uint8), CANNY_LOW, CANNY_HIGH)
    return np.repeat(edges[..., None], 3, axis=2)


def condition_tensor(maps: np.ndarray) -> torch.Tensor:
    """N×H×W×3 uint8 maps -> N×3×H×W float in 0..1, what a diffusers ControlNet takes."""
    return torch.from_numpy(np.ascontiguousarray(maps)).permute(0, 3, 1, 2).float() / 255.0


def training_batch(recipe: Recipe, step: int) -> tuple[np.ndarray, np.ndarray, list[str], torch.Generator]:
    """Step ``step``'s pictures (N×H×W×3 uint8), their canny maps, captions (the demo
    model's training mix: full, partial and some empty) and a torch generator for the
    noise, the same on every run."""
    key = [recipe.seed, PHASE_CODE, step]
    rng = np.random.default_rng(key)
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
    pictures, scenes = shapes.random_batch(shapes.training_scenes(), recipe.batch, rng)
    maps = np.stack([canny_map(p) for p in pictures])
    captions = [shapes.random_caption(scene, rng) for scene in scenes]
    return pictures, maps, captions, gen


# --------------------------------------------------------------------------- model


def build_controlnet(unet, recipe: Recipe):
    """A ControlNet copied from ``unet`` (encoder and middle block), zero convolutions out."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(recipe.conditioning_channels))


def sample_timesteps(recipe: Recipe, count: int, total: int, gen: torch.Generator) -> torch.Tensor:
    """Training timesteps: uniform, or "cubic" as T2I-Adapter trains its adapters
    (t = (1 - u^3) T), most of them noisy, where a condition decides the layout."""
    if recipe.timesteps == "uniform":
        return torch.randint(0, total, (count,), generator=gen)
    u = torch.rand(count, generator=gen)
    return ((1 - u**3) * total).long().clamp(0, total - 1)


def _learning_rate(recipe: Recipe, step: int) -> float:
    """Cosine from learning_rate to final_learning_rate after a short warm-up."""
    warmup = min(50, recipe.steps // 10 or 1)
    if step < warmup:
        return recipe.learning_rate * (step + 1) / warmup
    t = (step - warmup) / max(1, recipe.steps - warmup)
    return recipe.final_learning_rate + 0.5 * (recipe.learning_rate - recipe.final_learning_rate) * (1 + math.cos(math.pi * t))


class _TextCache:
    """Frozen text-encoder outputs per caption (the captions repeat: a few thousand at most)."""

    def __init__(self, model):
        self.model = model
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            ids = self.model.tokenizer(missing, padding="max_length", max_length=77, truncation=True,
                                       return_tensors="pt").input_ids.to(self.model.device)
            for caption, hidden in zip(missing, self.model.text_encoder(ids)[0]):
                self.cache[caption] = hidden
        return torch.stack([self.cache[c] for c in captions])


def train(
    recipe: Recipe,
    model,
    work: Path,
    progress: Callable[[int, float], None] | None = None,
):
    """Train (or resume from ``work/state.pt``) a ControlNet for ``model`` (the demo model
    as a ``LoadedModel``, fp32) and return it in eval mode.

    ``progress(step, loss)`` is called after every step (after any checkpoint)."""
    from diffusers import DDPMScheduler

    work.mkdir(parents=True, exist_ok=True)
    device = model.device
    unet, vae = model.unet.eval().requires_grad_(False), model.vae.eval().requires_grad_(False)
    model.text_encoder.eval().requires_grad_(False)
    torch.manual_seed(recipe.seed)
    controlnet = build_controlnet(unet, recipe).to(device).train()
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    step = 0
    state_file = work / STATE_FILE
    if state_file.is_file():
        state = torch.load(state_file, map_location=device, weights_only=True)
        controlnet.load_state_dict(state["controlnet"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])

    schedule = DDPMScheduler.from_config(model.scheduler_config)
    alphas = schedule.alphas_cumprod.to(device)
    scaling = float(vae.config.scaling_factor)
    text = _TextCache(model)
    while step < recipe.steps:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(recipe, step)
        pictures, maps, captions, gen = training_batch(recipe, step)
        b = len(pictures)
        with torch.no_grad():
            pixels = torch.from_numpy(pictures).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(device)
            posterior = vae.encode(pixels).latent_dist
            z0 = (posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(device)) * scaling
            context = text(captions)
        noise = torch.randn(z0.shape, generator=gen).to(device)
        t = sample_timesteps(recipe, b, len(alphas), gen).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z0 + (1 - a).sqrt() * noise
        down, mid = controlnet(noisy, t, context, controlnet_cond=condition_tensor(maps).to(device), return_dict=False)
        pred = unet(noisy, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        loss = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        snr = a.flatten() / (1 - a.flatten())
        if recipe.min_snr_gamma:
            loss = loss * torch.clamp(snr, max=recipe.min_snr_gamma) / snr
        if recipe.x0_weight_cap:
            # at high noise the epsilon error hardly tells where the shape went; its x0 error does
            loss = loss * (1 + torch.clamp(1 / snr, max=recipe.x0_weight_cap))
        loss = loss.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % recipe.checkpoint_every == 0 or step == recipe.steps:
            with atomic_path(state_file) as temp:
                torch.save({"controlnet": controlnet.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, temp)
        if progress is not None:
            progress(step, loss.item())
    return controlnet.eval()


def write_model(controlnet, folder: Path, recipe: Recipe) -> Path:
    """Write the ControlNet as a diffusers folder (config.json + fp16
    diffusion_pytorch_model.safetensors), what the ControlNet library loads."""
    import copy

    folder = Path(folder)
    half = copy.deepcopy(controlnet).to("cpu", torch.float16)
    half.save_pretrained(folder, safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    config["_demo_recipe"] = asdict(recipe)  # diffusers ignores unknown keys starting with "_"
    with atomic_path(folder / "config.json") as temp:
        temp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for path in folder.iterdir():
        path.chmod(0o644)  # model files, readable like the rest of the checkout
    return folder
