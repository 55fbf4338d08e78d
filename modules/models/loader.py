"""Loading a checkpoint (A1111 single file or diffusers folder) fully offline.

Single files carry weights but no config, so each load pairs the file with a
config-only diffusers folder: ``configs/<arch>/`` for the architecture read off the
tensor shapes, unless a side-car next to the checkpoint says otherwise:

* ``<stem>/`` (a folder next to ``<stem>.safetensors`` holding a config-only diffusers
  folder with ``model_index.json``) wins over everything, for models with unusual sizes.
* ``<stem>.yaml`` (the A1111 convention). An LDM-format yaml (A1111's
  ``v1-inference.yaml`` layout: ``model.params.unet_config`` / ``first_stage_config``,
  ``linear_start``/``linear_end``) describes the model's shapes: its UNet and VAE configs are
  built from it with diffusers' own LDM mapping, over the detected architecture's folder, so
  a checkpoint with non-standard channel counts, attention layout or context width loads as
  A1111 loads it. ``parameterization: "v"`` (anywhere in the file, as A1111's
  ``v2-inference-v.yaml`` has it under ``model.params``) selects v-prediction, ``"eps"``
  epsilon; an LDM-style yaml and no parameterization means epsilon, as in LDM.
  ``diffusers_config: <name>`` (top level, this project's own key) picks
  ``configs/<name>/`` instead of the detected architecture's folder.

Tokenizers are built from the one shared vocab in ``configs/clip-tokenizer/``; the
diffusers config folders need no tokenizer files (a ``tokenizer*/special_tokens_map.json``
there only sets the pad token). Everything is read with ``local_files_only=True``
from local paths, so nothing reaches for the network even without ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from modules.models.arch import (
    SD1_TEXT_WIDTHS,
    UNET_INPUT_CONV,
    CheckpointReadError,
    detect_architecture,
    first_line,
    read_checkpoint_shapes,
    unet_in_channels,
)
from modules.models.catalog import CHECKPOINT_EXTENSIONS
from modules.models.flow_loader import GGUF_EXTENSION, PartFolders, load_flow_file, load_flow_folder
from modules.models.flow_loader import folder_arch as flow_folder_arch
from modules.models.ldm_keys import ldm_required_shapes
from modules.models.loaded import LoadedModel, family_of

log = logging.getLogger(__name__)

TOKENIZER_DIR = "clip-tokenizer"
MAX_TOKENS = 77
EOS_PAD = "<|endoftext|>"
# OpenCLIP tokenizers (SD2's and SDXL's second) pad with "!" (id 0), not end-of-text.
DEFAULT_PAD = (("sd2", "tokenizer", "!"), ("sdxl", "tokenizer_2", "!"), ("sdxl-refiner", "tokenizer_2", "!"))
# The SDXL refiner's one text encoder is SDXL's second (OpenCLIP bigG): it fills text_encoder_2.
TOKENIZER_NAMES = (("sdxl", ("tokenizer", "tokenizer_2")), ("sdxl-refiner", ("tokenizer_2",)))
PARAMETERIZATION = (("v", "v_prediction"), ("eps", "epsilon"), ("epsilon", "epsilon"))


@dataclass(frozen=True)
class ConfigChoice:
    """Which config folder a single file is loaded with, and why (kept for the UI/logs)."""

    folder: Path
    source: str  # "detected", "yaml" or "side-car folder"
    prediction_type: str | None = None  # override from a side-car yaml
    ldm: dict | None = field(default=None, compare=False)  # an LDM-format side-car yaml, parsed


def load_checkpoint(
    path: Path,
    *,
    configs_dir: Path,
    device: torch.device,
    dtype: torch.dtype,
    vae_dtype: torch.dtype,
    parts: PartFolders | None = None,
) -> LoadedModel:
    """Load ``path`` (``.safetensors``, ``.ckpt``, a ``.gguf`` transformer or a diffusers folder) onto ``device``.

    The UNet and text encoders end up in ``dtype``, the VAE in ``vae_dtype``. Every
    failure (missing, truncated or foreign file, wrong config) is a ValueError whose
    message starts with "Could not load checkpoint <path>:". Flux and SD3 go to
    modules.models.flow_loader; `parts` says where their files without text encoders or
    VAE find them (models/text_encoder, models/VAE).
    """
    path = Path(path)
    configs_dir = Path(configs_dir)
    if not path.exists():
        raise ValueError(f"Could not load checkpoint {path}: file does not exist")
    parts = parts or PartFolders()
    if path.is_dir():
        return _load_diffusers_folder(path, configs_dir, device, dtype, vae_dtype, parts)
    if path.suffix.lower() not in (*CHECKPOINT_EXTENSIONS, GGUF_EXTENSION):
        raise ValueError(
            f"Could not load checkpoint {path}: unsupported file type '{path.suffix}' "
            "(expected .safetensors, .ckpt, .gguf or a diffusers folder)"
        )
    with tempfile.TemporaryDirectory(prefix="ldm-config-") as scratch:
        try:
            shapes = read_checkpoint_shapes(path)
            arch = detect_architecture(shapes)
            choice = base = choose_config(path, arch, configs_dir)
            flow = family_of(arch) != "sd"  # Flux, SD3: their own loader, configs and parts
            if choice.ldm is not None and not flow:  # the yaml's shapes, over the architecture's folder
                choice = replace(choice, folder=ldm_config_folder(choice.ldm, choice.folder, shapes, Path(scratch)))
            in_channels = unet_in_channels(shapes) or 4
            if not flow:
                _check_fits(shapes, arch, choice.folder, in_channels)
        except CheckpointReadError as e:
            raise ValueError(f"Could not load checkpoint {path}: {e.reason}") from e
        except ValueError as e:
            raise ValueError(f"Could not load checkpoint {path}: {e}") from e
        if flow:
            return load_flow_file(path, arch, choice.folder, configs_dir=configs_dir, parts=parts, device=device,
                                  dtype=dtype, vae_dtype=vae_dtype, config_source=choice.source)
        loaded = _load_single_file(path, arch, choice, configs_dir, device, dtype, vae_dtype, in_channels)
    loaded.extra["config_folder"] = base.folder  # the generated one is gone; the page's hints live in the base folder
    return loaded


def choose_config(path: Path, arch: str, configs_dir: Path) -> ConfigChoice:
    """The config folder for a single file: side-car folder > side-car yaml > ``configs/<arch>``."""
    sidecar = path.parent / path.stem
    if (sidecar / "model_index.json").is_file():
        return ConfigChoice(sidecar, "side-car folder")

    folder, source, prediction_type, ldm = configs_dir / arch, "detected", None, None
    yaml_path = path.with_suffix(".yaml")
    if yaml_path.is_file():
        name, prediction_type, ldm = _read_sidecar_yaml(yaml_path)
        source = "yaml"
        if name:
            folder = configs_dir / name
    if not (folder / "model_index.json").is_file():
        raise ValueError(
            f"no config folder for this {arch} checkpoint: expected {folder / 'model_index.json'}"
        )
    return ConfigChoice(folder, source, prediction_type, ldm)


def ldm_config_folder(ldm: dict, base: Path, shapes: dict[str, tuple], scratch: Path) -> Path:
    """A config-only diffusers folder for an LDM yaml: the base architecture's folder with the
    UNet and VAE configs diffusers builds from the yaml (channel counts, attention layout,
    heads, context width, latent channels) and the yaml's noise schedule. Text encoders stay
    the architecture's, as in A1111 (its CLIP configs are fixed per family)."""
    import torch
    from diffusers.loaders.single_file_utils import create_unet_diffusers_config_from_ldm, create_vae_diffusers_config_from_ldm

    folder = scratch / "config"
    shutil.copytree(base, folder)
    meta = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}  # diffusers only looks at keys and shapes
    params = ldm["model"]["params"]
    try:
        parts = {"unet": create_unet_diffusers_config_from_ldm(ldm, meta), "vae": create_vae_diffusers_config_from_ldm(ldm, meta)}
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(f"the side-car yaml's LDM config could not be read ({type(e).__name__}: {first_line(e)})") from e
    for part, derived in parts.items():
        config_path = folder / part / "config.json"
        config = json.loads(config_path.read_text())
        config.update({k: v for k, v in derived.items() if v is not None and k != "sample_size"})
        config_path.write_text(json.dumps(config, indent=2))
    schedule_path = folder / "scheduler" / "scheduler_config.json"
    schedule = json.loads(schedule_path.read_text())
    for key, name in (("linear_start", "beta_start"), ("linear_end", "beta_end"), ("timesteps", "num_train_timesteps")):
        if isinstance(params.get(key), (int, float)):
            schedule[name] = params[key]
    schedule_path.write_text(json.dumps(schedule, indent=2))
    return folder


def _is_ldm_config(data: dict) -> bool:
    params = data.get("model", {}).get("params") if isinstance(data.get("model"), dict) else None
    return isinstance(params, dict) and isinstance(params.get("unet_config") or params.get("network_config"), dict)


def _read_sidecar_yaml(path: Path) -> tuple[str | None, str | None, dict | None]:
    """(config folder name, prediction type, the LDM config if it is one) from an A1111-style side-car yaml."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"side-car {path.name} is not readable YAML ({e})") from e
    if data is None:
        return None, None, None
    if not isinstance(data, dict):
        raise ValueError(f"side-car {path.name} should hold a mapping, not {type(data).__name__}")

    name = data.get("diffusers_config")
    if name is not None and (not isinstance(name, str) or Path(name).name != name or name in (".", "..")):
        raise ValueError(f"side-car {path.name}: diffusers_config must be a folder name in configs/")

    found = _find_key(data, "parameterization")
    if found is None:
        prediction_type = "epsilon" if isinstance(data.get("model"), dict) else None
    else:
        prediction_type = dict(PARAMETERIZATION).get(str(found).lower())
        if prediction_type is None:
            raise ValueError(
                f"side-car {path.name}: parameterization '{found}' is not one of "
                f"{[p for p, _ in PARAMETERIZATION]}"
            )
    return name, prediction_type, (data if _is_ldm_config(data) and name is None else None)


def _find_key(data, key: str):
    """First value of ``key`` anywhere in nested dicts/lists (LDM yamls nest it deeply)."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        children = data.values()
    elif isinstance(data, list):
        children = data
    else:
        return None
    for child in children:
        found = _find_key(child, key)
        if found is not None:
            return found
    return None


def _check_fits(shapes: dict[str, tuple], arch: str, folder: Path, in_channels: int = 4) -> None:
    """Compare the file's tensors with what the config expects, before diffusers does.

    diffusers skips tensors a file lacks (leaving them uninitialised on the meta device)
    and reports wrong shapes in its own terms; this names the first offending tensor. An
    inpainting file (9 input channels) is checked against the config with that one change.
    """
    try:
        expected = dict(ldm_required_shapes(arch, folder))
    except Exception as e:
        raise ValueError(f"the config folder {folder} is not a usable {arch} config ({first_line(e)})") from e
    if UNET_INPUT_CONV in expected:
        out, _in, *kernel = expected[UNET_INPUT_CONV]
        expected[UNET_INPUT_CONV] = (out, in_channels, *kernel)
    missing = [k for k in expected if k not in shapes]
    wrong = [k for k in expected if k in shapes and not _same_shape(shapes[k], expected[k])]
    if wrong:
        key = wrong[0]
        raise ValueError(
            f"it does not fit the {arch} config in {folder}: {key} has shape {list(shapes[key])}, "
            f"the config expects {list(expected[key])} ({len(wrong)} tensors differ)"
        )
    if missing:
        raise ValueError(
            f"it lacks {len(missing)} of the tensors the {arch} config in {folder} expects "
            f"(e.g. {missing[0]})"
        )


def _same_shape(actual: tuple, expected: tuple) -> bool:
    """Equal, allowing the 1x1-conv vs linear forms diffusers converts between."""
    strip = lambda s: tuple(s[:2]) if len(s) > 2 and all(d == 1 for d in s[2:]) else tuple(s)  # noqa: E731
    return tuple(actual) == tuple(expected) or strip(actual) == strip(expected)


# --------------------------------------------------------------------------- tokenizers


def build_tokenizer(configs_dir: Path, pad_token: str = EOS_PAD):
    """CLIP BPE tokenizer from the shared vocab, so config folders carry no vocab copies.
    Imported from its module, not through transformers' lazy top level, which can fail while
    another thread (a model loading) is importing transformers."""
    from transformers.models.clip.tokenization_clip import CLIPTokenizer

    folder = Path(configs_dir) / TOKENIZER_DIR
    return CLIPTokenizer(
        vocab=str(folder / "vocab.json"),
        merges=str(folder / "merges.txt"),
        model_max_length=MAX_TOKENS,
        pad_token=pad_token,
    )


def _pad_token(config_folder: Path, subfolder: str, arch: str) -> str:
    """The folder's own special_tokens_map.json decides; else the architecture's default."""
    special = config_folder / subfolder / "special_tokens_map.json"
    if special.is_file():
        pad = json.loads(special.read_text()).get("pad_token")
        if isinstance(pad, dict):
            pad = pad.get("content")
        if isinstance(pad, str) and pad:
            return pad
    return next((p for a, s, p in DEFAULT_PAD if a == arch and s == subfolder), EOS_PAD)


def _tokenizers(config_folder: Path, configs_dir: Path, arch: str) -> dict:
    names = dict(TOKENIZER_NAMES).get(arch, ("tokenizer",))
    return {n: build_tokenizer(configs_dir, _pad_token(config_folder, n, arch)) for n in names}


# --------------------------------------------------------------------------- loading


def _pipeline_class(arch: str):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    if arch == "sdxl-refiner":  # diffusers' pipeline for it: the one without CLIP-L and with aesthetic scores
        return StableDiffusionXLImg2ImgPipeline
    return StableDiffusionXLPipeline if arch == "sdxl" else StableDiffusionPipeline


def _pipeline_kwargs(arch: str) -> dict:
    """Components we never want: no safety checker, no watermarker, no image encoder."""
    if arch == "sdxl-refiner":
        return {"add_watermarker": False, "image_encoder": None, "feature_extractor": None, "text_encoder": None, "tokenizer": None}
    if arch == "sdxl":
        return {"add_watermarker": False, "image_encoder": None, "feature_extractor": None}
    return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


def _load_single_file(
    path: Path,
    arch: str,
    choice: ConfigChoice,
    configs_dir: Path,
    device: torch.device,
    dtype: torch.dtype,
    vae_dtype: torch.dtype,
    in_channels: int = 4,
) -> LoadedModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    common = {"config": str(choice.folder), "local_files_only": True}
    # float32 is what diffusers builds anyway; passing it only adds a spurious dtype warning.
    model_dtype = None if dtype == torch.float32 else dtype
    vae_model_dtype = None if vae_dtype == torch.float32 else vae_dtype
    try:
        kwargs = {**_pipeline_kwargs(arch), **_tokenizers(choice.folder, configs_dir, arch)}
        if vae_dtype != dtype:
            # Load the VAE straight into its own dtype: going through `dtype` first would
            # round an fp32 VAE to fp16 and back.
            kwargs["vae"] = AutoencoderKL.from_single_file(
                str(path), subfolder="vae", dtype=vae_model_dtype, **common
            )
        if in_channels != 4:  # an inpainting UNet: the architecture's config with 9 inputs
            kwargs["unet"] = UNet2DConditionModel.from_single_file(
                str(path), subfolder="unet", dtype=model_dtype, in_channels=in_channels, **common
            )
        pipe = _pipeline_class(arch).from_single_file(str(path), dtype=model_dtype, **common, **kwargs)
    except Exception as e:
        raise ValueError(
            f"Could not load checkpoint {path}: it does not fit the {arch} config in "
            f"{choice.folder} ({first_line(e)})"
        ) from e
    log.info("Loaded %s as %s with config %s (%s)", path.name, arch, choice.folder, choice.source)
    extra = {"config_folder": choice.folder, "config_source": choice.source}
    return _finish(pipe, path, arch, device, dtype, vae_dtype, choice.prediction_type, extra)


def _folder_arch(folder: Path) -> str:
    """Architecture of a diffusers folder from its model_index and text encoder width."""
    index = json.loads((folder / "model_index.json").read_text())
    if "text_encoder_2" in index and (index.get("requires_aesthetics_score") or not (index.get("text_encoder") or [None])[0]):
        return "sdxl-refiner"
    if index.get("_class_name", "").startswith("StableDiffusionXL") or "text_encoder_2" in index:
        return "sdxl"
    config_path = folder / "text_encoder" / "config.json"
    if not config_path.is_file():
        raise ValueError("it has no text_encoder/config.json")
    config = json.loads(config_path.read_text())
    width = config.get("hidden_size")
    by_width = {**SD1_TEXT_WIDTHS, 1024: "sd2"}
    if width not in by_width:
        raise ValueError(f"its text encoder width {width} matches no supported architecture")
    return by_width[width]


def _load_diffusers_folder(
    folder: Path, configs_dir: Path, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype,
    parts: PartFolders | None = None,
) -> LoadedModel:
    from diffusers import AutoencoderKL

    if not (folder / "model_index.json").is_file():
        raise ValueError(
            f"Could not load checkpoint {folder}: a folder must be a diffusers model with model_index.json"
        )
    try:
        flow_arch = flow_folder_arch(folder)
    except (ValueError, OSError) as e:
        raise ValueError(f"Could not load checkpoint {folder}: {e}") from e
    if flow_arch is not None:
        return load_flow_folder(folder, flow_arch, configs_dir=configs_dir, parts=parts or PartFolders(), device=device,
                                dtype=dtype, vae_dtype=vae_dtype)
    try:
        arch = _folder_arch(folder)
        kwargs = _pipeline_kwargs(arch)
        # A folder without its own tokenizer files gets the shared vocab.
        for name, tokenizer in _tokenizers(folder, configs_dir, arch).items():
            if not (folder / name).is_dir() or not any((folder / name).glob("*.json")):
                kwargs[name] = tokenizer
        if vae_dtype != dtype:
            kwargs["vae"] = AutoencoderKL.from_pretrained(
                str(folder), subfolder="vae", dtype=vae_dtype, local_files_only=True
            )
        pipe = _pipeline_class(arch).from_pretrained(str(folder), dtype=dtype, local_files_only=True, **kwargs)
    except Exception as e:
        raise ValueError(f"Could not load checkpoint {folder}: {first_line(e)}") from e
    extra = {"config_folder": folder, "config_source": "diffusers folder"}
    return _finish(pipe, folder, arch, device, dtype, vae_dtype, None, extra)


def _finish(
    pipe,
    source: Path,
    arch: str,
    device: torch.device,
    dtype: torch.dtype,
    vae_dtype: torch.dtype,
    prediction_type: str | None,
    extra: dict,
) -> LoadedModel:
    """Check nothing was left unloaded, move components, and package them."""
    modules = {
        "unet": pipe.unet,
        "vae": pipe.vae,
        "text_encoder": pipe.text_encoder,
        "text_encoder_2": getattr(pipe, "text_encoder_2", None),
    }
    for name, module in modules.items():
        if module is None:
            continue
        # diffusers builds models on the meta device and fills them from the file; a
        # tensor the file lacks silently stays on meta.
        missing = [n for n, p in module.named_parameters() if p.device.type == "meta"]
        if missing:
            raise ValueError(
                f"Could not load checkpoint {source}: the {name} is missing {len(missing)} "
                f"weights (e.g. {missing[0]})"
            )
        target = vae_dtype if name == "vae" else dtype
        # diffusers' ModelMixin.to() warns on every dtype argument, so only pass one if needed.
        if any(p.dtype != target for p in module.parameters() if p.is_floating_point()):
            module.to(dtype=target)
        module.to(device=device).eval().requires_grad_(False)

    scheduler_config = dict(pipe.scheduler.config)
    if prediction_type:
        scheduler_config["prediction_type"] = prediction_type
    if arch in ("sdxl", "sdxl-refiner"):
        extra["force_zeros_for_empty_prompt"] = bool(pipe.config.get("force_zeros_for_empty_prompt", True))
    return LoadedModel(
        arch=arch,
        unet=modules["unet"],
        vae=modules["vae"],
        text_encoder=modules["text_encoder"],
        tokenizer=getattr(pipe, "tokenizer", None),
        scheduler_config=scheduler_config,
        device=torch.device(device),
        dtype=dtype,
        vae_dtype=vae_dtype,
        text_encoder_2=modules["text_encoder_2"],
        tokenizer_2=getattr(pipe, "tokenizer_2", None),
        source=source,
        extra=extra,
    )
