"""The in-memory form of a loaded checkpoint, handed from the loader to the generation core."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.models.arch import SD1_ARCHS

if TYPE_CHECKING:
    import torch


@dataclass
class LoadedModel:
    """Everything the generation core needs from one checkpoint.

    Kept as plain components rather than a diffusers pipeline so the core controls the
    sampling loop (progress, interrupt, skip) while staying numerically equal to diffusers.
    """

    arch: str  # one of modules.models.arch.ARCHITECTURES
    unet: Any  # diffusers.UNet2DConditionModel
    vae: Any  # diffusers.AutoencoderKL
    text_encoder: Any  # transformers.CLIPTextModel
    tokenizer: Any  # transformers.CLIPTokenizer
    scheduler_config: dict  # the checkpoint's own scheduler config, the base for every sampler
    device: torch.device
    dtype: torch.dtype  # UNet and text encoders
    vae_dtype: torch.dtype
    text_encoder_2: Any = None  # SDXL: CLIPTextModelWithProjection
    tokenizer_2: Any = None
    source: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    @property
    def honours_clip_skip(self) -> bool:
        """A1111 applies Clip skip to SD 1.x's CLIP-L only: SD2 and SDXL always use their
        penultimate layer."""
        return self.arch in SD1_ARCHS
