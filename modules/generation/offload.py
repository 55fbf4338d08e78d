"""A1111's --medvram and --lowvram: keep a model in system RAM and give the GPU only the part
that is running, for cards with less memory than the whole model needs.

- "model" (--medvram, or --medvram-sdxl on SDXL): one component at a time (text encoders,
  UNet, VAE), each moved to the GPU when it runs and back when the next one starts.
- "blocks" (--lowvram): the same, and the UNet goes block by block (each down block, the
  middle block, each up block); its small layers stay on the GPU.

The moves are accelerate's CPU-offload hooks, chained in a ring so that whatever runs sends
the previous part home, also across jobs (the VAE of one job, the text encoder of the next).
diffusers routes the VAE's encode/decode through these hooks too. Slower than keeping all on
the GPU (every step moves the blocks, with "blocks"); the images are the same.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from modules.models.loaded import LoadedModel

log = logging.getLogger(__name__)

MODES = ("none", "model", "blocks")
_UNET_BLOCKS = ("down_blocks", "mid_block", "up_blocks")


def offload(model: "LoadedModel", device: torch.device, mode: str) -> None:
    """Install the hooks on a model loaded on the CPU; `model.device` becomes `device`, where
    the core puts its tensors. "none" moves the whole model to `device` instead."""
    if mode not in MODES:
        raise ValueError(f"Unknown offload mode {mode!r}; use one of {', '.join(MODES)}.")
    parts = [m for m in (model.text_encoder, model.text_encoder_2) if m is not None]
    if mode == "none":
        for module in (*parts, model.unet, model.vae):
            module.to(device)
    elif mode == "model":
        parts += [model.unet]
    else:
        resident = [child for name, child in model.unet.named_children() if name not in _UNET_BLOCKS]
        for module in resident:
            module.to(device)
        blocks = [*model.unet.down_blocks, *([model.unet.mid_block] if model.unet.mid_block is not None else []), *model.unet.up_blocks]
        parts += blocks
    if mode != "none":
        _ring([*parts, model.vae], device)
    model.device = torch.device(device)


def _ring(modules: list[torch.nn.Module], device: torch.device) -> None:
    """Chain offload hooks in order, and close the ring: the first one's run sends the last
    one home, so no part stays on the GPU after its turn."""
    from accelerate import cpu_offload_with_hook

    hooks = []
    previous = None
    for module in modules:
        _, previous = cpu_offload_with_hook(module, device, prev_module_hook=previous)
        hooks.append(previous)
    if len(hooks) > 1:
        hooks[0].hook.prev_module_hook = hooks[-1]


def mode_for(arch: str, *, medvram: bool = False, medvram_sdxl: bool = False, lowvram: bool = False) -> str:
    """Which offload a model of `arch` gets from the flags (--lowvram wins over --medvram)."""
    if lowvram:
        return "blocks"
    if medvram or (medvram_sdxl and arch.startswith("sdxl")):
        return "model"
    return "none"
