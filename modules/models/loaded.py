"""The in-memory form of a loaded checkpoint, handed from the loader to the generation core."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from modules.models.arch import SD1_ARCHS

if TYPE_CHECKING:
    import torch

# Architectures outside the SD family (UNet + CLIP): flow-matching transformers with a T5
# encoder, run through their own diffusers pipelines. Everything else is "sd".
FLOW_FAMILIES = MappingProxyType({
    "flux-dev": "flux", "flux-schnell": "flux", "sd3": "sd3", "sd35-medium": "sd3", "sd35-large": "sd3",
})
SDXL_ARCHS = ("sdxl", "sdxl-refiner")


def family_of(arch: str) -> str:
    """"sd" (SD 1/2/XL and the refiner), "flux" or "sd3" (SD 3 and 3.5)."""
    return FLOW_FAMILIES.get(arch, "sd")


@dataclass
class LoadedModel:
    """Everything the generation core needs from one checkpoint.

    Kept as plain components rather than a diffusers pipeline so the core controls the
    sampling loop (progress, interrupt, skip) while staying numerically equal to diffusers.
    """

    arch: str  # one of modules.models.arch.ARCHITECTURES
    unet: Any  # diffusers.UNet2DConditionModel; Flux/SD3: their denoiser transformer
    vae: Any  # diffusers.AutoencoderKL
    text_encoder: Any  # transformers.CLIPTextModel (CLIP-L; SD3: with projection); None for the SDXL refiner (bigG only)
    tokenizer: Any  # transformers.CLIPTokenizer; None for the SDXL refiner
    scheduler_config: dict  # the checkpoint's own scheduler config, the base for every sampler
    device: torch.device
    dtype: torch.dtype  # UNet and text encoders
    vae_dtype: torch.dtype
    text_encoder_2: Any = None  # SDXL and SD3: CLIPTextModelWithProjection (CLIP-G); Flux: T5EncoderModel
    tokenizer_2: Any = None
    text_encoder_3: Any = None  # SD3: T5EncoderModel
    tokenizer_3: Any = None
    source: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def family(self) -> str:
        """"sd", "flux" or "sd3": which generation path and pipeline the model takes."""
        return family_of(self.arch)

    @property
    def is_sdxl(self) -> bool:
        return self.arch in SDXL_ARCHS

    @property
    def honours_clip_skip(self) -> bool:
        """A1111 applies Clip skip to SD 1.x's CLIP-L only: SD2 and SDXL always use their
        penultimate layer."""
        return self.arch in SD1_ARCHS
