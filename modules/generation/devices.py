"""Which device and precision to run on, from A1111's flags.

CUDA runs the UNet and text encoder in fp16 and the VAE in fp16 unless told otherwise
(`--no-half`, `--no-half-vae`, `--precision full`); MPS uses fp16 with an fp32 VAE (fp16 VAE
decodes are unreliable there); the CPU always uses fp32. Attention is torch SDPA, the
diffusers default; xformers is used only when asked for and actually usable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceSettings:
    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype
    xformers: bool = False
    medvram: bool = False  # --medvram: one model component on the GPU at a time
    medvram_sdxl: bool = False  # --medvram-sdxl: the same, for SDXL models only
    lowvram: bool = False  # --lowvram: and the UNet block by block

    @property
    def offloads(self) -> bool:
        """Whether models load into system RAM first (see modules/generation/offload.py)."""
        return self.medvram or self.medvram_sdxl or self.lowvram

    def describe(self) -> str:
        def short(d: torch.dtype) -> str:
            return str(d).removeprefix("torch.")

        saving = [flag for flag, on in (("lowvram", self.lowvram), ("medvram", self.medvram), ("medvram-sdxl", self.medvram_sdxl)) if on]
        return (f"{self.device.type} ({short(self.dtype)}, VAE {short(self.vae_dtype)}{', xformers' if self.xformers else ', SDPA attention'}"
                f"{''.join(', ' + f for f in saving[:1])})")


def pick_device(use_cpu: bool = False, device_id: int | None = None) -> torch.device:
    if not use_cpu and torch.cuda.is_available():
        return torch.device("cuda", device_id or 0)
    if not use_cpu and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_settings(
    *,
    use_cpu: bool = False,
    device_id: int | None = None,
    precision: str = "autocast",
    no_half: bool = False,
    no_half_vae: bool = False,
    xformers: bool = False,
    medvram: bool = False,
    medvram_sdxl: bool = False,
    lowvram: bool = False,
) -> DeviceSettings:
    device = pick_device(use_cpu, device_id)
    if (medvram or medvram_sdxl or lowvram) and device.type != "cuda":
        log.warning("--medvram/--lowvram ignored: they save GPU memory on CUDA; %s shares the system's memory.", device.type)
        medvram = medvram_sdxl = lowvram = False
    if device.type == "cpu":
        return DeviceSettings(device, torch.float32, torch.float32)
    full = no_half or precision == "full"
    dtype = torch.float32 if full else torch.float16
    vae_dtype = torch.float32 if (full or no_half_vae or device.type == "mps") else torch.float16
    return DeviceSettings(device, dtype, vae_dtype, xformers=xformers and xformers_usable(device),
                          medvram=medvram, medvram_sdxl=medvram_sdxl, lowvram=lowvram)


def xformers_usable(device: torch.device) -> bool:
    """xformers installs on CPU-only machines but cannot run there; say so instead of failing."""
    if device.type != "cuda":
        log.warning("--xformers ignored: xformers needs a CUDA GPU; using torch SDPA attention.")
        return False
    try:
        import xformers.ops  # noqa: F401
    except Exception as exc:  # ImportError, or a build for another torch/CUDA
        log.warning("--xformers ignored: xformers is not usable here (%s); using torch SDPA attention.", exc)
        return False
    return True


def apply_attention(unet, settings: DeviceSettings) -> None:
    if settings.xformers:
        try:
            unet.enable_xformers_memory_efficient_attention()
            return
        except Exception as exc:
            log.warning("Could not enable xformers (%s); using torch SDPA attention.", exc)
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())


def free_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
