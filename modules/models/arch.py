"""Telling model architectures apart from a checkpoint's key names and shapes.

Single-file checkpoints carry no config, so the architecture has to be read off the
tensors themselves. Everything here works on a ``{key: shape}`` map that can be read
without loading any weights, so scanning a models folder stays cheap. diffusers' own
detection (``infer_diffusers_model_type``, fed meta tensors) names the family; where it
decides by a released size (SDXL's layer count, SD3's widths) our structural checks
decide instead, so the reduced-width test models are told apart like the real ones.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from types import MappingProxyType

import torch

UNET_PREFIX = "model.diffusion_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1."

# The text encoder width tells real SD1 apart from the project's own small models: the
# tiny random test model and the embedded demo model (see modules/demo).
SD1_TEXT_WIDTHS = MappingProxyType({768: "sd1", 32: "tiny-sd1", 64: "demo-shapes"})

# The first UNet conv: its input channel count is 4 for txt2img models, 9 for inpainting.
UNET_INPUT_CONV = UNET_PREFIX + "input_blocks.0.0.weight"

ARCHITECTURES = (
    "sd1", "sd2", "sdxl", "sdxl-refiner", "tiny-sd1", "demo-shapes",
    "flux-dev", "flux-schnell", "sd3", "sd35-medium", "sd35-large",
)
# Architectures with SD1's layout: one CLIP-L-style text encoder under cond_stage_model.
SD1_ARCHS = ("sd1", "tiny-sd1", "demo-shapes")
FLUX_ARCHS = ("flux-dev", "flux-schnell")
SD3_ARCHS = ("sd3", "sd35-medium", "sd35-large")

SUPPORTED = (
    "this UI runs SD 1.x, SD 2.x, SDXL (base and refiner), SD 3/3.5 and Flux.1 dev/schnell checkpoints"
)
# diffusers' model type -> ours, for the flow families (diffusers decides these by keys).
DIFFUSERS_FLOW_TYPES = MappingProxyType({
    "flux-dev": "flux-dev", "flux-schnell": "flux-schnell",
    "sd3": "sd3", "sd35_medium": "sd35-medium", "sd35_large": "sd35-large",
})
# diffusers' SD model types: our own layout checks below give the architecture for these.
DIFFUSERS_SD_TYPES = (
    "v1", "v2", "xl_base", "xl_refiner", "xl_inpaint", "inpainting", "inpainting_v2", "instruct-pix2pix",
)
# Families diffusers knows that this UI does not run, by the start of diffusers' type name.
FOREIGN_FAMILIES = (
    ("flux-fill", "a Flux Fill (inpainting) model"),
    ("flux-depth", "a Flux Depth model"),
    ("flux-2", "a FLUX.2 model"),
    ("flux-3", "a FLUX.3 model"),
    ("chroma", "a Chroma model"),
    ("playground", "a Playground v2.5 model"),
    ("upscale", "the Stable Diffusion x4 upscaler"),
    ("controlnet", "a ControlNet (put it in models/ControlNet)"),
    ("stable_cascade", "a Stable Cascade model"),
    ("animatediff", "an AnimateDiff motion module"),
    ("auraflow", "an AuraFlow model"),
    ("ltx2", "an LTX-2 video model"),
    ("ltx-video", "an LTX-Video model"),
    ("autoencoder-dc", "a DC-AE autoencoder"),
    ("mochi", "a Mochi video model"),
    ("hunyuan-video", "a HunyuanVideo model"),
    ("lumina2", "a Lumina 2 model"),
    ("sana", "a Sana model"),
    ("wan", "a Wan video model"),
    ("qwen-image", "a Qwen-Image model"),
    ("krea", "a Krea model"),
    ("hidream", "a HiDream model"),
    ("cosmos", "an NVIDIA Cosmos model"),
    ("z-image", "a Z-Image model"),
    ("minimax", "a MiniMax model"),
)

# Structural markers of the flow families' denoisers (with or without UNET_PREFIX).
FLUX_MARKER = "double_blocks.0.img_attn.norm.key_norm.scale"
SD3_MARKER = "joint_blocks.0.context_block.adaLN_modulation.1.bias"
# Parts of an all-in-one file, by key prefix (SAI / Comfy / Forge names).
TEXT_ENCODER_PREFIXES = MappingProxyType({
    "clip_l": ("text_encoders.clip_l.", "cond_stage_model.transformer.", "conditioner.embedders.0.transformer."),
    "clip_g": ("text_encoders.clip_g.",),
    "t5xxl": ("text_encoders.t5xxl.",),
})
VAE_PREFIXES = ("first_stage_model.", "vae.")


class CheckpointReadError(ValueError):
    """A checkpoint file that cannot be read; ``reason`` is the sentence without the path,
    so callers (the loader) can phrase their own message around it."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"Could not read checkpoint {path}: {reason}")


def detect_architecture(shapes: dict[str, tuple]) -> str:
    """Return one of ``ARCHITECTURES`` for a checkpoint's ``{key: shape}`` map.

    diffusers' detection names the family; families it knows but this UI does not run get
    a sentence naming them. Within Stable Diffusion the text encoder layout decides, because
    it is what differs between the families: SDXL has a second (OpenCLIP) embedder, the
    refiner only that one, SD2 has OpenCLIP in place of CLIP-L, SD1 has CLIP-L, whose width
    separates real SD1 (768) from the project's own small models. Flux and SD3 files may
    hold the denoiser alone (BFL's, SAI's and GGUF files) or everything (Comfy/Forge).
    Raises ValueError with a readable sentence for anything else.
    """
    model_type = diffusers_model_type(shapes)
    flow = _flow_architecture(shapes, model_type)
    if flow is not None:
        return flow
    if model_type is not None and model_type not in DIFFUSERS_SD_TYPES:
        raise ValueError(f"this file is {foreign_family(model_type)}; {SUPPORTED}")
    return _sd_architecture(shapes)


def diffusers_model_type(shapes: dict[str, tuple]) -> str | None:
    """diffusers' name for the file's family (``infer_diffusers_model_type``), fed meta
    tensors so no weights are read; None where diffusers' detection itself fails."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    meta = {k: torch.empty(tuple(v), device="meta") for k, v in shapes.items()}
    try:
        return infer_diffusers_model_type(meta)
    except Exception:  # it indexes keys and shapes it assumes; an odd file must not crash a scan
        return None


def foreign_family(model_type: str) -> str:
    """A readable name for a diffusers model type this UI does not run."""
    for start, name in FOREIGN_FAMILIES:
        if model_type.startswith(start):
            return name
    return f"a '{model_type}' model (as diffusers calls it)"


def _denoiser_keys(shapes: dict[str, tuple]) -> set[str]:
    """Keys of a flow denoiser without the all-in-one prefix (bare in BFL/SAI/GGUF files)."""
    return {k.removeprefix(UNET_PREFIX) for k in shapes}


def _flow_architecture(shapes: dict[str, tuple], model_type: str | None) -> str | None:
    """Flux or SD3 by diffusers' answer, else by structure (the tiny test models: diffusers
    tells SD3 releases apart by widths). SD3.5 added RMS q/k norms, SD3.5 medium (MMDiT-X) a
    second self-attention in its first layers."""
    if model_type in DIFFUSERS_FLOW_TYPES:
        return DIFFUSERS_FLOW_TYPES[model_type]
    keys = _denoiser_keys(shapes)
    if FLUX_MARKER in keys:
        if model_type is not None and model_type not in DIFFUSERS_SD_TYPES:
            raise ValueError(f"this file is {foreign_family(model_type)}; {SUPPORTED}")
        return "flux-dev" if "guidance_in.in_layer.bias" in keys else "flux-schnell"
    if SD3_MARKER in keys:
        if any(k.startswith("joint_blocks.") and ".attn2." in k for k in keys):
            return "sd35-medium"
        if any(k.startswith("joint_blocks.") and ".attn.ln_q." in k for k in keys):
            return "sd35-large"
        return "sd3"
    return None


def _sd_architecture(shapes: dict[str, tuple]) -> str:
    if not any(k.startswith(UNET_PREFIX) for k in shapes):
        raise ValueError(
            f"not a Stable Diffusion checkpoint: no UNet weights ('{UNET_PREFIX}*') among its "
            f"{len(shapes)} tensors{_sample_keys(shapes)}{_part_hint(shapes)}"
        )

    if any(k.startswith(SDXL_OPEN_CLIP_PREFIX) for k in shapes):
        arch = "sdxl"
    elif any(k.startswith(SDXL_CLIP_L_PREFIX + "model.") for k in shapes):
        arch = "sdxl-refiner"  # its one embedder is SDXL's second, OpenCLIP bigG
    elif any(k.startswith(SDXL_CLIP_L_PREFIX) for k in shapes):
        raise ValueError(
            "not a supported Stable Diffusion checkpoint: it has only one SDXL-style text "
            "embedder, a CLIP-L one, which no released SDXL model has"
        )
    elif any(k.startswith(SD2_TEXT_PREFIX) for k in shapes):
        arch = "sd2"
    elif any(k.startswith(SD1_TEXT_PREFIX) for k in shapes):
        width = _sd1_text_width(shapes)
        arch = SD1_TEXT_WIDTHS.get(width)
        if arch is None:
            raise ValueError(
                f"not a supported Stable Diffusion checkpoint: SD1-style text encoder of width "
                f"{width}, expected one of {sorted(SD1_TEXT_WIDTHS)}"
            )
    else:
        raise ValueError(
            "not a Stable Diffusion checkpoint: it has UNet weights but no text encoder "
            "('cond_stage_model.*' or 'conditioner.embedders.*')"
        )

    _check_unet_inputs(shapes, arch)
    return arch


def _part_hint(shapes: dict[str, tuple]) -> str:
    """Where a lone text encoder or VAE file belongs, for the 'not a checkpoint' message."""
    if _is_bare_vae(shapes):
        return "; it looks like a VAE file: put it in models/VAE"
    try:
        kind, _ = text_encoder_file_kind(shapes)
    except ValueError:
        return ""
    return f"; it looks like a {'T5' if kind == 't5xxl' else 'CLIP'} text encoder file: put it in models/text_encoder"


def _is_bare_vae(shapes: dict[str, tuple]) -> bool:
    return "decoder.conv_in.weight" in shapes and "encoder.conv_in.weight" in shapes


def file_parts(shapes: dict[str, tuple]) -> frozenset[str]:
    """Which parts a checkpoint file holds: "transformer" (Flux/SD3 denoiser), "unet",
    "clip_l", "clip_g" (SD3's or SDXL's OpenCLIP bigG), "clip_h" (SD2's OpenCLIP),
    "t5xxl", "vae". The loader fetches what a family needs and the file lacks from
    models/text_encoder and models/VAE (BFL's and GGUF files hold the transformer only)."""
    parts = set()
    keys = _denoiser_keys(shapes)
    if FLUX_MARKER in keys or SD3_MARKER in keys:
        parts.add("transformer")
    elif any(k.startswith(UNET_PREFIX) for k in shapes):
        parts.add("unet")
    for part, prefixes in TEXT_ENCODER_PREFIXES.items():
        if any(k.startswith(prefixes) for k in shapes):
            parts.add(part)
    if any(k.startswith((SDXL_OPEN_CLIP_PREFIX, SDXL_CLIP_L_PREFIX + "model.")) for k in shapes):
        parts.add("clip_g")
    if any(k.startswith(SD2_TEXT_PREFIX) for k in shapes):
        parts.add("clip_h")
    if any(k.startswith(VAE_PREFIXES) for k in shapes) or _is_bare_vae(shapes):
        parts.add("vae")
    return frozenset(parts)


def text_encoder_file_kind(shapes: dict[str, tuple]) -> tuple[str, int]:
    """("t5xxl", width) or ("clip", width) for a standalone text encoder file, as Forge and
    Comfy users keep them in models/text_encoder (transformers' key names, no prefix).
    CLIP-L (768) and CLIP-G (1280) differ only in width, so the width is returned for the
    caller to match against the config it loads. Raises ValueError for anything else."""
    t5 = shapes.get("shared.weight") or shapes.get("encoder.embed_tokens.weight")
    if t5 is not None and any(k.startswith("encoder.block.") for k in shapes):
        return "t5xxl", int(t5[-1])
    for key in ("text_model.embeddings.position_embedding.weight", "embeddings.position_embedding.weight"):
        if key in shapes and len(shapes[key]) == 2:
            return "clip", int(shapes[key][-1])
    raise ValueError(
        "not a text encoder file: expected a T5 encoder ('encoder.block.*', 'shared.weight') or a "
        f"CLIP text model ('text_model.*'){_sample_keys(shapes)}"
    )


def unet_in_channels(shapes: dict[str, tuple]) -> int | None:
    """Input channels of the UNet's first conv (4 for txt2img, 9 for inpainting), if present."""
    shape = shapes.get(UNET_INPUT_CONV)
    return int(shape[1]) if shape is not None and len(shape) == 4 else None


INPAINTING_CHANNELS = 9  # latents 4 + mask 1 + masked-image latents 4


def _check_unet_inputs(shapes: dict[str, tuple], arch: str) -> None:
    """txt2img UNets take 4 input channels, inpainting UNets 9 (loaded with the same config
    folder, its `in_channels` raised); anything else (instruct-pix2pix's 8) is not supported."""
    channels = unet_in_channels(shapes)
    if channels is not None and channels not in (4, INPAINTING_CHANNELS):
        raise ValueError(
            f"unsupported {arch} checkpoint: its UNet takes {channels} input channels "
            "(not a txt2img or inpainting model); only 4- and 9-channel checkpoints are supported"
        )


def _sd1_text_width(shapes: dict[str, tuple]) -> int | None:
    """CLIP-L position embedding width; older files lack the ``text_model.`` level."""
    for key in (
        SD1_TEXT_PREFIX + "text_model.embeddings.position_embedding.weight",
        SD1_TEXT_PREFIX + "embeddings.position_embedding.weight",
    ):
        if key in shapes and len(shapes[key]) == 2:
            return int(shapes[key][-1])
    return None


def _sample_keys(shapes: dict[str, tuple], n: int = 3) -> str:
    keys = sorted(shapes)[:n]
    return f" (e.g. {', '.join(keys)})" if keys else ""


def read_checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Read ``{key: shape}`` from a ``.safetensors``, ``.gguf`` or ``.ckpt`` file without loading weights.

    safetensors: only the JSON header is parsed. gguf: the tensor index (a memory map;
    quantized tensors report their logical shape). ckpt: ``torch.load`` with
    ``weights_only=True`` (never plain unpickling) and ``mmap=True`` so tensor data stays
    on disk; an A1111 ``state_dict`` sub-dict is unwrapped. Raises ValueError with a
    readable reason for missing, truncated or foreign files.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointReadError(path, "file does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _safetensors_shapes(path)
    if suffix == ".gguf":
        return gguf_shapes(path)
    if suffix in (".ckpt", ".pt", ".pth", ".bin"):
        state = load_ckpt_state_dict(path)
        return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    raise CheckpointReadError(
        path, f"unsupported file type '{path.suffix}' (expected .safetensors, .gguf or .ckpt)"
    )


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own SafetensorError and OSError
        raise CheckpointReadError(
            path, f"file is truncated or not a safetensors file ({first_line(e)})"
        ) from e


def gguf_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of a GGUF file (city96's Flux/SD3.5 quantizations: the transformer
    alone, under BFL's/SAI's names). GGUF lists dimensions innermost first, torch outermost."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        return {t.name: tuple(int(n) for n in reversed(t.shape.tolist())) for t in reader.tensors}
    except ImportError as e:
        raise CheckpointReadError(path, "reading .gguf files needs the 'gguf' package (pip install gguf)") from e
    except Exception as e:
        raise CheckpointReadError(path, f"file is truncated or not a GGUF file ({first_line(e)})") from e


def load_ckpt_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a pickled checkpoint safely: weights only, memory-mapped where possible.

    ``weights_only=True`` refuses arbitrary Python objects, so a malicious ``.ckpt``
    cannot run code. Legacy (non-zip) files cannot be memory-mapped and are read whole.
    """
    path = Path(path)
    try:
        mmap = zipfile.is_zipfile(path)
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise CheckpointReadError(
            path,
            "it holds Python objects other than tensors, and only weights-only checkpoints "
            f"are loaded ({first_line(e)})",
        ) from e
    except Exception as e:
        raise CheckpointReadError(
            path, f"file is truncated or not a PyTorch checkpoint ({first_line(e)})"
        ) from e
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointReadError(path, f"expected a dict of tensors, got {type(obj).__name__}")
    return obj


def first_line(e: Exception) -> str:
    """The first line of an error, for messages that must stay one sentence."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
