"""Training the demo model from scratch: VAE, then text encoder and UNet together.

Each phase is bounded by a step count and seeded per step (every step draws its pictures,
captions and noise from a generator seeded with (seed, phase, step)), so a rerun on the
same software gives the same weights, and a run resumed from a phase checkpoint continues
exactly where it stopped. Phases write into a work folder:

* ``vae/``: periodic ``state.pt`` while training, ``vae.pt`` + ``stats.json`` when done.
* ``latents.pt``: the VAE posterior (mean, std) of a fixed set of pictures.
* ``unet/``: periodic ``state.pt``, then ``unet.pt`` with the EMA text encoder and UNet.

The model's topology is defined here (``*_config`` functions); :func:`write_model`
writes it as an A1111 single file plus the config folder the loader pairs it with.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from modules.demo import shapes
from modules.files import atomic_path

ARCH = "demo-shapes"
PHASE_CODES = {"vae": 1, "latents": 2, "unet": 3, "validation": 9}
TEXT_WIDTH = 64  # also how the loader recognises this model among SD1-layout files


@dataclass(frozen=True)
class Recipe:
    """Every number that decides the weights. Change one and the model changes."""

    seed: int = 20261121
    vae_steps: int = 2000
    vae_batch: int = 32
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    vae_edge_weight: float = 1.0
    latent_pictures: int = 30000
    unet_steps: int = 4000
    unet_batch: int = 64
    unet_lr: float = 1e-3
    unet_weight_decay: float = 0.01
    offset_noise: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.995
    checkpoint_every: int = 250
    validation_pictures: int = 128  # held aside to report reconstruction quality

    @classmethod
    def quick(cls) -> "Recipe":
        """A few steps of everything: checks the pipeline end to end in a minute."""
        return cls(vae_steps=20, latent_pictures=512, unet_steps=20, checkpoint_every=10)


# --------------------------------------------------------------------------- topology


def vae_config(scaling_factor: float = 1.0) -> dict:
    """SD's AutoencoderKL (factor 8, 4 latent channels), narrow: 0.98 M parameters."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 1,
        "block_out_channels": [16, 32, 64, 64],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "norm_num_groups": 16,
        "act_fn": "silu",
        "sample_size": shapes.SIZE,
        "scaling_factor": scaling_factor,
    }


def text_encoder_config() -> dict:
    """CLIPTextModel with CLIP's full vocabulary (so the real tokenizer fits), 2 thin layers."""
    return {
        "vocab_size": 49408,
        "hidden_size": TEXT_WIDTH,
        "intermediate_size": 4 * TEXT_WIDTH,
        "projection_dim": TEXT_WIDTH,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
    }


def unet_config() -> dict:
    """UNet2DConditionModel on 8×8 latents: two levels, cross-attention at 8×8 and in the
    4×4 middle. Sized so 20 steps at 64×64 stay under 0.4 s on two CPU cores."""
    return {
        "sample_size": shapes.SIZE // 8,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 1,
        "block_out_channels": [64, 128],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": TEXT_WIDTH,
        "attention_head_dim": 8,
        "norm_num_groups": 32,
    }


def scheduler_config() -> dict:
    """SD 1.x's own noise schedule (scaled_linear betas, 1000 steps, epsilon prediction)."""
    path = Path(__file__).resolve().parents[2] / "configs" / "sd1" / "scheduler" / "scheduler_config.json"
    return json.loads(path.read_text())


def build_vae(scaling_factor: float = 1.0):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**vae_config(scaling_factor))


def build_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**text_encoder_config()))


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**unet_config())


# --------------------------------------------------------------------------- helpers


def step_rng(recipe: Recipe, phase: str, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """Generators for one step, independent of every other step (so resuming is exact)."""
    key = [recipe.seed, PHASE_CODES[phase], step]
    rng = np.random.default_rng(key)
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
    return rng, gen


def to_tensor(pictures: np.ndarray) -> torch.Tensor:
    """N×H×W×3 uint8 → N×3×H×W in [-1, 1], as the VAE sees pictures."""
    return torch.from_numpy(pictures).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_pictures(images: torch.Tensor) -> np.ndarray:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def learning_rate(base: float, step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    progress = min(step / max(total, 1), 1.0)
    return base * min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    mse = ((reconstruction.clamp(-1, 1) - target) / 2).pow(2).mean().item()
    return 10 * math.log10(1 / max(mse, 1e-12))


def _save(obj, path: Path) -> None:
    with atomic_path(path) as temp:
        torch.save(obj, temp)


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def validation_pictures(recipe: Recipe) -> tuple[np.ndarray, list]:
    rng, _ = step_rng(recipe, "validation", 0)
    return shapes.random_batch(shapes.all_scenes(), recipe.validation_pictures, rng)


Progress = Callable[[str, int], "object"]  # (phase description, total steps) -> tqdm-like bar


def _bar(progress: Progress | None, description: str, total: int, start: int):
    if progress is None:
        from tqdm import tqdm

        return tqdm(total=total, initial=start, desc=description, unit="step", dynamic_ncols=True)
    return progress(description, total)


# --------------------------------------------------------------------------- phase 1: VAE


def train_vae(recipe: Recipe, work: Path, device: torch.device, progress: Progress | None = None):
    """Train the autoencoder; returns it with its latent scaling factor set."""
    folder = work / "vae"
    done = folder / "vae.pt"
    if done.is_file():
        saved = _load(done)
        vae = build_vae(saved["scaling_factor"])
        vae.load_state_dict(saved["weights"])
        return vae.to(device)

    torch.manual_seed(recipe.seed)
    vae = build_vae().to(device)
    opt = torch.optim.AdamW(vae.parameters(), recipe.vae_lr, weight_decay=0.0)
    step = 0
    state_file = folder / "state.pt"
    if state_file.is_file():
        state = _load(state_file)
        vae.load_state_dict(state["weights"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]

    val_pictures, val_scenes = validation_pictures(recipe)
    val = to_tensor(val_pictures).to(device)
    scenes = shapes.training_scenes()  # the VAE never sees the held-out scenes either
    bar = _bar(progress, "VAE", recipe.vae_steps, step)
    vae.train()
    while step < recipe.vae_steps:
        for group in opt.param_groups:
            group["lr"] = learning_rate(recipe.vae_lr, step, recipe.vae_steps, 50)
        rng, gen = step_rng(recipe, "vae", step)
        pictures, _ = shapes.random_batch(scenes, recipe.vae_batch, rng)
        x = to_tensor(pictures).to(device)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(device)
        rec = vae.decode(z).sample
        loss = vae_loss(rec, x, recipe.vae_edge_weight) + recipe.vae_kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        if step % recipe.checkpoint_every == 0 or step == recipe.vae_steps:
            with torch.no_grad():
                vae.eval()
                quality = psnr(vae.decode(vae.encode(val).latent_dist.mean).sample, val)
                vae.train()
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{quality:.1f}dB")
            _save({"weights": vae.state_dict(), "optimizer": opt.state_dict(), "step": step}, state_file)
    bar.close()

    vae.eval()
    with torch.no_grad():
        means = torch.cat([vae.encode(val[i : i + 64]).latent_dist.mean for i in range(0, len(val), 64)])
        reconstruction = vae.decode(means).sample
    scaling_factor = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=scaling_factor)
    from modules.demo.judge import score

    recon_pictures = to_pictures(reconstruction)
    stats = {
        "steps": step,
        "psnr_db": round(psnr(reconstruction, val), 2),
        "scaling_factor": scaling_factor,
        "reconstruction_scores": score(list(recon_pictures), val_scenes),
    }
    _write_json(folder / "stats.json", stats)
    _save_grid(folder / "reconstructions.png", [*val_pictures[:16], *recon_pictures[:16]], rows=2)
    _save({"weights": vae.state_dict(), "scaling_factor": scaling_factor}, done)
    return vae


def vae_loss(rec: torch.Tensor, x: torch.Tensor, edge_weight: float) -> torch.Tensor:
    """L1 + MSE on pixels, plus L1 on neighbour differences so edges are drawn sharp."""
    diff = rec - x
    loss = diff.abs().mean() + diff.pow(2).mean()
    if edge_weight:
        for dim in (2, 3):
            loss = loss + edge_weight * (torch.diff(rec, dim=dim) - torch.diff(x, dim=dim)).abs().mean()
    return loss


# --------------------------------------------------------------------------- phase 2: latents


def encode_latents(recipe: Recipe, work: Path, vae, device: torch.device, progress: Progress | None = None) -> dict:
    """VAE posteriors of a fixed set of training pictures, so the UNet phase draws no pictures."""
    path = work / "latents.pt"
    if path.is_file():
        return _load(path)
    scenes = shapes.training_scenes()
    chunk = 500
    means, stds, labels = [], [], []
    bar = _bar(progress, "Latents", math.ceil(recipe.latent_pictures / chunk), 0)
    with torch.no_grad():
        for index, start in enumerate(range(0, recipe.latent_pictures, chunk)):
            rng, _ = step_rng(recipe, "latents", index)
            pictures, chosen = shapes.random_batch(scenes, min(chunk, recipe.latent_pictures - start), rng)
            posterior = vae.encode(to_tensor(pictures).to(device)).latent_dist
            means.append(posterior.mean.cpu())
            stds.append(posterior.std.cpu())
            labels += [scenes.index(s) for s in chosen]
            bar.update(1)
    bar.close()
    cache = {"mean": torch.cat(means), "std": torch.cat(stds), "scene": torch.tensor(labels)}
    _save(cache, path)
    return cache


# --------------------------------------------------------------------------- phase 3: UNet


def train_unet(recipe: Recipe, work: Path, latents: dict, scaling_factor: float, configs_dir: Path,
               device: torch.device, progress: Progress | None = None):
    """Train text encoder and UNet jointly on cached latents; returns their EMA copies."""
    from diffusers import DDPMScheduler

    from modules.models.loader import build_tokenizer

    folder = work / "unet"
    done = folder / "unet.pt"
    if done.is_file():
        saved = _load(done)
        text_encoder, unet = build_text_encoder(), build_unet()
        text_encoder.load_state_dict(saved["text_encoder"])
        unet.load_state_dict(saved["unet"])
        return text_encoder.to(device), unet.to(device)

    torch.manual_seed(recipe.seed + 1)
    text_encoder, unet = build_text_encoder().to(device), build_unet().to(device)
    ema_text, ema_unet = copy.deepcopy(text_encoder).requires_grad_(False), copy.deepcopy(unet).requires_grad_(False)
    params = list(text_encoder.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, recipe.unet_lr, weight_decay=recipe.unet_weight_decay)
    step = 0
    state_file = folder / "state.pt"
    if state_file.is_file():
        state = _load(state_file)
        for module, key in ((text_encoder, "text_encoder"), (unet, "unet"), (ema_text, "ema_text"), (ema_unet, "ema_unet")):
            module.load_state_dict(state[key])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]

    tokenizer = build_tokenizer(configs_dir)
    scenes = shapes.training_scenes()
    token_cache: dict[str, list[int]] = {}

    def token_ids(captions: list[str]) -> torch.Tensor:
        for caption in captions:
            if caption not in token_cache:
                token_cache[caption] = tokenizer(caption, padding="max_length", max_length=77, truncation=True).input_ids
        return torch.tensor([token_cache[c] for c in captions], device=device)

    schedule = DDPMScheduler.from_config(scheduler_config())
    alphas = schedule.alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    mean, std, labels = latents["mean"], latents["std"], latents["scene"]
    bar = _bar(progress, "Text encoder + UNet", recipe.unet_steps, step)
    text_encoder.train()
    unet.train()
    while step < recipe.unet_steps:
        for group in opt.param_groups:
            group["lr"] = learning_rate(recipe.unet_lr, step, recipe.unet_steps, 100)
        rng, gen = step_rng(recipe, "unet", step)
        index = torch.from_numpy(rng.integers(len(mean), size=recipe.unet_batch))
        b = recipe.unet_batch
        z0 = (mean[index] + std[index] * torch.randn(b, 4, 8, 8, generator=gen)) * scaling_factor
        noise = torch.randn(b, 4, 8, 8, generator=gen) + recipe.offset_noise * torch.randn(b, 4, 1, 1, generator=gen)
        t = torch.randint(0, len(alphas), (b,), generator=gen)
        captions = [shapes.random_caption(scenes[int(labels[i])], rng) for i in index]
        z0, noise, t = z0.to(device), noise.to(device), t.to(device)
        noisy = alphas[t].sqrt().view(-1, 1, 1, 1) * z0 + (1 - alphas[t]).sqrt().view(-1, 1, 1, 1) * noise
        context = text_encoder(token_ids(captions))[0]
        pred = unet(noisy, t, context).sample
        weight = torch.clamp(snr[t], max=recipe.min_snr_gamma) / snr[t]
        loss = (weight * F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(recipe.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for live, ema in ((text_encoder, ema_text), (unet, ema_unet)):
                for p, e in zip(live.parameters(), ema.parameters()):
                    e.lerp_(p, 1 - decay)
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % recipe.checkpoint_every == 0 and step < recipe.unet_steps:
            _save({"text_encoder": text_encoder.state_dict(), "unet": unet.state_dict(),
                   "ema_text": ema_text.state_dict(), "ema_unet": ema_unet.state_dict(),
                   "optimizer": opt.state_dict(), "step": step}, state_file)
    bar.close()
    _save({"text_encoder": ema_text.state_dict(), "unet": ema_unet.state_dict()}, done)
    return ema_text.eval(), ema_unet.eval()


# --------------------------------------------------------------------------- writing


def write_model(path: Path, config_folder: Path, vae, text_encoder, unet, recipe: Recipe) -> None:
    """The A1111 single file (fp16) and the config-only diffusers folder it loads with."""
    from safetensors.torch import save_file

    from modules.models.ldm_keys import to_ldm_state_dict

    tensors = {
        k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in to_ldm_state_dict(ARCH, unet, vae, text_encoder).items()
    }
    metadata = {"modelspec.title": "Demo shapes 64px", "demo_model_recipe": json.dumps(asdict(recipe))}
    with atomic_path(path) as temp:
        save_file(tensors, str(temp), metadata=metadata)
        os.chmod(temp, 0o644)  # a model file, readable like the rest of the checkout

    config_folder.mkdir(parents=True, exist_ok=True)
    _write_json(config_folder / "model_index.json", {
        "_class_name": "StableDiffusionPipeline",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    })
    _write_json(config_folder / "scheduler" / "scheduler_config.json", scheduler_config())
    _write_json(config_folder / "text_encoder" / "config.json",
                {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", **text_encoder_config()})
    _write_json(config_folder / "unet" / "config.json", {"_class_name": "UNet2DConditionModel", **unet_config()})
    _write_json(config_folder / "vae" / "config.json",
                {"_class_name": "AutoencoderKL", **vae_config(float(vae.config.scaling_factor))})


def _write_json(path: Path, data) -> None:
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(data, indent=2) + "\n")


def _save_grid(path: Path, pictures: list[np.ndarray], rows: int) -> None:
    from PIL import Image

    from modules.outputs.saving import make_grid

    grid = make_grid([Image.fromarray(p) for p in pictures], rows=rows)
    with atomic_path(path) as temp:
        grid.save(temp, format="PNG")
