"""Tiny Flux.1 and SD 3/3.5 files in the exact key layouts users download, for tests.

Each writer builds small seeded diffusers/transformers modules, converts their state
dicts to the released single-file layouts (BFL's transformer file, Comfy/Forge's
all-in-one Flux file, SAI's SD3 files, the text encoder files users keep in
models/text_encoder) and writes a side-car config folder ``<stem>/`` next to the file,
so the loader finds the reduced configs the way it finds any side-car. The key maps
below are the inverse of diffusers' ``convert_flux_transformer_checkpoint_to_diffusers``
and ``convert_sd3_transformer_checkpoint_to_diffusers``; tests/models/test_flow_tiny.py
checks them against those converters at full size (meta tensors) and at tiny size.

The writers return the diffusers-layout modules (in the written dtype), so a test can
compare what a loader gives back with ``torch.equal``.
"""

from __future__ import annotations

import json
import types
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel, SD3Transformer2DModel
from safetensors.torch import save_file
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
)

from modules.models.ldm_keys import vae_to_ldm

# Widths: CLIP-L 32, CLIP-G 48 (their concatenation, 80, is padded to the T5 width in
# SD3, so T5 must be wider), T5 96. Real: 768, 1280, 4096.
CLIP_L_WIDTH = 32
CLIP_G_WIDTH = 48
T5_WIDTH = 96
T5_VOCAB = 128  # the tiny tokenizer's pieces fit in it (real: 32128 rows for 32100 pieces)

CLIP_L = dict(
    vocab_size=49408, hidden_size=CLIP_L_WIDTH, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
    projection_dim=CLIP_L_WIDTH,
)
CLIP_G = dict(
    vocab_size=49408, hidden_size=CLIP_G_WIDTH, intermediate_size=96, num_hidden_layers=2,
    num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu",
    projection_dim=CLIP_G_WIDTH,
)
# google/t5-v1_1-xxl's structure (gated GELU, untied head, relative buckets) at small width.
T5 = dict(
    vocab_size=T5_VOCAB, d_model=T5_WIDTH, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
    relative_attention_num_buckets=32, relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True,
    tie_word_embeddings=False, layer_norm_epsilon=1e-6,
)
# Both flow families' VAEs: 16 latent channels, no quant convs, four levels (8x).
VAE = dict(
    in_channels=3, out_channels=3, block_out_channels=[32, 32, 32, 32],
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=1, latent_channels=16, norm_num_groups=32, sample_size=64,
    use_quant_conv=False, use_post_quant_conv=False,
)
FLUX_VAE_SCALE = dict(scaling_factor=0.3611, shift_factor=0.1159)
SD3_VAE_SCALE = dict(scaling_factor=1.5305, shift_factor=0.0609)

FLUX = dict(
    patch_size=1, in_channels=64, num_layers=1, num_single_layers=2, attention_head_dim=16,
    num_attention_heads=2, joint_attention_dim=T5_WIDTH, pooled_projection_dim=CLIP_L_WIDTH,
    axes_dims_rope=(4, 6, 6),
)
FLUX_SCHEDULERS = {
    "dev": dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                base_image_seq_len=256, max_image_seq_len=4096),
    "schnell": dict(shift=1.0, use_dynamic_shifting=False, base_shift=0.5, max_shift=1.15,
                    base_image_seq_len=256, max_image_seq_len=4096),
}
SD3 = dict(
    sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
    attention_head_dim=16, num_attention_heads=2, joint_attention_dim=T5_WIDTH,
    caption_projection_dim=32, pooled_projection_dim=CLIP_L_WIDTH + CLIP_G_WIDTH,
    pos_embed_max_size=16,
)
# What tells the three SD3 releases apart structurally: SD3.5 adds RMS q/k norms, and
# SD3.5 medium (MMDiT-X) a second self-attention in its first layers.
SD3_VARIANTS = {
    "sd3": dict(qk_norm=None, dual_attention_layers=()),
    "sd35-large": dict(qk_norm="rms_norm", dual_attention_layers=()),
    "sd35-medium": dict(qk_norm="rms_norm", dual_attention_layers=(0,)),
}

REPO = Path(__file__).resolve().parents[2]
TRANSFORMER_PREFIX = "model.diffusion_model."
CLIP_L_PREFIX = "text_encoders.clip_l.transformer."
CLIP_G_PREFIX = "text_encoders.clip_g.transformer."
T5_PREFIX = "text_encoders.t5xxl.transformer."


# --------------------------------------------------------------------------- modules


def _eval(module):
    module.eval()
    return module


def build_clip_l(projection: bool = False):
    """Flux uses CLIP-L without its projection, SD3 with it."""
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return _eval(cls(CLIPTextConfig(**CLIP_L)))


def build_clip_g():
    return _eval(CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G)))


def build_t5():
    return _eval(T5EncoderModel(T5Config(**T5)))


def build_flux_vae():
    return _eval(AutoencoderKL(**VAE, **FLUX_VAE_SCALE))


def build_sd3_vae():
    return _eval(AutoencoderKL(**VAE, **SD3_VAE_SCALE))


def build_flux(variant: str = "dev", seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> dict:
    """Seeded tiny Flux.1 components in diffusers layout; dev has the guidance embedder."""
    if variant not in FLUX_SCHEDULERS:
        raise ValueError(f"unknown Flux variant {variant!r}")
    torch.manual_seed(seed)
    models = {
        "transformer": _eval(FluxTransformer2DModel(**FLUX, guidance_embeds=variant == "dev")),
        "text_encoder": build_clip_l(),
        "text_encoder_2": build_t5(),
        "vae": build_flux_vae(),
    }
    return {k: m.to(dtype) for k, m in models.items()}


def build_sd3(variant: str = "sd35-medium", seed: int = 0, dtype: torch.dtype = torch.float16) -> dict:
    if variant not in SD3_VARIANTS:
        raise ValueError(f"unknown SD3 variant {variant!r}")
    torch.manual_seed(seed)
    models = {
        "transformer": _eval(SD3Transformer2DModel(**SD3, **SD3_VARIANTS[variant])),
        "text_encoder": build_clip_l(projection=True),
        "text_encoder_2": build_clip_g(),
        "text_encoder_3": build_t5(),
        "vae": build_sd3_vae(),
    }
    # SD3 takes CLIP-L's pooled output unprojected: diffusers' single-file loading sets this
    # projection to the identity whatever a file holds, so the tiny model has it too.
    with torch.no_grad():
        models["text_encoder"].text_projection.weight.copy_(torch.eye(CLIP_L_WIDTH))
    return {k: m.to(dtype) for k, m in models.items()}


# --------------------------------------------------------------------------- key maps


def _final_layer(out: dict, sd: dict) -> None:
    """Flux's and SD 3's last layer: the same names in both released layouts, the adaLN halves swapped."""
    _pair(out, sd, "final_layer.linear", "proj_out")
    for kind in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{kind}"] = _swap_halves(sd.pop(f"norm_out.linear.{kind}"))


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    """BFL/SAI modulations store (shift, scale), diffusers (scale, shift); the swap is its own inverse."""
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def _count(sd, prefix: str) -> int:
    return len({int(k[len(prefix):].split(".", 1)[0]) for k in sd if k.startswith(prefix)})


def _pair(out, sd, dst: str, src: str, biases: bool = True) -> None:
    out[dst + ".weight"] = sd.pop(src + ".weight")
    if biases:
        out[dst + ".bias"] = sd.pop(src + ".bias")


def _fused(out, sd, dst: str, srcs: list[str]) -> None:
    for kind in ("weight", "bias"):
        out[f"{dst}.{kind}"] = torch.cat([sd.pop(f"{s}.{kind}") for s in srcs], dim=0)


def flux_to_bfl(state_dict) -> dict[str, torch.Tensor]:
    """diffusers FluxTransformer2DModel state dict -> BFL's flux1-*.safetensors keys."""
    sd = dict(state_dict)
    out: dict[str, torch.Tensor] = {}
    emb = "time_text_embed."
    for src, dst in (("timestep_embedder", "time_in"), ("text_embedder", "vector_in"),
                     ("guidance_embedder", "guidance_in")):
        if f"{emb}{src}.linear_1.weight" in sd:
            _pair(out, sd, f"{dst}.in_layer", f"{emb}{src}.linear_1")
            _pair(out, sd, f"{dst}.out_layer", f"{emb}{src}.linear_2")
    _pair(out, sd, "txt_in", "context_embedder")
    _pair(out, sd, "img_in", "x_embedder")
    for i in range(_count(sd, "transformer_blocks.")):
        s, d = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        _pair(out, sd, d + "img_mod.lin", s + "norm1.linear")
        _pair(out, sd, d + "txt_mod.lin", s + "norm1_context.linear")
        _fused(out, sd, d + "img_attn.qkv", [s + f"attn.to_{p}" for p in "qkv"])
        _fused(out, sd, d + "txt_attn.qkv", [s + f"attn.add_{p}_proj" for p in "qkv"])
        out[d + "img_attn.norm.query_norm.scale"] = sd.pop(s + "attn.norm_q.weight")
        out[d + "img_attn.norm.key_norm.scale"] = sd.pop(s + "attn.norm_k.weight")
        out[d + "txt_attn.norm.query_norm.scale"] = sd.pop(s + "attn.norm_added_q.weight")
        out[d + "txt_attn.norm.key_norm.scale"] = sd.pop(s + "attn.norm_added_k.weight")
        _pair(out, sd, d + "img_mlp.0", s + "ff.net.0.proj")
        _pair(out, sd, d + "img_mlp.2", s + "ff.net.2")
        _pair(out, sd, d + "txt_mlp.0", s + "ff_context.net.0.proj")
        _pair(out, sd, d + "txt_mlp.2", s + "ff_context.net.2")
        _pair(out, sd, d + "img_attn.proj", s + "attn.to_out.0")
        _pair(out, sd, d + "txt_attn.proj", s + "attn.to_add_out")
    for i in range(_count(sd, "single_transformer_blocks.")):
        s, d = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        _pair(out, sd, d + "modulation.lin", s + "norm.linear")
        _fused(out, sd, d + "linear1", [s + "attn.to_q", s + "attn.to_k", s + "attn.to_v", s + "proj_mlp"])
        out[d + "norm.query_norm.scale"] = sd.pop(s + "attn.norm_q.weight")
        out[d + "norm.key_norm.scale"] = sd.pop(s + "attn.norm_k.weight")
        _pair(out, sd, d + "linear2", s + "proj_out")
    _final_layer(out, sd)
    if sd:
        raise ValueError(f"Flux transformer: no BFL name for {sorted(sd)}")
    return out


def sd3_to_sai(state_dict) -> dict[str, torch.Tensor]:
    """diffusers SD3Transformer2DModel state dict -> SAI's MMDiT keys (sd3*_*.safetensors)."""
    sd = dict(state_dict)
    out: dict[str, torch.Tensor] = {"pos_embed": sd.pop("pos_embed.pos_embed")}
    _pair(out, sd, "x_embedder.proj", "pos_embed.proj")
    _pair(out, sd, "t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1")
    _pair(out, sd, "t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2")
    _pair(out, sd, "context_embedder", "context_embedder")
    _pair(out, sd, "y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1")
    _pair(out, sd, "y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2")
    n = _count(sd, "transformer_blocks.")
    for i in range(n):
        s, x, c = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
        last = i == n - 1  # the last context block only modulates (pre-only): no out proj, no MLP
        _fused(out, sd, x + "attn.qkv", [s + f"attn.to_{p}" for p in "qkv"])
        _fused(out, sd, c + "attn.qkv", [s + f"attn.add_{p}_proj" for p in "qkv"])
        if s + "attn.norm_q.weight" in sd:
            out[x + "attn.ln_q.weight"] = sd.pop(s + "attn.norm_q.weight")
            out[x + "attn.ln_k.weight"] = sd.pop(s + "attn.norm_k.weight")
            out[c + "attn.ln_q.weight"] = sd.pop(s + "attn.norm_added_q.weight")
            out[c + "attn.ln_k.weight"] = sd.pop(s + "attn.norm_added_k.weight")
        _pair(out, sd, x + "attn.proj", s + "attn.to_out.0")
        if not last:
            _pair(out, sd, c + "attn.proj", s + "attn.to_add_out")
        if s + "attn2.to_q.weight" in sd:
            _fused(out, sd, x + "attn2.qkv", [s + f"attn2.to_{p}" for p in "qkv"])
            if s + "attn2.norm_q.weight" in sd:
                out[x + "attn2.ln_q.weight"] = sd.pop(s + "attn2.norm_q.weight")
                out[x + "attn2.ln_k.weight"] = sd.pop(s + "attn2.norm_k.weight")
            _pair(out, sd, x + "attn2.proj", s + "attn2.to_out.0")
        _pair(out, sd, x + "adaLN_modulation.1", s + "norm1.linear")
        if last:
            for kind in ("weight", "bias"):
                out[f"{c}adaLN_modulation.1.{kind}"] = _swap_halves(sd.pop(f"{s}norm1_context.linear.{kind}"))
        else:
            _pair(out, sd, c + "adaLN_modulation.1", s + "norm1_context.linear")
        _pair(out, sd, x + "mlp.fc1", s + "ff.net.0.proj")
        _pair(out, sd, x + "mlp.fc2", s + "ff.net.2")
        if not last:
            _pair(out, sd, c + "mlp.fc1", s + "ff_context.net.0.proj")
            _pair(out, sd, c + "mlp.fc2", s + "ff_context.net.2")
    _final_layer(out, sd)
    if sd:
        raise ValueError(f"SD3 transformer: no SAI name for {sorted(sd)}")
    return out


@contextmanager
def tiny_flux_conversion():
    """Let diffusers read the tiny Flux files: its BFL converter
    (``convert_flux_transformer_checkpoint_to_diffusers``, used by ``from_single_file``)
    splits each single block's fused ``linear1`` at the released width, 3072 (q, k, v and
    the 4x MLP); within this block it splits at the tiny width instead. Test-only: real
    files are 3072 wide. Not thread-safe (it swaps the converter module's ``torch``)."""
    from diffusers.loaders import single_file_utils

    inner = FLUX["num_attention_heads"] * FLUX["attention_head_dim"]
    released = (3072, 3072, 3072, 12288)

    def split(tensor, sizes, dim=0):
        if isinstance(sizes, tuple) and sizes == released:
            sizes = (inner, inner, inner, 4 * inner)
        return torch.split(tensor, sizes, dim=dim)

    saved = single_file_utils.torch
    single_file_utils.torch = types.SimpleNamespace(**{**vars(torch), "split": split})
    try:
        yield
    finally:
        single_file_utils.torch = saved


def t5_keys(model, tied_copy: bool = False) -> dict[str, torch.Tensor]:
    """T5 encoder keys (transformers' names). The standalone file gets ``shared.weight`` only,
    as transformers saves it; SAI's and Comfy's all-in-one files also carry the tied copy
    ``encoder.embed_tokens.weight`` (``tied_copy``). diffusers' single-file T5 loading leaves
    that copy on the meta device when a file lacks it, so a loader must tie it itself."""
    sd = dict(model.state_dict())
    if tied_copy:
        sd["encoder.embed_tokens.weight"] = sd["shared.weight"].clone()
    else:
        sd.pop("encoder.embed_tokens.weight", None)
    return sd


def clip_keys(model) -> dict[str, torch.Tensor]:
    """A CLIP text encoder as clip_l/clip_g.safetensors have it (transformers' own names)."""
    sd = model.state_dict()
    if not any(k.startswith("text_model.") for k in sd):  # transformers 5 flattens CLIPTextModel
        sd = {("text_model." + k if not k.startswith("text_projection") else k): v for k, v in sd.items()}
    return dict(sd)


def _prefixed(prefix: str, sd) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in sd.items()}


# --------------------------------------------------------------------------- side-car folders


def _save(path: Path, sd: dict[str, torch.Tensor], kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(path),
              metadata={"format": "pt", "tiny-test-model": kind})


def write_side_car(folder: Path, pipeline: str, models: dict, scheduler: dict) -> Path:
    """Config-only diffusers folder for ``models`` (no weights), plus the tiny T5 tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": pipeline, "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}
    t5_slot = "text_encoder_2" if pipeline == "FluxPipeline" else "text_encoder_3"
    for name, module in models.items():
        index[name] = [module.__module__.split(".")[0], type(module).__name__]
        if name.startswith("text_encoder"):
            module.config.save_pretrained(folder / name)
            tokenizer = name.replace("text_encoder", "tokenizer")
            if name == t5_slot:
                index[tokenizer] = ["transformers", "T5TokenizerFast"]
                tiny_t5_tokenizer(folder / tokenizer)
            else:
                index[tokenizer] = ["transformers", "CLIPTokenizer"]
        else:
            module.save_config(folder / name)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    FlowMatchEulerDiscreteScheduler(**scheduler).save_config(folder / "scheduler")
    return folder


def side_car(path: Path) -> Path:
    path = Path(path)
    return path.with_suffix("")


# --------------------------------------------------------------------------- writers


def write_flux(path, variant: str = "dev", layout: str = "full", dtype: torch.dtype = torch.bfloat16,
               seed: int = 0) -> dict:
    """Write a tiny Flux.1 file with its side-car ``<stem>/`` and return the diffusers modules.

    layout "full": Comfy/Forge all-in-one (``model.diffusion_model.`` BFL keys,
    ``text_encoders.clip_l.transformer.``, ``text_encoders.t5xxl.transformer.``, ``vae.``
    LDM VAE). layout "transformer": BFL's flux1-dev/schnell.safetensors, bare BFL keys.
    """
    path = Path(path)
    models = build_flux(variant, seed, dtype)
    transformer = flux_to_bfl(models["transformer"].state_dict())
    if layout == "transformer":
        sd = transformer
    elif layout == "full":
        sd = _prefixed(TRANSFORMER_PREFIX, transformer)
        sd.update(_prefixed(CLIP_L_PREFIX, clip_keys(models["text_encoder"])))
        sd.update(_prefixed(T5_PREFIX, t5_keys(models["text_encoder_2"], tied_copy=True)))
        sd.update(_prefixed("vae.", vae_to_ldm(models["vae"].state_dict(), models["vae"].config)))
    else:
        raise ValueError(f"unknown Flux layout {layout!r}")
    _save(path, sd, f"flux-{variant}-{layout}")
    write_side_car(side_car(path), "FluxPipeline", models, FLUX_SCHEDULERS[variant])
    return models


def write_flux_parts(folder, seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> dict:
    """clip_l.safetensors and t5xxl.safetensors (models/text_encoder, as Forge/Comfy users
    keep them) and ae.safetensors (BFL's Flux VAE, bare LDM keys) in ``folder``.

    The modules equal the ones ``write_flux(..., seed=seed)`` builds, so a transformer-only
    file plus these parts is the same model as the full file. clip_l carries its
    text_projection, as the widely shared clip_l.safetensors does (SD3 uses it too).
    """
    folder = Path(folder)
    flux = build_flux("dev", seed, dtype)
    clip_l = clip_keys(flux["text_encoder"])
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn((CLIP_L_WIDTH, CLIP_L_WIDTH), generator=generator) * CLIP_L_WIDTH**-0.5
    clip_l["text_projection.weight"] = projection.to(dtype)
    _save(folder / "clip_l.safetensors", clip_l, "clip_l")
    _save(folder / "t5xxl.safetensors", t5_keys(flux["text_encoder_2"]), "t5xxl")
    _save(folder / "ae.safetensors", vae_to_ldm(flux["vae"].state_dict(), flux["vae"].config), "flux-ae")
    return {"text_encoder": flux["text_encoder"], "text_encoder_2": flux["text_encoder_2"], "vae": flux["vae"]}


def write_sd3(path, variant: str = "sd35-medium", layout: str = "full", dtype: torch.dtype = torch.float16,
              seed: int = 0) -> dict:
    """Write a tiny SD 3 / 3.5 file with its side-car ``<stem>/``; return the diffusers modules.

    layout "full": SAI's incl-clips layout (``model.diffusion_model.`` MMDiT keys,
    ``first_stage_model.`` LDM VAE, ``text_encoders.clip_l/clip_g/t5xxl.transformer.``).
    layout "base": transformer and VAE only, as sd3.5_large/medium.safetensors and
    sd3_medium.safetensors are released (text encoders come from models/text_encoder).
    """
    path = Path(path)
    models = build_sd3(variant, seed, dtype)
    sd = _prefixed(TRANSFORMER_PREFIX, sd3_to_sai(models["transformer"].state_dict()))
    sd.update(_prefixed("first_stage_model.", vae_to_ldm(models["vae"].state_dict(), models["vae"].config)))
    if layout == "full":
        sd.update(_prefixed(CLIP_L_PREFIX, clip_keys(models["text_encoder"])))
        sd.update(_prefixed(CLIP_G_PREFIX, clip_keys(models["text_encoder_2"])))
        sd.update(_prefixed(T5_PREFIX, t5_keys(models["text_encoder_3"], tied_copy=True)))
    elif layout != "base":
        raise ValueError(f"unknown SD3 layout {layout!r}")
    _save(path, sd, f"{variant}-{layout}")
    write_side_car(side_car(path), "StableDiffusion3Pipeline", models, dict(shift=3.0))
    return models


def write_sd3_parts(folder, variant: str = "sd35-medium", seed: int = 0, dtype: torch.dtype = torch.float16) -> dict:
    """clip_l, clip_g and t5xxl .safetensors (models/text_encoder) of ``write_sd3(..., seed=seed)``'s
    encoders; clip_l's projection is not the identity the model uses (see build_sd3)."""
    folder = Path(folder)
    models = build_sd3(variant, seed, dtype)
    clip_l = clip_keys(models["text_encoder"])
    # The clip_l.safetensors users share between Flux and SD3 carries CLIP's own trained
    # projection, which SD3 must not apply (see build_sd3): a loader sets the identity.
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn((CLIP_L_WIDTH, CLIP_L_WIDTH), generator=generator) * CLIP_L_WIDTH**-0.5
    clip_l["text_projection.weight"] = projection.to(dtype)
    _save(folder / "clip_l.safetensors", clip_l, "clip_l")
    _save(folder / "clip_g.safetensors", clip_keys(models["text_encoder_2"]), "clip_g")
    _save(folder / "t5xxl.safetensors", t5_keys(models["text_encoder_3"]), "t5xxl")
    return models


# --------------------------------------------------------------------------- T5 tokenizer

_T5_WORDS = (
    "a an the of and with in on at to photo picture painting portrait landscape cat dog red "
    "blue green yellow white black house tree sky sun mountain river city night day man woman "
    "girl boy car flower forest sea beach cloud snow fire light dark big small old young"
).split()


def tiny_t5_tokenizer(folder) -> Path:
    """Save a small T5 tokenizer (Unigram, T5's special ids: <pad> 0, </s> 1, <unk> 2) that
    loads offline with ``T5TokenizerFast.from_pretrained(folder)``; unknown words fall back
    to single letters, so any ASCII prompt tokenizes."""
    from transformers import T5TokenizerFast

    pieces = ["<pad>", "</s>", "<unk>", "\u2581"]
    pieces += ["\u2581" + w for w in _T5_WORDS]
    pieces += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += [str(d) for d in range(10)] + list(",.!?-'")
    assert len(pieces) <= T5_VOCAB, len(pieces)
    vocab = [(p, 0.0) for p in pieces[:3]] + [(p, -1.0 - 0.01 * i) for i, p in enumerate(pieces[3:])]
    tokenizer = T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)
    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    return folder
