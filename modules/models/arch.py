"""Telling Stable Diffusion architectures apart from a checkpoint's key names and shapes.

Single-file checkpoints carry no config, so the architecture has to be read off the
tensors themselves. Everything here works on a ``{key: shape}`` map that can be read
without loading any weights, so scanning a models folder stays cheap.
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

ARCHITECTURES = ("sd1", "sd2", "sdxl", "tiny-sd1", "demo-shapes")
# Architectures with SD1's layout: one CLIP-L-style text encoder under cond_stage_model.
SD1_ARCHS = ("sd1", "tiny-sd1", "demo-shapes")


class CheckpointReadError(ValueError):
    """A checkpoint file that cannot be read; ``reason`` is the sentence without the path,
    so callers (the loader) can phrase their own message around it."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"Could not read checkpoint {path}: {reason}")


def detect_architecture(shapes: dict[str, tuple]) -> str:
    """Return one of ``ARCHITECTURES`` for a checkpoint's ``{key: shape}`` map.

    The text encoder layout decides, because it is what differs between the families:
    SDXL has a second (OpenCLIP) embedder, SD2 has OpenCLIP in place of CLIP-L, SD1 has
    CLIP-L, whose width separates real SD1 (768) from the project's own small models.
    Raises ValueError with a readable sentence for anything else.
    """
    if not any(k.startswith(UNET_PREFIX) for k in shapes):
        raise ValueError(
            f"not a Stable Diffusion checkpoint: no UNet weights ('{UNET_PREFIX}*') among its "
            f"{len(shapes)} tensors{_sample_keys(shapes)}"
        )

    if any(k.startswith(SDXL_OPEN_CLIP_PREFIX) for k in shapes):
        arch = "sdxl"
    elif any(k.startswith(SDXL_CLIP_L_PREFIX) for k in shapes):
        raise ValueError(
            "not a supported Stable Diffusion checkpoint: it has only one SDXL-style text "
            "embedder, which looks like the SDXL refiner (not supported)"
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
    """Read ``{key: shape}`` from a ``.safetensors`` or ``.ckpt`` file without loading weights.

    safetensors: only the JSON header is parsed. ckpt: ``torch.load`` with
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
    if suffix in (".ckpt", ".pt", ".pth", ".bin"):
        state = load_ckpt_state_dict(path)
        return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    raise CheckpointReadError(
        path, f"unsupported file type '{path.suffix}' (expected .safetensors or .ckpt)"
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
