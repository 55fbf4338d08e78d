"""Loading Flux.1 and SD 3/3.5 (flow-matching transformers) into a LoadedModel, offline.

Users get these models in three shapes, and all three load here:

* full single files (Comfy/Forge all-in-one Flux, SAI's SD3 files with their text encoders):
  every part comes from the file;
* partial single files (BFL's flux1-dev.safetensors, GGUF transformers, sd3.5_large.safetensors
  with only the transformer and VAE): the parts the file lacks come from ``models/text_encoder/``
  (CLIP-L, CLIP-G, T5-XXL, told apart by their tensors and widths) and ``models/VAE/``, as
  Forge organises them;
* diffusers folders (model_index.json naming FluxPipeline or StableDiffusion3Pipeline).

Each single file is read once (diffusers' ``load_single_file_checkpoint``) and each part is
built by diffusers' single-file loaders or transformers' ``from_pretrained`` from that dict,
with the config from a local config-only folder (``configs/<arch>/`` or a side-car). A
transformer stored in float8 keeps fp8 storage (diffusers' layerwise casting, computing in
the asked dtype); a GGUF transformer stays quantized (diffusers' GGUFQuantizationConfig).

The T5 tokenizer comes from the config or diffusers folder, else the user's
``models/text_encoder/t5-tokenizer/``, else the one shipped in ``configs/t5-tokenizer/``
(T5 v1.1's vocabulary, which Flux and SD 3 use unchanged).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # light at import: the app builds PartFolders before torch is wanted
    import torch

    from modules.models.loaded import LoadedModel

log = logging.getLogger(__name__)

GGUF_EXTENSION = ".gguf"  # quantized transformer files (city96's Flux/SD3.5 GGUFs), loaded through diffusers' GGUF support
T5_TOKENIZER_DIR = "t5-tokenizer"  # under models/text_encoder/ (the user's) and configs/ (shipped)
T5_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
T5_TOKENIZER_SOURCES = "google/t5-v1_1-xxl, or the tokenizer_2 folder of black-forest-labs/FLUX.1-schnell"
FP8_DTYPES = ("F8_E4M3", "F8_E5M2")  # safetensors' names for torch.float8_e4m3fn / float8_e5m2
VAE_PREFIXES = ("vae.", "first_stage_model.")  # as modules.models.arch has them, without importing torch here
PART_PREFIX = "text_encoders.{}.transformer."  # an encoder inside a Comfy/SAI single file


@dataclass(frozen=True)
class PartFolders:
    """Where partial checkpoints find their other parts: the text encoders (Forge's
    models/text_encoder) and VAEs (models/VAE). Owned by the ModelManager."""

    text_encoders: tuple[Path, ...] = ()
    vaes: tuple[Path, ...] = ()

    @property
    def t5_tokenizer(self) -> Path:
        """Where the user puts the T5 tokenizer files."""
        base = self.text_encoders[0] if self.text_encoders else Path("models") / "text_encoder"
        return base / T5_TOKENIZER_DIR


@dataclass(frozen=True)
class _Encoder:
    slot: str  # the pipeline's component name: text_encoder, text_encoder_2, text_encoder_3
    part: str  # clip_l, clip_g, t5xxl
    cls: str  # transformers class


@dataclass(frozen=True)
class _Family:
    pipeline: str
    transformer: str
    encoders: tuple[_Encoder, ...]

    @property
    def t5_slot(self) -> str:
        return next(e.slot for e in self.encoders if e.part == "t5xxl")


FAMILIES = {
    "flux": _Family("FluxPipeline", "FluxTransformer2DModel", (
        _Encoder("text_encoder", "clip_l", "CLIPTextModel"), _Encoder("text_encoder_2", "t5xxl", "T5EncoderModel"))),
    "sd3": _Family("StableDiffusion3Pipeline", "SD3Transformer2DModel", (
        _Encoder("text_encoder", "clip_l", "CLIPTextModelWithProjection"),
        _Encoder("text_encoder_2", "clip_g", "CLIPTextModelWithProjection"),
        _Encoder("text_encoder_3", "t5xxl", "T5EncoderModel"))),
}
# What the user is told to put where, per missing part.
PART_NAMES = {
    "clip_l": ("a CLIP-L text encoder", "clip_l.safetensors"),
    "clip_g": ("a CLIP-G text encoder", "clip_g.safetensors"),
    "t5xxl": ("a T5-XXL text encoder", "t5xxl_fp16.safetensors (or t5xxl_fp8_e4m3fn.safetensors)"),
}
VAE_NAMES = {"flux": ("the 16-channel Flux VAE", "ae.safetensors"), "sd3": ("the 16-channel SD3 VAE", "sd3_vae.safetensors")}


# --------------------------------------------------------------------------- part files


@dataclass(frozen=True)
class _PartFile:
    path: Path
    kind: str  # "clip", "t5xxl" or "vae"
    width: int  # the encoder's hidden width; the VAE's latent channels
    fp8: bool


def _read_header(path: Path) -> tuple[dict[str, tuple], set[str]] | None:
    """({key: shape}, dtypes) of a .safetensors file from its header, or None if unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            return {k: tuple(s.get_shape()) for k, s in slices.items()}, {s.get_dtype() for s in slices.values()}
    except Exception:  # a broken or foreign file is simply not a candidate
        return None


def _classify(path: Path) -> _PartFile | None:
    """What a file in models/text_encoder or models/VAE is, from its tensor names and shapes
    (CLIP-L and CLIP-G differ only in width, which the caller matches against its config)."""
    from modules.models.arch import text_encoder_file_kind

    read = _read_header(path)
    if read is None:
        return None
    shapes, dtypes = read
    if any(k.endswith("scale_weight") or k == "scaled_fp8" for k in shapes):
        log.info("Skipping %s: scaled fp8 files (Comfy's *_scaled) are not supported", path.name)
        return None
    fp8 = bool(dtypes & set(FP8_DTYPES))
    try:
        kind, width = text_encoder_file_kind(shapes)
        return _PartFile(path, kind, width, fp8)
    except ValueError:
        pass
    for prefix in ("", *VAE_PREFIXES):
        conv = shapes.get(prefix + "decoder.conv_in.weight")
        if conv is not None and len(conv) == 4:
            return _PartFile(path, "vae", int(conv[1]), fp8)
    return None


def _candidates(folders: tuple[Path, ...]) -> list[_PartFile]:
    found = []
    for folder in folders:
        if Path(folder).is_dir():
            for path in sorted(Path(folder).rglob("*.safetensors")):
                part = _classify(path)
                if part is not None:
                    found.append(part)
    return found


def _pick(candidates: list[_PartFile], kind: str, width: int, prefer_fp8: bool, family: str = "") -> _PartFile | None:
    """The file of `kind` and `width`; with several, the higher precision one (fp8 first when
    the transformer itself is fp8 or GGUF: the user is saving memory), then one named for
    `family` (Flux's and SD3's VAEs have one shape and differ in weights), then by name."""
    fits = [c for c in candidates if c.kind == kind and c.width == width]
    fits.sort(key=lambda c: (c.fp8 != prefer_fp8, not _named_for(c.path.name.lower(), family), c.path.name))
    return fits[0] if fits else None


def _named_for(name: str, family: str) -> bool:
    if family == "flux":
        return name == "ae.safetensors" or "flux" in name
    return bool(family) and family in name


# --------------------------------------------------------------------------- configs and tokenizers


def _config(folder: Path, sub: str) -> dict:
    path = folder / sub / "config.json"
    if not path.is_file():
        raise ValueError(f"the config folder {folder} has no {sub}/config.json")
    return json.loads(path.read_text())


def _encoder_width(folder: Path, encoder: _Encoder) -> int:
    config = _config(folder, encoder.slot)
    return int(config["d_model"] if encoder.part == "t5xxl" else config["hidden_size"])


def _clip_tokenizers(family: str, folder: Path, configs_dir: Path) -> dict:
    """The CLIP tokenizers from the shared vocab (pad as the folder's special_tokens_map says;
    SD3's CLIP-G pads with "!" as SDXL's)."""
    from modules.models.loader import EOS_PAD, build_tokenizer

    tokenizers = {}
    for encoder in FAMILIES[family].encoders:
        if encoder.part == "t5xxl":
            continue
        name = encoder.slot.replace("text_encoder", "tokenizer")
        pad = "!" if encoder.part == "clip_g" else EOS_PAD
        special = folder / name / "special_tokens_map.json"
        if special.is_file():
            value = json.loads(special.read_text()).get("pad_token")
            value = value.get("content") if isinstance(value, dict) else value
            pad = value if isinstance(value, str) and value else pad
        tokenizers[name] = build_tokenizer(configs_dir, pad)
    return tokenizers


def t5_tokenizer(folders: list[Path], parts: PartFolders, shipped: Path | None = None):
    """The T5 tokenizer from the first of `folders` (the model's own tokenizer folder),
    models/text_encoder/t5-tokenizer/ (the user's) or `shipped` (configs/t5-tokenizer: T5 v1.1's
    vocabulary, which every Flux and SD 3 release uses) that has its files; else a ValueError
    saying what to put where."""
    from transformers import T5TokenizerFast

    for folder in (*folders, parts.t5_tokenizer, *((shipped,) if shipped is not None else ())):
        if any((folder / name).is_file() for name in T5_TOKENIZER_FILES):
            try:
                return T5TokenizerFast.from_pretrained(str(folder), local_files_only=True)
            except Exception as e:
                raise ValueError(f"the T5 tokenizer in {folder} could not be read ({_first_line(e)})") from e
    raise ValueError(
        f"no T5 tokenizer: put tokenizer.json (or spiece.model) with its tokenizer_config.json and "
        f"special_tokens_map.json in {parts.t5_tokenizer}/ (from {T5_TOKENIZER_SOURCES})"
    )


def _first_line(e: Exception) -> str:
    from modules.models.arch import first_line

    return first_line(e)


# --------------------------------------------------------------------------- precision


def flow_dtype(device, dtype: torch.dtype) -> torch.dtype:
    """The dtype a flow model really loads in: Flux and SD 3.5 are bf16 models, and fp16
    overflows in SD 3's joint blocks (NaN, black pictures), so the CUDA default fp16 becomes
    bf16 on a card that has it; fp16 stays on cards without bf16, other dtypes as asked."""
    import torch

    return torch.bfloat16 if dtype == torch.float16 and _bf16_device(device) else dtype


def _bf16_device(device) -> bool:
    """Whether `device` is a CUDA card that computes in bf16 (Ampere and newer)."""
    import torch

    if torch.device(device).type != "cuda":
        return False
    try:
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except (RuntimeError, AssertionError):  # no usable CUDA driver
        return False


# --------------------------------------------------------------------------- single files


def load_flow_file(
    path: Path,
    arch: str,
    config_folder: Path,
    *,
    configs_dir: Path,
    parts: PartFolders,
    device: torch.device,
    dtype: torch.dtype,
    vae_dtype: torch.dtype,
    config_source: str = "detected",
) -> LoadedModel:
    """Load a Flux or SD3 single file (.safetensors or .gguf) with `config_folder`; the parts
    the file lacks come from `parts`. Errors are ValueErrors starting "Could not load checkpoint <path>:"."""
    from modules.models.arch import file_parts, read_checkpoint_shapes
    from modules.models.loaded import family_of

    path, config_folder = Path(path), Path(config_folder)
    family = FAMILIES[family_of(arch)]
    dtype, vae_dtype = flow_dtype(device, dtype), flow_dtype(device, vae_dtype)
    try:
        shapes = read_checkpoint_shapes(path)
        if any(k.endswith("scaled_fp8") or k.endswith(".scale_weight") for k in shapes):
            raise ValueError("it is a \"scaled fp8\" file (Comfy's *_scaled), whose weights only make sense with their scales, "
                             "which are not supported: use a plain fp8 (e4m3fn) or bf16 file of the model, or a GGUF")
        held = file_parts(shapes)
        plan = _plan_parts(path, family, family_of(arch), held, config_folder, parts, _transformer_storage(path))
        t5_name = family.t5_slot.replace("text_encoder", "tokenizer")
        tokenizers = _clip_tokenizers(family_of(arch), config_folder, configs_dir)
        if plan[family.t5_slot] is not None:
            tokenizers[t5_name] = t5_tokenizer([config_folder / t5_name], parts, configs_dir / T5_TOKENIZER_DIR)
    except ValueError as e:
        raise ValueError(f"Could not load checkpoint {path}: {e}") from e
    try:
        components = _load_parts(path, family, plan, config_folder, dtype, vae_dtype)
    except ValueError as e:
        raise ValueError(f"Could not load checkpoint {path}: {e}") from e
    except Exception as e:
        raise ValueError(f"Could not load checkpoint {path}: it does not fit the {arch} config in {config_folder} "
                         f"({type(e).__name__}: {_first_line(e)})") from e
    extra = {"config_folder": config_folder, "config_source": config_source,
             "parts": {name: str(source) for name, source in plan.items() if name != "storage" and source not in (path, None)}}
    log.info("Loaded %s as %s with config %s (%s)%s", path.name, arch, config_folder, config_source,
             "".join(f"; {name} from {source}" for name, source in extra["parts"].items()))
    return _package(components, tokenizers, config_folder, path, arch, device, dtype, vae_dtype, extra)


def _transformer_storage(path: Path) -> str:
    """"gguf", "fp8" (a safetensors transformer stored in float8) or "plain"."""
    if path.suffix.lower() == GGUF_EXTENSION:
        return "gguf"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # the first matrix that is not a text encoder's or the VAE's
            tensor = f.get_slice(key)
            if not key.startswith(("text_encoders.", *VAE_PREFIXES)) and len(tensor.get_shape()) == 2:
                return "fp8" if tensor.get_dtype() in FP8_DTYPES else "plain"
    return "plain"


def _plan_parts(path, family: _Family, family_name: str, held: set[str], config_folder: Path,
                parts: PartFolders, storage: str) -> dict[str, Any]:
    """Where each component comes from: `path` for what the file holds, else a file from the
    part folders; a ValueError naming every missing part, what to put where."""
    plan: dict[str, Any] = {"transformer": path, "storage": storage}
    candidates = None
    missing = []
    for encoder in family.encoders:
        if encoder.part in held:
            plan[encoder.slot] = path
            continue
        candidates = candidates if candidates is not None else _candidates(parts.text_encoders)
        found = _pick(candidates, "t5xxl" if encoder.part == "t5xxl" else "clip", _encoder_width(config_folder, encoder), storage != "plain")
        if found is None and encoder.part == "t5xxl" and family_name == "sd3":
            plan[encoder.slot] = None  # SD 3 runs on its CLIP encoders alone (zeros for T5, as diffusers does); the job says so
        elif found is None:
            what, example = PART_NAMES[encoder.part]
            missing.append(f"{what} such as {example} in {_folder_name(parts.text_encoders, 'text_encoder')}")
        else:
            plan[encoder.slot] = found.path
    if "vae" in held:
        plan["vae"] = path
    else:
        vae_config = _config(config_folder, "vae")
        found = _pick(_candidates(parts.vaes), "vae", int(vae_config.get("latent_channels", 16)), False, family_name)
        if found is None:
            what, example = VAE_NAMES[family_name]
            missing.append(f"{what} such as {example} in {_folder_name(parts.vaes, 'VAE')}")
        else:
            plan["vae"] = found.path
    if missing:
        raise ValueError(f"it {'holds only the transformer' if not held - {'transformer'} else 'lacks some parts'}: put "
                         + "; ".join(missing))
    return plan


def _folder_name(folders: tuple[Path, ...], default: str) -> str:
    return f"{folders[0]}/" if folders else f"models/{default}/"


def _load_parts(path: Path, family: _Family, plan: dict, config_folder: Path,
                dtype: torch.dtype, vae_dtype: torch.dtype) -> dict:
    """Build every model component: the file read once, each part file once."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint
    from safetensors.torch import load_file

    checkpoint = load_single_file_checkpoint(str(path), local_files_only=True)
    common = {"config": str(config_folder), "local_files_only": True}
    components = {}
    for encoder in family.encoders:
        source = plan[encoder.slot]
        if source is None:
            components[encoder.slot] = None
            continue
        if source == path:
            prefix = PART_PREFIX.format(encoder.part)
            state = {k[len(prefix):]: checkpoint.pop(k) for k in [k for k in checkpoint if k.startswith(prefix)]}
        else:
            state = load_file(str(source))
        components[encoder.slot] = _text_encoder(encoder, state, config_folder, dtype, source)

    cls = getattr(diffusers, family.transformer)
    kwargs = dict(common, subfolder="transformer", dtype=None if dtype == torch.float32 else dtype)
    if plan["storage"] == "gguf":
        from diffusers import GGUFQuantizationConfig

        kwargs["quantization_config"] = GGUFQuantizationConfig(compute_dtype=dtype)
    transformer = cls.from_single_file(checkpoint, **kwargs)
    if plan["storage"] == "fp8":
        storage = _fp8_dtype(path)
        transformer.enable_layerwise_casting(storage_dtype=storage, compute_dtype=dtype)
        components["fp8_storage"] = str(storage).removeprefix("torch.float8_")
    components["transformer"] = transformer

    vae_source = checkpoint if plan["vae"] == path else str(plan["vae"])
    components["vae"] = AutoencoderKL.from_single_file(vae_source, subfolder="vae", dtype=None if vae_dtype == torch.float32 else vae_dtype, **common)
    return components


def _fp8_dtype(path: Path):
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            name = f.get_slice(key).get_dtype()
            if name in FP8_DTYPES:
                return torch.float8_e4m3fn if name == "F8_E4M3" else torch.float8_e5m2
    return torch.float8_e4m3fn


def _text_encoder(encoder: _Encoder, state: dict, config_folder: Path, dtype: torch.dtype, source):
    """A transformers text encoder from a state dict in its own key layout (what the part
    files hold, and what a single file holds under text_encoders.<part>.transformer.).
    transformers maps the CLIP "text_model." level and T5's tied embedding, and keeps T5's
    feed-forward output in fp32 under fp16, as diffusers does. A T5 file stored in float8
    (t5xxl_fp8_e4m3fn) stays in fp8 on the device, cast up layer by layer (about 40 % less
    memory than fp16)."""
    import torch
    import transformers

    storage = next((v.dtype for v in state.values() if v.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)), None)
    cls = getattr(transformers, encoder.cls)
    config = cls.config_class.from_pretrained(str(config_folder / encoder.slot), local_files_only=True)
    if encoder.part == "clip_l" and "Projection" in encoder.cls:
        # SD3 pools CLIP-L unprojected (SAI's reference code); diffusers' single-file loading
        # puts the identity in its projection, whatever the file holds. So do we.
        state["text_projection.weight"] = torch.eye(config.hidden_size, dtype=next(iter(state.values())).dtype)
    elif encoder.part == "clip_l":
        state.pop("text_projection.weight", None)  # Flux's CLIP-L has none
    model, info = cls.from_pretrained(None, config=config, state_dict=state, dtype=dtype, output_loading_info=True)
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise ValueError(f"{Path(str(source)).name} lacks {len(missing)} of the {encoder.part} text encoder's weights "
                         f"(e.g. {missing[0]}); is it a {PART_NAMES[encoder.part][0].split(' ', 1)[1]}?")
    mismatched = sorted(info.get("mismatched_keys") or ())
    if mismatched:
        raise ValueError(f"{Path(str(source)).name} does not fit the {encoder.part} config in {config_folder} "
                         f"({len(mismatched)} tensors differ, e.g. {mismatched[0]})")
    if storage is not None and encoder.part == "t5xxl":
        from diffusers.hooks import apply_layerwise_casting
        from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

        # Not the feed-forward output: T5 casts its input to that layer's weight dtype, which must not be fp8.
        apply_layerwise_casting(model, storage_dtype=storage, compute_dtype=dtype,
                                skip_modules_pattern=(*DEFAULT_SKIP_MODULES_PATTERN, r"\.wo$"))
    return model


# --------------------------------------------------------------------------- diffusers folders


def folder_arch(folder: Path) -> str | None:
    """The flow architecture of a diffusers folder from model_index.json and its transformer
    config, or None when it is not a Flux/SD3 folder."""
    index = json.loads((folder / "model_index.json").read_text())
    name = str(index.get("_class_name", ""))
    if name.startswith("Flux"):
        if name != "FluxPipeline":
            raise ValueError(f"{name} folders are not supported (only FluxPipeline: Flux.1 dev and schnell)")
        return "flux-dev" if _config(folder, "transformer").get("guidance_embeds") else "flux-schnell"
    if name.startswith("StableDiffusion3"):
        config = _config(folder, "transformer")
        if not config.get("qk_norm"):
            return "sd3"
        return "sd35-medium" if config.get("dual_attention_layers") else "sd35-large"
    return None


def load_flow_folder(
    folder: Path,
    arch: str,
    *,
    configs_dir: Path,
    parts: PartFolders,
    device: torch.device,
    dtype: torch.dtype,
    vae_dtype: torch.dtype,
) -> LoadedModel:
    """A FluxPipeline / StableDiffusion3Pipeline diffusers folder; tokenizers the folder lacks
    come from the shared CLIP vocab and models/text_encoder/t5-tokenizer/."""
    import diffusers
    from diffusers import AutoencoderKL

    from modules.models.loaded import family_of

    folder = Path(folder)
    family = FAMILIES[family_of(arch)]
    dtype, vae_dtype = flow_dtype(device, dtype), flow_dtype(device, vae_dtype)
    try:
        kwargs: dict[str, Any] = {}
        for name, tokenizer in _clip_tokenizers(family_of(arch), folder, configs_dir).items():
            if not _has_tokenizer(folder / name):
                kwargs[name] = tokenizer
        t5_name = family.t5_slot.replace("text_encoder", "tokenizer")
        if not _has_tokenizer(folder / t5_name):
            kwargs[t5_name] = t5_tokenizer([], parts, configs_dir / T5_TOKENIZER_DIR)
        if vae_dtype != dtype:
            kwargs["vae"] = AutoencoderKL.from_pretrained(str(folder), subfolder="vae", dtype=vae_dtype, local_files_only=True)
        pipe = getattr(diffusers, family.pipeline).from_pretrained(str(folder), dtype=dtype, local_files_only=True, **kwargs)
    except Exception as e:
        raise ValueError(f"Could not load checkpoint {folder}: {_first_line(e)}") from e
    components = {"transformer": pipe.transformer, "vae": pipe.vae, **{e.slot: getattr(pipe, e.slot) for e in family.encoders}}
    tokenizers = {name: getattr(pipe, name) for name in ("tokenizer", "tokenizer_2", "tokenizer_3") if hasattr(pipe, name)}
    extra = {"config_folder": folder, "config_source": "diffusers folder"}
    return _package(components, tokenizers, folder, folder, arch, device, dtype, vae_dtype, extra)


def _has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in ("tokenizer.json", "spiece.model", "vocab.json"))


# --------------------------------------------------------------------------- packaging


def _package(components: dict, tokenizers: dict, config_folder: Path, source: Path, arch: str,
             device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype, extra: dict) -> LoadedModel:
    """Check nothing was left unloaded, move the parts to `device`, and make the LoadedModel.
    Dtypes stay as loaded: T5 keeps its fp32 feed-forward output under fp16, fp8 and GGUF
    transformers their storage."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    from modules.models.loaded import LoadedModel

    modules = {name: components.get(name) for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")}
    for name, module in modules.items():
        if module is None:
            continue
        missing = [n for n, p in module.named_parameters() if p.device.type == "meta"]
        if missing:
            raise ValueError(f"Could not load checkpoint {source}: the {name} is missing {len(missing)} weights (e.g. {missing[0]})")
        module.to(device=device)
        module.eval().requires_grad_(False)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(config_folder), subfolder="scheduler", local_files_only=True)
    if components.get("fp8_storage"):
        extra["weights_fp8"] = components["fp8_storage"]
    if getattr(modules["transformer"], "is_quantized", False):
        extra["weights_quantized"] = "gguf"
    return LoadedModel(
        arch=arch,
        unet=modules["transformer"],
        vae=modules["vae"],
        text_encoder=modules["text_encoder"],
        tokenizer=tokenizers.get("tokenizer"),
        scheduler_config=dict(scheduler.config),
        device=torch.device(device),
        dtype=dtype,
        vae_dtype=vae_dtype,
        text_encoder_2=modules["text_encoder_2"],
        tokenizer_2=tokenizers.get("tokenizer_2"),
        text_encoder_3=modules["text_encoder_3"],
        tokenizer_3=tokenizers.get("tokenizer_3"),
        source=source,
        extra=extra,
    )
