"""diffusers/transformers state dicts -> A1111's original LDM single-file key layout.

Users bring checkpoints in the LDM layout (``model.diffusion_model.*``,
``first_stage_model.*``, ``cond_stage_model.*`` / ``conditioner.embedders.*``). To test
the loader against that layout without shipping real weights we write such files
ourselves from diffusers models. The mapping is driven by the diffusers configs (block
count, layers per block, transformer depth come from the state dict), so tiny test
models and real-size models share one code path. It is the inverse of diffusers'
``loaders/single_file_utils.py`` (``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``,
``convert_open_clip_checkpoint``); the round-trip tests hold the two together.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import torch

from modules.models import arch as layout

UNET_PREFIX = layout.UNET_PREFIX
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = layout.SD1_TEXT_PREFIX + "text_model."
SD2_TEXT_PREFIX = layout.SD2_TEXT_PREFIX
SDXL_TEXT_PREFIX = layout.SDXL_CLIP_L_PREFIX + "transformer.text_model."
SDXL_TEXT2_PREFIX = layout.SDXL_OPEN_CLIP_PREFIX + "model."
# The SDXL refiner has only OpenCLIP bigG, as the first (and only) embedder.
REFINER_TEXT_PREFIX = layout.SDXL_CLIP_L_PREFIX + "model."

SD1_ARCHS = layout.SD1_ARCHS
ARCHS = tuple(dict.fromkeys((*layout.ARCHITECTURES, "sdxl-refiner")))

# Renames inside one resnet: diffusers name -> LDM name.
_UNET_RESNET = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
)
_VAE_RESNET = (("conv_shortcut.", "nin_shortcut."),)
_VAE_ATTENTION = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)
_RENAMES = MappingProxyType(
    {"plain": (), "unet_resnet": _UNET_RESNET, "vae_resnet": _VAE_RESNET, "vae_attention": _VAE_ATTENTION}
)

# The DDPM schedule every SD1/SD2 file was trained with (and stores as buffers).
BETA_START = 0.00085
BETA_END = 0.012
NUM_TRAIN_TIMESTEPS = 1000
EMA_DECAY = 0.9999
# OpenCLIP keeps its contrastive temperature; trained CLIP models end at ln(100).
OPEN_CLIP_LOGIT_SCALE = math.log(100.0)


# --------------------------------------------------------------------------- helpers


def _per_block(value, n: int) -> list[int]:
    """diffusers allows an int or one value per block for layers_per_block."""
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * n


def _count_indexed(keys, prefix: str) -> int:
    """Number of ``prefix{i}.`` sub-modules present, e.g. mid_block.resnets.{i}."""
    found = {int(k[len(prefix) :].split(".", 1)[0]) for k in keys if k.startswith(prefix)}
    return max(found) + 1 if found else 0


def _rename(
    state_dict: Mapping[str, torch.Tensor], table: dict[str, tuple[str, str]], what: str
) -> dict[str, torch.Tensor]:
    """Map every key by its longest matching prefix in ``table``; unknown keys are an error.

    Erroring (rather than passing keys through) keeps the converter honest: a diffusers
    module it does not know would otherwise end up under a name no loader reads.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        for n in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:n]) + "."
            if prefix in table:
                break
        else:
            raise ValueError(f"{what}: no LDM name for diffusers key '{key}'")
        new_prefix, kind = table[prefix]
        rest = key[len(prefix) :]
        for old, new in _RENAMES[kind]:
            if rest.startswith(old):
                rest = new + rest[len(old) :]
                break
        if kind == "vae_attention" and rest.endswith(".weight") and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)  # LDM uses 1x1 convs here
        out[new_prefix + rest] = value
    return out


# --------------------------------------------------------------------------- UNet


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel state dict -> LDM keys (without ``model.diffusion_model.``).

    LDM numbers the UNet as flat lists: ``input_blocks`` holds conv_in, then per down
    block ``layers`` (resnet [+ attention]) entries and a downsampler; ``output_blocks``
    holds ``layers + 1`` entries per up block, the upsampler riding on the last one at
    index 1 (no attention) or 2 (after the attention).
    """
    keys = list(state_dict)
    n = len(config["block_out_channels"])
    layers = _per_block(config["layers_per_block"], n)
    table: dict[str, tuple[str, str]] = {
        "time_embedding.linear_1.": ("time_embed.0.", "plain"),
        "time_embedding.linear_2.": ("time_embed.2.", "plain"),
        "conv_in.": ("input_blocks.0.0.", "plain"),
        "conv_norm_out.": ("out.0.", "plain"),
        "conv_out.": ("out.2.", "plain"),
        # SDXL's text_time embedding and class embeddings both live in label_emb.0
        "add_embedding.linear_1.": ("label_emb.0.0.", "plain"),
        "add_embedding.linear_2.": ("label_emb.0.2.", "plain"),
        "class_embedding.linear_1.": ("label_emb.0.0.", "plain"),
        "class_embedding.linear_2.": ("label_emb.0.2.", "plain"),
    }
    index = 1
    for i in range(n):
        for j in range(layers[i]):
            table[f"down_blocks.{i}.resnets.{j}."] = (f"input_blocks.{index}.0.", "unet_resnet")
            table[f"down_blocks.{i}.attentions.{j}."] = (f"input_blocks.{index}.1.", "plain")
            index += 1
        if any(k.startswith(f"down_blocks.{i}.downsamplers.") for k in keys):
            table[f"down_blocks.{i}.downsamplers.0.conv."] = (f"input_blocks.{index}.0.op.", "plain")
            index += 1

    # middle_block alternates resnet, attention, resnet, ...
    for j in range(_count_indexed(keys, "mid_block.resnets.")):
        table[f"mid_block.resnets.{j}."] = (f"middle_block.{2 * j}.", "unet_resnet")
    for j in range(_count_indexed(keys, "mid_block.attentions.")):
        table[f"mid_block.attentions.{j}."] = (f"middle_block.{2 * j + 1}.", "plain")

    index = 0
    for i, n_layers in enumerate(reversed(layers)):
        has_attention = any(k.startswith(f"up_blocks.{i}.attentions.") for k in keys)
        for j in range(n_layers + 1):
            table[f"up_blocks.{i}.resnets.{j}."] = (f"output_blocks.{index}.0.", "unet_resnet")
            table[f"up_blocks.{i}.attentions.{j}."] = (f"output_blocks.{index}.1.", "plain")
            index += 1
        slot = 2 if has_attention else 1
        table[f"up_blocks.{i}.upsamplers.0.conv."] = (f"output_blocks.{index - 1}.{slot}.conv.", "plain")
    return _rename(state_dict, table, "UNet")


# --------------------------------------------------------------------------- VAE


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL state dict -> LDM keys (without ``first_stage_model.``).

    The decoder's ``up`` list is stored lowest-resolution last, the reverse of diffusers'
    ``up_blocks``; the mid attention's linear layers become 1x1 conv weights.
    """
    n = len(config["down_block_types"])
    layers = int(config["layers_per_block"])
    table: dict[str, tuple[str, str]] = {
        "quant_conv.": ("quant_conv.", "plain"),
        "post_quant_conv.": ("post_quant_conv.", "plain"),
    }
    for part in ("encoder", "decoder"):
        table[f"{part}.conv_in."] = (f"{part}.conv_in.", "plain")
        table[f"{part}.conv_out."] = (f"{part}.conv_out.", "plain")
        table[f"{part}.conv_norm_out."] = (f"{part}.norm_out.", "plain")
        for j in range(_count_indexed(state_dict, f"{part}.mid_block.resnets.")):
            table[f"{part}.mid_block.resnets.{j}."] = (f"{part}.mid.block_{j + 1}.", "vae_resnet")
        table[f"{part}.mid_block.attentions.0."] = (f"{part}.mid.attn_1.", "vae_attention")
    for i in range(n):
        for j in range(layers):
            table[f"encoder.down_blocks.{i}.resnets.{j}."] = (f"encoder.down.{i}.block.{j}.", "vae_resnet")
        table[f"encoder.down_blocks.{i}.downsamplers.0.conv."] = (f"encoder.down.{i}.downsample.conv.", "plain")
        level = n - 1 - i
        for j in range(layers + 1):
            table[f"decoder.up_blocks.{i}.resnets.{j}."] = (f"decoder.up.{level}.block.{j}.", "vae_resnet")
        table[f"decoder.up_blocks.{i}.upsamplers.0.conv."] = (f"decoder.up.{level}.upsample.conv.", "plain")
    return _rename(state_dict, table, "VAE")


# --------------------------------------------------------------------------- text encoders


def _flat_text_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 flattened CLIPTextModel (no ``text_model.``); WithProjection was not."""
    return {k.removeprefix("text_model."): v for k, v in state_dict.items()}


def clip_to_ldm(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel state dict -> ``{prefix}embeddings.*`` etc.

    LDM stores the HF CLIP module as is, under ``...text_model.``, including the
    ``position_ids`` buffer that transformers 5 no longer saves (non-persistent).
    """
    flat = _flat_text_keys(state_dict)
    extra = sorted(k for k in flat if not k.startswith(("embeddings.", "encoder.", "final_layer_norm.")))
    if extra:
        raise ValueError(f"CLIP text encoder: no LDM name for {extra}")
    out = {prefix + k: v for k, v in flat.items()}
    positions = flat["embeddings.position_embedding.weight"]
    out[prefix + "embeddings.position_ids"] = torch.arange(
        positions.shape[0], dtype=torch.int64, device=positions.device
    ).unsqueeze(0)
    return out


def open_clip_to_ldm(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel(WithProjection) -> OpenCLIP layout under ``prefix``.

    OpenCLIP fuses q/k/v into ``attn.in_proj_weight`` (concatenated in that order) and
    applies ``x @ text_projection``, so the projection is the transpose of the HF
    ``nn.Linear`` weight (diffusers' loader transposes it back).
    """
    sd = _flat_text_keys(state_dict)
    out = {
        prefix + "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
        prefix + "positional_embedding": sd.pop("embeddings.position_embedding.weight"),
        prefix + "ln_final.weight": sd.pop("final_layer_norm.weight"),
        prefix + "ln_final.bias": sd.pop("final_layer_norm.bias"),
    }
    if "text_projection.weight" in sd:
        out[prefix + "text_projection"] = sd.pop("text_projection.weight").T.contiguous()
    for i in range(_count_indexed(sd, "encoder.layers.")):
        src = f"encoder.layers.{i}."
        dst = f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}ln_1.{kind}"] = sd.pop(f"{src}layer_norm1.{kind}")
            out[f"{dst}ln_2.{kind}"] = sd.pop(f"{src}layer_norm2.{kind}")
            qkv = [sd.pop(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
            out[f"{dst}attn.out_proj.{kind}"] = sd.pop(f"{src}self_attn.out_proj.{kind}")
            out[f"{dst}mlp.c_fc.{kind}"] = sd.pop(f"{src}mlp.fc1.{kind}")
            out[f"{dst}mlp.c_proj.{kind}"] = sd.pop(f"{src}mlp.fc2.{kind}")
    if sd:
        raise ValueError(f"OpenCLIP text encoder: no LDM name for {sorted(sd)}")
    return out


def _random_like(reference: torch.Tensor, generator: torch.Generator, scale: float = 0.02) -> torch.Tensor:
    if reference.device.type == "meta":
        return torch.empty(reference.shape, dtype=reference.dtype, device="meta")
    values = torch.randn(reference.shape, generator=generator, dtype=torch.float32) * scale
    return values.to(dtype=reference.dtype, device=reference.device)


def _add_sd2_unused_text_weights(out: dict[str, torch.Tensor], prefix: str, seed: int) -> None:
    """Add what a real SD2 file has but diffusers' 23-layer encoder drops.

    SD2 uses the penultimate layer of the 24-layer OpenCLIP ViT-H, so the file carries
    one more resblock and the (unused) ``text_projection``; diffusers ignores both. They
    are filled with seeded random values so written files are reproducible.
    """
    generator = torch.Generator().manual_seed(seed)
    blocks = prefix + "transformer.resblocks."
    count = _count_indexed(out, blocks)
    template = {k[len(f"{blocks}0.") :]: v for k, v in out.items() if k.startswith(f"{blocks}0.")}
    for name, ref in template.items():
        out[f"{blocks}{count}.{name}"] = _random_like(ref, generator)
    if prefix + "text_projection" not in out:
        width = out[prefix + "positional_embedding"].shape[-1]
        ref = out[prefix + "positional_embedding"].new_empty((width, width))
        out[prefix + "text_projection"] = _random_like(ref, generator)


# --------------------------------------------------------------------------- extras


def ddpm_buffers(
    beta_start: float = BETA_START, beta_end: float = BETA_END, steps: int = NUM_TRAIN_TIMESTEPS
) -> dict[str, torch.Tensor]:
    """The noise-schedule buffers and EMA scalars an A1111 SD1/SD2 file carries.

    LDM's DDPM registers them from the scaled_linear schedule (computed in float64,
    stored as float32; v_posterior = 0); loaders ignore them, but real files have them.
    """
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    cumprod = torch.cumprod(alphas, dim=0)
    cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), cumprod[:-1]])
    posterior_variance = betas * (1.0 - cumprod_prev) / (1.0 - cumprod)
    values = {
        "betas": betas,
        "alphas_cumprod": cumprod,
        "alphas_cumprod_prev": cumprod_prev,
        "sqrt_alphas_cumprod": cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / cumprod - 1.0).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * cumprod_prev.sqrt() / (1.0 - cumprod),
        "posterior_mean_coef2": (1.0 - cumprod_prev) * alphas.sqrt() / (1.0 - cumprod),
    }
    out = {k: v.to(torch.float32) for k, v in values.items()}
    out["model_ema.decay"] = torch.tensor(EMA_DECAY, dtype=torch.float32)
    out["model_ema.num_updates"] = torch.tensor(0, dtype=torch.int32)
    return out


# --------------------------------------------------------------------------- public entry points


def to_ldm_state_dict(
    arch: str,
    unet,
    vae,
    text_encoder,
    text_encoder_2=None,
    extras: bool = True,
    seed: int = 0,
    include_unused: bool = True,
) -> dict[str, torch.Tensor]:
    """Full A1111 single-file state dict for diffusers/transformers modules.

    ``arch`` is "sd2", "sdxl", "sdxl-refiner" (``text_encoder`` None: its only encoder is
    ``text_encoder_2``, OpenCLIP bigG under ``conditioner.embedders.0.model.``) or one of the
    SD1-layout ``SD1_ARCHS``. With ``extras`` the DDPM buffers and
    EMA scalars (SD1/SD2) and OpenCLIP's ``logit_scale`` (SD2/SDXL) are added, as real
    files have them. ``include_unused=False`` leaves out SD2's extra resblock and
    text_projection (seeded random, see ``_add_sd2_unused_text_weights``). Tensors are
    shared with the modules, not copied; modules built on the meta device give meta
    tensors (see :func:`ldm_meta_state_dict`).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture '{arch}', expected one of {ARCHS}")
    out = {UNET_PREFIX + k: v for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()}
    out.update({VAE_PREFIX + k: v for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()})
    te = text_encoder.state_dict() if text_encoder is not None else None
    if arch == "sdxl-refiner":
        if text_encoder_2 is None:
            raise ValueError("the SDXL refiner needs text_encoder_2 (the OpenCLIP bigG encoder with projection)")
        out.update(open_clip_to_ldm(text_encoder_2.state_dict(), REFINER_TEXT_PREFIX))
    elif arch in SD1_ARCHS:
        out.update(clip_to_ldm(te, SD1_TEXT_PREFIX))
    elif arch == "sd2":
        out.update(open_clip_to_ldm(te, SD2_TEXT_PREFIX))
        if include_unused:
            _add_sd2_unused_text_weights(out, SD2_TEXT_PREFIX, seed)
    else:
        if text_encoder_2 is None:
            raise ValueError("SDXL needs text_encoder_2 (the OpenCLIP bigG encoder with projection)")
        out.update(clip_to_ldm(te, SDXL_TEXT_PREFIX))
        out.update(open_clip_to_ldm(text_encoder_2.state_dict(), SDXL_TEXT2_PREFIX))
    if extras:
        if arch not in ("sdxl", "sdxl-refiner"):
            out.update(ddpm_buffers())
        if arch in ("sd2", "sdxl", "sdxl-refiner"):
            prefix = {"sd2": SD2_TEXT_PREFIX, "sdxl": SDXL_TEXT2_PREFIX}.get(arch, REFINER_TEXT_PREFIX)
            out[prefix + "logit_scale"] = torch.tensor(OPEN_CLIP_LOGIT_SCALE, dtype=torch.float32)
    return out


def build_meta_models(config_dir: Path, arch: str) -> dict:
    """The diffusers/transformers modules of a config-only folder, on the meta device.

    Meta tensors carry shapes and dtypes but no storage, so a full SDXL costs nothing.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config_dir = Path(config_dir)

    def read(sub: str) -> dict:
        return json.loads((config_dir / sub / "config.json").read_text())

    with torch.device("meta"):
        models = {
            "unet": UNet2DConditionModel.from_config(read("unet")),
            "vae": AutoencoderKL.from_config(read("vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**read("text_encoder"))) if arch != "sdxl-refiner" else None,
        }
        if arch in ("sdxl", "sdxl-refiner"):
            config = CLIPTextConfig(**read("text_encoder_2"))
            models["text_encoder_2"] = CLIPTextModelWithProjection(config)
    return models


def ldm_meta_state_dict(arch: str, config_dir: Path, extras: bool = True) -> dict[str, torch.Tensor]:
    """LDM keys of a model described by a config-only folder, as meta tensors.

    Floating point weights are meta tensors; the small extras (DDPM buffers, position
    ids, EMA scalars) are real. Feed this to :func:`write_random_safetensors`.
    """
    return to_ldm_state_dict(arch, **build_meta_models(config_dir, arch), extras=extras)


def ldm_shapes(arch: str, config_dir: Path, extras: bool = True) -> dict[str, tuple[int, ...]]:
    """``{LDM key: shape}`` of a model described by a config-only folder, without weights."""
    return {k: tuple(v.shape) for k, v in ldm_meta_state_dict(arch, config_dir, extras).items()}


def ldm_required_shapes(arch: str, config_dir: Path) -> dict[str, tuple[int, ...]]:
    """The LDM tensors a loader actually reads for this config, with their shapes.

    Leaves out what loaders ignore (DDPM buffers, EMA scalars, ``position_ids``, SD2's
    unused resblock and projection), so checking a file against it flags exactly the
    tensors that are missing or mis-shaped before diffusers fails less readably.
    """
    meta = to_ldm_state_dict(arch, **build_meta_models(config_dir, arch), extras=False, include_unused=False)
    return {k: tuple(v.shape) for k, v in meta.items() if not k.endswith(".position_ids")}


# --------------------------------------------------------------------------- writing test files

_SAFETENSORS_DTYPES = MappingProxyType(
    {
        torch.float64: "F64",
        torch.float32: "F32",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.int64: "I64",
        torch.int32: "I32",
        torch.int16: "I16",
        torch.int8: "I8",
        torch.uint8: "U8",
        torch.bool: "BOOL",
    }
)


def write_random_safetensors(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    dtype: torch.dtype = torch.float16,
    seed: int = 0,
    scale: float = 0.02,
    pool_size: int = 1 << 22,
) -> None:
    """Stream a safetensors file whose meta tensors are filled with seeded random values.

    Writes a real-size checkpoint (GBs) with a few MB of memory: values are slices of one
    seeded random pool taken at seeded offsets, written straight to disk. Real (non-meta)
    tensors are written as they are; meta integer tensors become ``arange`` for
    ``position_ids`` and zeros otherwise. Floating point tensors are stored as ``dtype``.
    """
    generator = torch.Generator().manual_seed(seed)
    pool = (torch.randn(pool_size, generator=generator) * scale).to(dtype)
    specs = []
    offset = 0
    for key in sorted(tensors):
        t = tensors[key]
        t_dtype = dtype if t.is_floating_point() else t.dtype
        nbytes = t.numel() * t_dtype.itemsize
        specs.append((key, t, t_dtype, offset, offset + nbytes))
        offset += nbytes
    header = {
        key: {"dtype": _SAFETENSORS_DTYPES[d], "shape": list(t.shape), "data_offsets": [start, end]}
        for key, t, d, start, end in specs
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)  # data must start 8-byte aligned

    with open(path, "wb") as f:
        f.write(len(header_bytes).to_bytes(8, "little"))
        f.write(header_bytes)
        for key, t, t_dtype, _, _ in specs:
            if t.device.type != "meta":
                _write_tensor(f, t.to(t_dtype))
            elif t.is_floating_point():
                remaining = t.numel()
                start = int(torch.randint(pool_size, (1,), generator=generator))
                while remaining:
                    chunk = pool[start : start + remaining]
                    _write_tensor(f, chunk)
                    remaining -= chunk.numel()
                    start = 0
            elif key.endswith("position_ids"):
                _write_tensor(f, torch.arange(t.shape[-1], dtype=t_dtype).expand(t.shape))
            else:
                _write_tensor(f, torch.zeros(t.shape, dtype=t_dtype))


def _write_tensor(f, t: torch.Tensor) -> None:
    f.write(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
