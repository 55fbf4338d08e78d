"""Tiny random ControlNets in the layouts users download, for tests.

A ControlNet must match its checkpoint's UNet, so each one is made from a tiny UNet config
(`ControlNetModel.from_unet`), then every weight is re-drawn from a seed: from_unet leaves the
zero convolutions at zero, and a ControlNet whose residuals are all zero would let a broken
loader pass. Writers give the three layouts of the wild: the LDM single file of ControlNet
1.0/1.1 (`control_model.*` keys), a single file in diffusers' key layout (as
`diffusers_xl_canny_full.safetensors` is distributed), and a diffusers folder.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]

# Tiny UNets in each family's real layout (SD1: conv projections, cross-attention everywhere
# but the last level; SD2: linear projections; SDXL: text_time embedding, no attention at the
# first level, deeper transformers below). tiny-sd1 and demo-shapes are the project's own.
SD2_UNET = {
    "block_out_channels": [32, 64, 64], "layers_per_block": 2, "cross_attention_dim": 64,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "attention_head_dim": [2, 4, 4], "use_linear_projection": True, "upcast_attention": True, "sample_size": 8,
}
SDXL_UNET = {
    "block_out_channels": [32, 64], "layers_per_block": 2, "cross_attention_dim": 80,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2], "attention_head_dim": [2, 4], "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 40 + 6 * 8,
    "sample_size": 8,
}


def unet_config(arch: str) -> dict:
    """A tiny UNet config for `arch`: the shipped ones for the project's models, else above."""
    if arch in ("tiny-sd1", "demo-shapes"):
        return json.loads((REPO / "configs" / arch / "unet" / "config.json").read_text())
    return {"sd2": SD2_UNET, "sdxl": SDXL_UNET}[arch]


def tiny_unet(arch: str, seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel.from_config(unet_config(arch)).eval()


def tiny_loaded_model(arch: str, seed: int = 0, name: str | None = None):
    """A LoadedModel holding only a tiny UNet: what the ControlNet library reads of a checkpoint."""
    from modules.models.loaded import LoadedModel

    source = Path(f"{name or 'tiny-' + arch}.safetensors")
    return LoadedModel(arch=arch, unet=tiny_unet(arch, seed), vae=None, text_encoder=None, tokenizer=None, scheduler_config={},
                       device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32, source=source)


def tiny_controlnet(unet, seed: int = 0, conditioning_channels: int = 3):
    """A ControlNet for `unet` with every weight drawn from `seed` (small, so outputs stay finite)."""
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_unet(unet, conditioning_channels=conditioning_channels)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in controlnet.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return controlnet.eval()


def to_ldm(controlnet) -> dict[str, torch.Tensor]:
    """The ControlNet 1.x LDM layout (`control_model.input_blocks...`, `input_hint_block`,
    `zero_convs`, `middle_block_out`): the UNet-shaped half through the project's UNet key
    converter, the ControlNet-only parts by their fixed names."""
    from modules.models.ldm_keys import unet_to_ldm

    state = controlnet.state_dict()
    config = dict(controlnet.config)
    unet_part = {k: v for k, v in state.items() if k.split(".")[0] in ("conv_in", "time_embedding", "add_embedding", "class_embedding",
                                                                        "down_blocks", "mid_block")}
    out = unet_to_ldm(unet_part, config)
    blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("controlnet_cond_embedding.blocks.")})
    for suffix in ("weight", "bias"):
        out[f"input_hint_block.0.{suffix}"] = state[f"controlnet_cond_embedding.conv_in.{suffix}"]
        for j in blocks:
            out[f"input_hint_block.{2 * (j + 1)}.{suffix}"] = state[f"controlnet_cond_embedding.blocks.{j}.{suffix}"]
        out[f"input_hint_block.{2 * (len(blocks) + 1)}.{suffix}"] = state[f"controlnet_cond_embedding.conv_out.{suffix}"]
        for i in range(len(controlnet.controlnet_down_blocks)):
            out[f"zero_convs.{i}.0.{suffix}"] = state[f"controlnet_down_blocks.{i}.{suffix}"]
        out[f"middle_block_out.0.{suffix}"] = state[f"controlnet_mid_block.{suffix}"]
    return {"control_model." + k: v for k, v in out.items()}


def write_controlnet(controlnet, path: Path, layout: str = "ldm", dtype: torch.dtype = torch.float16) -> Path:
    """Write `controlnet` at `path` as `layout`: "ldm" (.safetensors, or a weights-only .pth /
    .ckpt), "diffusers-file" (one safetensors of diffusers keys) or "diffusers-folder"."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "diffusers-folder":  # a copy, so the caller's model keeps its precision
        copy.deepcopy(controlnet).to(dtype).save_pretrained(path, safe_serialization=True)
        return path
    state = to_ldm(controlnet) if layout == "ldm" else dict(controlnet.state_dict())
    if layout not in ("ldm", "diffusers-file"):
        raise ValueError(f"unknown layout {layout!r}")
    state = {k: v.detach().to(dtype).contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path), metadata={"format": "pt"})
    else:
        torch.save(state, path)
    return path


def run_controlnet(controlnet, seed: int = 1, latent: int = 8) -> list[torch.Tensor]:
    """The residuals (down blocks, then mid) of one call on seeded inputs: an 8x8 latent and its
    64 px hint, a few tokens of context, and SDXL's pooled embedding and time ids where needed."""
    config = controlnet.config
    param = next(controlnet.parameters())
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(param.device, param.dtype)

    kwargs = {}
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]], device=param.device, dtype=param.dtype)
        kwargs["added_cond_kwargs"] = {"text_embeds": randn(1, pooled), "time_ids": time_ids}
    hint = torch.rand(1, config.conditioning_channels, latent * 8, latent * 8, generator=generator).to(param.device, param.dtype)
    with torch.no_grad():
        down, mid = controlnet(randn(1, 4, latent, latent), torch.tensor([500]), encoder_hidden_states=randn(1, 8, config.cross_attention_dim),
                               controlnet_cond=hint, return_dict=False, **kwargs)
    return [*down, mid]
