"""Which device and precision to run on, from A1111's flags.

CUDA runs the UNet and text encoder in fp16 and the VAE in fp16 unless told otherwise
(`--no-half`, `--no-half-vae`, `--precision full`); MPS uses fp16 with an fp32 VAE (fp16 VAE
decodes are unreliable there); the CPU always uses fp32. Attention is torch SDPA, the
diffusers default; xformers is used only when asked for and actually usable. On CUDA the
card's VRAM picks the offload mode and the tiled-VAE cap (`auto_memory`), and the flags win.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import torch

log = logging.getLogger(__name__)


GIB = 1 << 30
OFFLOAD_NAMES = {"none": "no offload", "model": "--medvram", "blocks": "--lowvram"}


@dataclass(frozen=True)
class MemoryFlags:
    """The memory flags a user gave. Forge's names are aliases: --always-normal-vram is
    --medvram, --always-low-vram is --lowvram; --always-high-vram turns the automatic choice
    off (nothing offloaded unless another flag says so, no tiled-VAE cap)."""

    medvram: bool = False
    medvram_sdxl: bool = False
    lowvram: bool = False
    always_high_vram: bool = False
    always_normal_vram: bool = False
    always_low_vram: bool = False

    def given(self) -> tuple[str, ...]:
        return tuple("--" + f.name.replace("_", "-") for f in fields(self) if getattr(self, f.name))


@dataclass(frozen=True)
class _Family:
    """What a model family needs on the GPU, in GiB at fp16 (fp32 doubles the weights)."""

    weights: float  # all components
    largest: float  # the UNet, which --medvram holds alone
    working: float  # activations and workspace at its usual size, batch 1-4


# SD 1.x/2.x: UNet 1.6 GiB, text encoder 0.24 (SD 2's OpenCLIP 0.66), VAE 0.16; an SD 1.5-sized
# model at 512 px was measured at 2.65 GiB peak whole and 1.93 GiB with --medvram. SDXL: UNet
# 4.6 GiB, text encoders 0.23 + 1.3, VAE 0.16; its 1024 px activations (batch 2 with CFG) ~1-2 GiB.
# Flux.1 dev in bf16: transformer 22.2 GiB, T5-XXL 8.9, CLIP-L 0.23, VAE 0.16; SD 3.5 large is
# smaller (15.1 + 8.9 + 1.5 GiB). Flow models are planned at Flux dev's size: a 24 GB card streams
# its transformer; an fp8 or GGUF file needs half or less, so --medvram may serve it better.
FAMILIES = {"sd": _Family(weights=2.6, largest=1.7, working=1.0), "sdxl": _Family(weights=6.5, largest=4.8, working=2.0),
            "flow": _Family(weights=31.5, largest=22.2, working=3.0)}
RESERVE_GIB = 0.75  # the CUDA context, cuBLAS/cuDNN workspaces, a desktop on the same card
DECODE_GIB_PER_MP = 3.0  # an untiled fp16 VAE decode (SDXL at 1024x1024 needs ~3 GiB); fp32 doubles it
VAE_GIB = 0.16


def family(arch: str) -> str:
    """The memory family of an architecture: "sd" (1.x/2.x), "sdxl" (base and refiner) or "flow" (Flux, SD 3)."""
    if arch.startswith(("flux", "sd3")):
        return "flow"
    return "sdxl" if arch.startswith("sdxl") else "sd"


@dataclass(frozen=True)
class MemoryPlan:
    """Per model family, the offload mode (modules/generation/offload.py MODES) and the size
    above which the VAE decodes and encodes tiled whatever the setting says (megapixels; 0:
    no cap). The default plan offloads nothing and caps nothing."""

    sd: str = "none"
    sdxl: str = "none"
    tiling_sd: float = 0.0
    tiling_sdxl: float = 0.0
    flow: str = "none"  # Flux and SD 3/3.5
    tiling_flow: float = 0.0

    def offload_for(self, arch: str) -> str:
        return getattr(self, family(arch))

    @property
    def offloads(self) -> bool:
        return any(mode != "none" for mode in (self.sd, self.sdxl, self.flow))

    def tiling_megapixels(self, arch: str, setting: float) -> float:
        """The tiled-VAE threshold to use: the user's `vae_tiling_megapixels` (0: never), lowered
        to this card's cap."""
        cap = getattr(self, "tiling_" + family(arch))
        if cap <= 0:
            return setting
        return cap if setting <= 0 else min(setting, cap)

    def modes(self) -> str:
        others = [f"{label}: {OFFLOAD_NAMES[mode]}" for label, mode in (("SDXL", self.sdxl), ("Flux/SD 3", self.flow)) if mode != self.sd]
        return OFFLOAD_NAMES[self.sd] + (f" ({', '.join(others)})" if others else "")

    def caps(self) -> str:
        if self.tiling_sd <= 0 and self.tiling_sdxl <= 0 and self.tiling_flow <= 0:
            return "no tiled-VAE cap"
        others = [f"{label} {cap:g} MP" for label, cap in (("SDXL", self.tiling_sdxl), ("Flux/SD 3", self.tiling_flow)) if cap != self.tiling_sd]
        return f"tiled VAE above {self.tiling_sd:g} MP" + (f" ({', '.join(others)})" if others else "")


def auto_memory(total_vram_bytes: int | None, flags: MemoryFlags = MemoryFlags(), *, fp32: bool = False,
                vae_fp32: bool = False) -> MemoryPlan:
    """The memory plan for a CUDA card of `total_vram_bytes` (None: unknown, flags only), as
    Forge and SD.Next choose from the VRAM size, with every flag winning over the guess.

    Per family (FAMILIES): the whole model stays on the GPU when its weights plus working
    memory fit in the card less RESERVE_GIB; else --medvram when the UNet alone plus working
    memory fits; else --lowvram. This gives, at fp16: SD 1.5 whole from ~4.4 GiB (6 GB cards),
    --medvram on 4 GB cards (3.6-4 GiB), --lowvram below; SDXL whole from ~9.3 GiB (10-12 GB
    cards), --medvram on 8 GB cards, --lowvram on 6 GB ones. --medvram/--lowvram (and Forge's
    aliases) set both families, --medvram-sdxl only SDXL; --always-high-vram offloads nothing
    the flags do not ask for. The tiled-VAE cap is what is left for an untiled decode (the
    weights on the GPU during a decode: all of them without offload, only the VAE with it)
    divided by DECODE_GIB_PER_MP, rounded down to 0.1 MP; none with --always-high-vram or an
    unknown card. The user's own vae_tiling_megapixels can only lower it."""
    low = flags.lowvram or flags.always_low_vram
    medium = flags.medvram or flags.always_normal_vram
    scale = 2.0 if fp32 else 1.0
    usable = None if total_vram_bytes is None else total_vram_bytes / GIB - RESERVE_GIB
    chosen = {}
    for name, need in FAMILIES.items():
        if low:
            chosen[name] = "blocks"
        elif medium or (name == "sdxl" and flags.medvram_sdxl):
            chosen[name] = "model"
        elif usable is None or flags.always_high_vram or usable >= need.weights * scale + need.working:
            chosen[name] = "none"
        elif usable >= need.largest * scale + need.working:
            chosen[name] = "model"
        else:
            chosen[name] = "blocks"
    caps = {}
    for name, need in FAMILIES.items():
        if usable is None or flags.always_high_vram:
            caps[name] = 0.0
            continue
        resident = need.weights * scale if chosen[name] == "none" else VAE_GIB * (2.0 if vae_fp32 else 1.0)
        per_mp = DECODE_GIB_PER_MP * (2.0 if vae_fp32 else 1.0)
        caps[name] = max(0.1, int(max(0.0, usable - resident) / per_mp * 10) / 10)
    return MemoryPlan(chosen["sd"], chosen["sdxl"], caps["sd"], caps["sdxl"], chosen["flow"], caps["flow"])


def memory_line(gpu: str, total_vram_bytes: int, plan: MemoryPlan, flags: MemoryFlags) -> str:
    """What the console says at start about the card and the plan."""
    return f"GPU {gpu}, {total_vram_bytes / GIB:.1f} GiB VRAM: {plan.modes()}, {plan.caps()} (flags: {' '.join(flags.given()) or 'none'})"


@dataclass(frozen=True)
class DeviceSettings:
    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype
    xformers: bool = False
    memory: MemoryPlan = MemoryPlan()  # offload modes and tiled-VAE caps (CUDA only)

    @property
    def offloads(self) -> bool:
        """Whether models load into system RAM first (see modules/generation/offload.py)."""
        return self.memory.offloads

    def describe(self) -> str:
        def short(d: torch.dtype) -> str:
            return str(d).removeprefix("torch.")

        saving = f", {self.memory.modes()}" if self.memory.offloads else ""
        return (f"{self.device.type} ({short(self.dtype)}, VAE {short(self.vae_dtype)}{', xformers' if self.xformers else ', SDPA attention'}"
                f"{saving})")


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
    always_high_vram: bool = False,
    always_normal_vram: bool = False,
    always_low_vram: bool = False,
) -> DeviceSettings:
    """The device, precisions and, on CUDA, the memory plan from the card's VRAM and the flags
    (said in the console: "GPU <name>, <N> GiB VRAM: <mode>, tiled VAE above <x> MP (flags: ...)")."""
    device = pick_device(use_cpu, device_id)
    flags = MemoryFlags(medvram, medvram_sdxl, lowvram, always_high_vram, always_normal_vram, always_low_vram)
    if device.type != "cuda" and (medvram or medvram_sdxl or lowvram or always_normal_vram or always_low_vram):
        log.warning("--medvram/--lowvram ignored: they save GPU memory on CUDA; %s shares the system's memory.", device.type)
    if device.type == "cpu":
        return DeviceSettings(device, torch.float32, torch.float32)
    full = no_half or precision == "full"
    dtype = torch.float32 if full else torch.float16
    vae_dtype = torch.float32 if (full or no_half_vae or device.type == "mps") else torch.float16
    memory = MemoryPlan()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        memory = auto_memory(props.total_memory, flags, fp32=full, vae_fp32=vae_dtype == torch.float32)
        log.info(memory_line(props.name, props.total_memory, memory, flags))
    return DeviceSettings(device, dtype, vae_dtype, xformers=xformers and xformers_usable(device), memory=memory)


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
    """SDPA (or xformers) attention for a UNet. A Flux/SD3 transformer keeps its own processors,
    which carry its rotary embeddings and joint attention and already call torch SDPA through
    diffusers' attention dispatch (a UNet processor there fails); --xformers picks diffusers'
    xformers backend for them."""
    if not hasattr(unet, "down_blocks"):
        if settings.xformers:
            try:
                unet.set_attention_backend("xformers")
            except Exception as exc:
                log.warning("Could not enable xformers for this model (%s); using torch SDPA attention.", exc)
        return
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
