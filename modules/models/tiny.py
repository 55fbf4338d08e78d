"""A tiny SD 1.x-topology model with seeded random weights, for tests and first starts.

Same seed, same software: byte-identical weights. It has SD 1.x's exact key layout (4 UNet
levels, 2 layers per block, cross-attention) at a fraction of the width, so every code path
that a real checkpoint takes is exercised in well under a second per image on a CPU. It draws
coloured noise: it is a test model, not an artist.
"""

from __future__ import annotations

import json
from pathlib import Path

from modules.files import atomic_path

ARCH = "tiny-sd1"
FILE_NAME = "tiny-test-model-random.safetensors"
DEFAULT_SEED = 1234


def _config(configs_dir: Path, part: str) -> dict:
    return json.loads((configs_dir / ARCH / part / "config.json").read_text())


def build_components(configs_dir: Path, seed: int = DEFAULT_SEED, in_channels: int = 4):
    """UNet, VAE and text encoder from `configs/tiny-sd1`, each initialised from its own seed;
    `in_channels=9` gives the inpainting variant's UNet."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config({**_config(configs_dir, "unet"), "in_channels": in_channels})
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL.from_config(_config(configs_dir, "vae"))
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**_config(configs_dir, "text_encoder")))
    return unet.eval(), vae.eval(), text_encoder.eval()


def write_tiny_checkpoint(path: Path, configs_dir: Path, seed: int = DEFAULT_SEED, dtype=None, in_channels: int = 4) -> Path:
    """Write the tiny model as an A1111 single `.safetensors` file (atomically), fp16 by default."""
    import torch
    from safetensors.torch import save_file

    from modules.models.ldm_keys import to_ldm_state_dict

    unet, vae, text_encoder = build_components(configs_dir, seed, in_channels)
    dtype = dtype or torch.float16
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in to_ldm_state_dict(ARCH, unet, vae, text_encoder).items()}
    with atomic_path(path) as temp:
        # One metadata key: safetensors writes a multi-key map in random order.
        save_file({k: v.contiguous() for k, v in state.items()}, str(temp), metadata={"format": "pt"})
    return path
