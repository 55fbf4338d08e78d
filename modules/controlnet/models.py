"""ControlNet model files: finding them in models/ControlNet, naming them as the A1111 ControlNet
extension does, and loading them as diffusers ControlNetModels that fit the loaded checkpoint.

Users bring three layouts: ControlNet 1.0/1.1 LDM single files (`control_model.input_blocks...`,
`input_hint_block`, `zero_convs`, `middle_block_out`), single files in diffusers' key layout
(most SDXL ControlNets, e.g. `diffusers_xl_canny_full.safetensors`), and diffusers folders. LDM
keys are converted by diffusers' own converter; the config comes from `configs/controlnet/`
(sd15, sd21, sdxl) for the real families, or from the checkpoint's UNet for the project's small
models, with the layout (block types, transformer depth, hint channels) read off the weights,
so the mid and small SDXL variants load too. Weights are read weights-only, never unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from diffusers import ControlNetModel

    from modules.models.loaded import LoadedModel

log = logging.getLogger(__name__)

FOLDER = "ControlNet"  # models/ControlNet, the extension's folder
MODEL_EXTENSIONS = (".pt", ".pth", ".ckpt", ".safetensors", ".bin")  # the extension's CN_MODEL_EXTS
NO_MODEL = "None"
DEFAULT_CACHE_SIZE = 2  # control_net_model_cache_size
# configs/controlnet/<folder> for the checkpoint architectures it fits (modules.models.arch names).
CONFIG_FOLDERS = {"sd1": "sd15", "sd2": "sd21", "sdxl": "sdxl"}
# Every architecture a ControlNet may be for, by the UNet config it must match.
UNET_CONFIGS = {"sd1": "sd1", "sd2": "sd2", "sdxl": "sdxl", "tiny-sd1": "tiny-sd1", "demo-shapes": "demo-shapes"}
FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "tiny-sd1": "SD 1.x (the tiny test model, tiny-sd1)",
                "demo-shapes": "SD 1.x (the demo model, demo-shapes)"}
# A diffusers folder's weights, in the order diffusers prefers them.
FOLDER_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                  "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin")
LDM_PREFIX = "control_model."
# A1111's legacy model hash: SHA-256 of 64 KiB read at 1 MiB (sd_models.model_hash).
_LEGACY_OFFSET, _LEGACY_LENGTH = 0x100000, 0x10000


def legacy_model_hash(path: Path) -> str:
    """A1111's old 8-hex model hash, which the extension shows in its model names. A file under
    1 MiB hashes the empty string, as in A1111."""
    with open(path, "rb") as f:
        f.seek(_LEGACY_OFFSET)
        return hashlib.sha256(f.read(_LEGACY_LENGTH)).hexdigest()[:8]


def split_name(name: str) -> tuple[str, str | None]:
    """`"stem [hash]"` -> ("stem", "hash"); a name without a hash -> (name, None)."""
    name = name.strip()
    if name.endswith("]") and " [" in name:
        stem, _, rest = name.rpartition(" [")
        return stem.strip(), rest[:-1].strip()
    return name, None


@dataclass(frozen=True)
class ControlNetFile:
    """One ControlNet in a models folder: a single file, or a diffusers folder (config.json)."""

    path: Path
    shorthash: str

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()

    @property
    def stem(self) -> str:
        return self.path.name if self.is_folder else self.path.stem

    @property
    def name(self) -> str:
        """The extension's model name: `control_v11p_sd15_canny [d14c016b]`."""
        return f"{self.stem} [{self.shorthash}]"

    @property
    def weights(self) -> list[Path]:
        return weight_files(self.path) if self.is_folder else [self.path]


def weight_files(folder: Path) -> list[Path]:
    """A diffusers folder's weights: one file, or the shards its index names."""
    for name in FOLDER_WEIGHTS:
        if (folder / name).is_file():
            return [folder / name]
        index = folder / f"{name}.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError) as exc:
                raise ValueError(f"ControlNet folder {folder.name}: its {index.name} cannot be read ({exc}).") from None
            return [folder / s for s in shards]
    raise ValueError(f"ControlNet folder {folder.name} has a config.json but no weights ({FOLDER_WEIGHTS[0]}).")


@dataclass(frozen=True)
class Signature:
    """What must agree between a ControlNet and a UNet: cross-attention width (None: the
    ControlNet has no attention), block widths and SDXL's text_time embedding. `linear`
    (linear attention projections, as SD 2.x and SDXL) only helps to name the family."""

    cross_attention_dim: int | None
    block_out_channels: tuple[int, ...]
    text_time: bool
    linear: bool | None = field(default=None, compare=False)

    @classmethod
    def of_config(cls, config: Mapping) -> "Signature":
        cross = config.get("cross_attention_dim")
        return cls(int(cross) if isinstance(cross, int) else None, tuple(int(c) for c in config["block_out_channels"]),
                   config.get("addition_embed_type") == "text_time", bool(config.get("use_linear_projection")))

    @classmethod
    def of_weights(cls, shapes: Mapping[str, tuple]) -> "Signature":
        """From a diffusers-keyed ControlNet state dict's shapes."""
        cross = next((int(s[1]) for k, s in shapes.items() if k.endswith("attn2.to_k.weight")), None)
        blocks = []
        while f"down_blocks.{len(blocks)}.resnets.0.conv1.weight" in shapes:
            blocks.append(int(shapes[f"down_blocks.{len(blocks)}.resnets.0.conv1.weight"][0]))
        proj = next((s for k, s in shapes.items() if k.endswith(".proj_in.weight")), None)
        return cls(cross, tuple(blocks), "add_embedding.linear_1.weight" in shapes, None if proj is None else len(proj) == 2)

    def fits(self, unet: "Signature") -> bool:
        return (self.block_out_channels == unet.block_out_channels and self.text_time == unet.text_time
                and self.cross_attention_dim in (None, unet.cross_attention_dim))

    @property
    def kind(self) -> str:
        """The family by its traits alone: SDXL has text_time, SD 2.x linear projections or
        OpenCLIP-H's 1024 width, SD 1.x neither."""
        if self.text_time:
            return "sdxl"
        return "sd2" if self.linear or self.cross_attention_dim == 1024 else "sd1"

    def widths(self) -> str:
        return f"block widths {list(self.block_out_channels)}, cross-attention width {self.cross_attention_dim}"


SD1_LIKE = ("sd1", "tiny-sd1", "demo-shapes")  # modules.models.arch.SD1_ARCHS, without importing torch here


def family_kind(arch: str) -> str:
    """sd1, sd2 or sdxl: the project's small models are SD 1.x-shaped."""
    return "sd1" if arch in SD1_LIKE else arch


class ControlNetLibrary:
    """The ControlNets of models/ControlNet (and `--controlnet-dir`, and the
    `control_net_models_path` setting), named and found as the extension does, loaded onto the
    checkpoint's device and dtype and kept in an LRU cache of `control_net_model_cache_size`."""

    def __init__(self, folders: Iterable[Path], configs_dir: Path, cache_size: int = DEFAULT_CACHE_SIZE):
        self._base_folders = tuple(Path(f) for f in folders)
        self._setting_folder: Path | None = None
        configs_dir = Path(configs_dir)  # configs/ (its controlnet/ folder is accepted too)
        self.configs_dir = configs_dir.parent if configs_dir.name == "controlnet" else configs_dir
        self.cache_size = max(0, int(cache_size))
        self._cache: OrderedDict[tuple, "ControlNetModel"] = OrderedDict()
        self._hashes: dict[tuple, str] = {}
        self._unusable: dict[str, str] = {}  # stem -> why, from the last scan
        self._lock = threading.RLock()

    @classmethod
    def for_paths(cls, paths: Any, cache_size: int = DEFAULT_CACHE_SIZE) -> "ControlNetLibrary":
        """The library of an app's `modules.options.Paths`: models/ControlNet (created, as the
        extension does) and the `--controlnet-dir` folder."""
        folders = controlnet_folders(paths.models_dir, [dict(paths.model_dirs).get(FOLDER)])
        folders[0].mkdir(parents=True, exist_ok=True)
        return cls(folders, paths.configs_dir, cache_size)

    # ------------------------------------------------------------------ settings and listing

    def use_settings(self, changed: Mapping[str, Any]) -> None:
        """The config.json values this object uses: control_net_model_cache_size,
        control_net_models_path."""
        if "control_net_model_cache_size" in changed:
            try:
                size = int(changed["control_net_model_cache_size"])
            except (TypeError, ValueError):
                raise ValueError("control_net_model_cache_size must be a whole number.") from None
            with self._lock:
                self.cache_size = max(0, size)
                self._evict()
        if "control_net_models_path" in changed:
            value = str(changed["control_net_models_path"] or "").strip()
            self._setting_folder = Path(value).expanduser() if value else None

    @property
    def folders(self) -> tuple[Path, ...]:
        extra = (self._setting_folder,) if self._setting_folder else ()
        return tuple(dict.fromkeys((*self._base_folders, *extra)))

    def files(self) -> list[ControlNetFile]:
        """Every ControlNet found now, sorted by name; the first folder wins a name found twice."""
        found: dict[str, ControlNetFile] = {}
        unusable: dict[str, str] = {}
        for folder in self.folders:
            for path in _walk(folder):
                try:
                    entry = ControlNetFile(path, self._shorthash(path))
                except (OSError, ValueError) as exc:
                    log.warning("Skipping ControlNet %s: %s", path, exc)
                    unusable[(path.name if path.is_dir() else path.stem).lower()] = str(exc)
                    continue
                if entry.stem != NO_MODEL:
                    found.setdefault(entry.stem.lower(), entry)
        self._unusable = unusable
        return sorted(found.values(), key=lambda e: e.stem.lower())

    def names(self) -> list[str]:
        """The model names, as /controlnet/model_list lists them (without "None")."""
        return [f.name for f in self.files()]

    def find(self, name: str | None) -> ControlNetFile | None:
        """The ControlNet a unit names: "stem [hash]", "stem", a stem with a stale hash (the
        extension matches the name part, any case), else the shortest name containing it.
        "None" or empty means no model; anything else unknown is a ValueError naming the choices."""
        if name is None or not str(name).strip() or str(name).strip() == NO_MODEL:
            return None
        files = self.files()
        wanted = str(name).strip()
        for f in files:
            if f.name == wanted:
                return f
        stem, _ = split_name(wanted)
        by_stem = {f.stem.lower(): f for f in files}
        if stem.lower() in by_stem:
            return by_stem[stem.lower()]
        partial = sorted((f for f in files if stem.lower() in f.stem.lower()), key=lambda f: len(f.stem))
        if partial:
            return partial[0]
        if stem.lower() in self._unusable:  # there, but not readable: say why rather than "not found"
            raise ValueError(self._unusable[stem.lower()])
        choices = ", ".join(f.name for f in files) or f"none: put ControlNet models in {self._folder_text()}"
        raise ValueError(f"ControlNet model '{wanted}' not found. Choices: {choices}.")

    def _folder_text(self) -> str:
        return " or ".join(str(f) for f in self.folders) or "models/ControlNet"

    def _shorthash(self, path: Path) -> str:
        target = weight_files(path)[0] if path.is_dir() else path
        stat = target.stat()
        key = (str(target), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key not in self._hashes:
                self._hashes[key] = legacy_model_hash(target)
            return self._hashes[key]

    # ------------------------------------------------------------------ architecture

    def arch_of(self, name: str | ControlNetFile) -> str:
        """The checkpoint architecture (a modules.models.arch name) a ControlNet is for, read from
        its weights' shapes or its config: the one whose UNet it fits, else its family by its
        traits (sd1, sd2 or sdxl)."""
        entry = name if isinstance(name, ControlNetFile) else self._require(name)
        return self._family(self._signature_of(entry))

    def check_fits(self, name: str | ControlNetFile, model: "LoadedModel") -> None:
        """ValueError naming both families when the ControlNet is for another architecture."""
        entry = name if isinstance(name, ControlNetFile) else self._require(name)
        self._check(entry, self._signature_of(entry), model)

    def _require(self, name: str) -> ControlNetFile:
        entry = self.find(name)
        if entry is None:
            raise ValueError("No ControlNet model selected (model 'None').")
        return entry

    def _signature_of(self, entry: ControlNetFile) -> Signature:
        if entry.is_folder:
            return Signature.of_config(_read_config(entry.path))
        state = diffusers_keys(_read_shapes(entry.path), entry.path)
        return Signature.of_weights(state)

    def _family(self, signature: Signature) -> str:
        """The architecture whose UNet config the signature matches, else its kind."""
        return self._exact_family(signature) or signature.kind

    def _exact_family(self, signature: Signature) -> str | None:
        for arch, folder in UNET_CONFIGS.items():
            config_file = self.configs_dir / folder / "unet" / "config.json"
            if config_file.is_file() and signature.fits(Signature.of_config(json.loads(config_file.read_text()))):
                return arch
        return None

    def _check(self, entry: ControlNetFile, signature: Signature, model: "LoadedModel") -> None:
        unet = Signature.of_config(model.unet.config)
        if signature.fits(unet):
            return
        family = self._family(signature)
        ours, theirs = FAMILY_NAMES[family], FAMILY_NAMES.get(model.arch, model.arch)
        if family_kind(family) == family_kind(model.arch):  # one family, other sizes: name the values
            ours, theirs = f"{ours} with {signature.widths()}", f"{theirs} with {unet.widths()}"
        checkpoint = model.source.name if model.source else model.arch
        raise ValueError(f"ControlNet '{entry.stem}' is for {ours} but the loaded checkpoint '{checkpoint}' is {theirs}.")

    # ------------------------------------------------------------------ loading

    def load(self, name: str | ControlNetFile, model: "LoadedModel") -> "ControlNetModel":
        """The ControlNet `name` (or the entry `find` gave) on the checkpoint's device and dtype
        (fp16 on CUDA), from the cache when it was loaded before. ValueError for an unknown name,
        a file that is not a ControlNet, or one for another architecture than `model`."""
        entry = name if isinstance(name, ControlNetFile) else self._require(name)
        weights = entry.weights
        try:
            stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in weights)
        except OSError:
            raise ValueError(f"ControlNet {entry.stem} is gone from {entry.path.parent}.") from None
        key = (str(entry.path.resolve()), stamp, str(model.device), str(model.dtype))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._check(entry, Signature.of_config(cached.config), model)
                self._cache.move_to_end(key)
                return cached
        controlnet = self._build(entry, model)
        with self._lock:
            for stale in [k for k in self._cache if k[0] == key[0] and k[1] != stamp]:
                del self._cache[stale]  # the file changed on disk: its old weights go
            if self.cache_size > 0:
                self._cache[key] = controlnet
                self._evict()
        return controlnet

    def loaded(self) -> int:
        """How many ControlNets the cache holds."""
        return len(self._cache)

    def clear(self) -> None:
        """Drop every cached ControlNet (memory back at the next garbage collection)."""
        with self._lock:
            self._cache.clear()

    def _evict(self) -> None:
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _build(self, entry: ControlNetFile, model: "LoadedModel") -> "ControlNetModel":
        from modules.models.weights_file import read_weights

        # The architecture check first, from the config or the tensors' shapes: a 2.5 GB SDXL
        # file meant for another checkpoint is refused before its weights are read.
        config = _read_config(entry.path) if entry.is_folder else None
        self._check(entry, Signature.of_config(config) if config else self._signature_of(entry), model)
        state: dict = {}
        for path in entry.weights:
            part = read_weights(path, "ControlNet")
            while isinstance(part.get("state_dict"), dict):  # a training checkpoint's wrapper
                part = part["state_dict"]
            state.update(part)
        if config is None:
            state = diffusers_keys(state, entry.path)
            signature = Signature.of_weights({k: tuple(v.shape) for k, v in state.items()})
            config = self._single_file_config(entry, state, signature, model)
        controlnet = _instantiate(config, state, entry.stem, model.dtype)
        log.info("Loaded ControlNet %s (%s) on %s as %s", entry.name, FAMILY_NAMES.get(model.arch, model.arch), model.device, model.dtype)
        return controlnet.to(model.device).eval().requires_grad_(False)

    def _single_file_config(self, entry: ControlNetFile, state: Mapping[str, "torch.Tensor"], signature: Signature,
                            model: "LoadedModel") -> dict:
        """The shipped config of the checkpoint's family (the UNet's own for the project's small
        models), with the layout the weights show."""
        folder = CONFIG_FOLDERS.get(self._exact_family(signature) or "")
        if folder and (self.configs_dir / "controlnet" / folder / "config.json").is_file():
            base = json.loads((self.configs_dir / "controlnet" / folder / "config.json").read_text())
        else:
            base = config_from_unet(model.unet.config)
        return {**base, **layout_from_weights(state), "global_pool_conditions": "shuffle" in entry.stem.lower()}


# ---------------------------------------------------------------------- configs and keys

_UNET_FIELDS = ("in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types", "only_cross_attention", "block_out_channels",
                "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn", "norm_num_groups", "norm_eps",
                "cross_attention_dim", "transformer_layers_per_block", "encoder_hid_dim", "encoder_hid_dim_type", "attention_head_dim",
                "num_attention_heads", "use_linear_projection", "class_embed_type", "addition_embed_type", "addition_time_embed_dim",
                "num_class_embeds", "upcast_attention", "resnet_time_scale_shift", "projection_class_embeddings_input_dim",
                "mid_block_type")


def config_from_unet(unet_config: Mapping) -> dict:
    """A ControlNet config for a UNet: its encoder half plus the conditioning embedding, as
    ControlNetModel.from_unet builds it."""
    config = {k: unet_config[k] for k in _UNET_FIELDS if k in unet_config}
    config.setdefault("mid_block_type", "UNetMidBlock2DCrossAttn")
    return {"_class_name": "ControlNetModel", **config, "conditioning_channels": 3,
            "conditioning_embedding_out_channels": [16, 32, 96, 256], "controlnet_conditioning_channel_order": "rgb"}


def layout_from_weights(state: Mapping[str, Any]) -> dict:
    """The config values a diffusers-keyed ControlNet's weights fix: block widths and types,
    layers and transformer depth per block, hint channels and embedding widths, projections."""
    shapes = {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in state.items()}
    signature = Signature.of_weights(shapes)
    n = len(signature.block_out_channels)
    if not n or "controlnet_cond_embedding.conv_in.weight" not in shapes:
        raise ValueError("no ControlNet weights (down blocks and conditioning embedding)")

    def count(prefix: str) -> int:
        return len({k[len(prefix):].split(".", 1)[0] for k in shapes if k.startswith(prefix)})

    types, depth = [], []
    for i in range(n):
        attention = count(f"down_blocks.{i}.attentions.") > 0
        types.append("CrossAttnDownBlock2D" if attention else "DownBlock2D")
        depth.append(count(f"down_blocks.{i}.attentions.0.transformer_blocks.") if attention else 1)
    mid_attention = count("mid_block.attentions.") > 0
    mid_depth = count("mid_block.attentions.0.transformer_blocks.")
    if mid_attention and depth[-1] != mid_depth:
        depth[-1] = mid_depth  # the last level has no attention in every known layout: its value is the mid block's
    embedding = [shapes["controlnet_cond_embedding.conv_in.weight"][0]]
    j = 1
    while f"controlnet_cond_embedding.blocks.{j}.weight" in shapes:
        embedding.append(shapes[f"controlnet_cond_embedding.blocks.{j}.weight"][0])
        j += 2
    layout: dict[str, Any] = {
        "block_out_channels": list(signature.block_out_channels),
        "down_block_types": types,
        "layers_per_block": count("down_blocks.0.resnets."),
        "transformer_layers_per_block": depth,
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_attention else "UNetMidBlock2D",
        "conditioning_channels": shapes["controlnet_cond_embedding.conv_in.weight"][1],
        "conditioning_embedding_out_channels": [int(c) for c in embedding],
        "in_channels": shapes["conv_in.weight"][1],
    }
    if signature.cross_attention_dim is not None:
        layout["cross_attention_dim"] = signature.cross_attention_dim
    proj = next((s for k, s in shapes.items() if k.endswith(".proj_in.weight")), None)
    if proj is not None:
        layout["use_linear_projection"] = len(proj) == 2
    if signature.text_time:
        layout["projection_class_embeddings_input_dim"] = shapes["add_embedding.linear_1.weight"][1]
    return layout


def _walk(folder: Path) -> Iterable[Path]:
    """Model files and diffusers folders under `folder`, recursively as the extension scans."""
    if not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder, followlinks=True):
        here = Path(root)
        if "config.json" in files and here != folder:
            dirs[:] = []
            yield here
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in MODEL_EXTENSIONS:
                yield here / name


def _read_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"ControlNet folder {folder.name}: its config.json cannot be read ({exc}).") from None
    if not isinstance(config, dict) or "block_out_channels" not in config or "conditioning_embedding_out_channels" not in config:
        raise ValueError(f"ControlNet folder {folder.name} does not hold a ControlNet (its config.json is not a ControlNetModel config).")
    return config


def _read_shapes(path: Path) -> dict[str, tuple]:
    """{key: shape} of a single file without loading its tensors where the format allows."""
    from modules.models.arch import CheckpointReadError, read_checkpoint_shapes

    from modules.models.weights_file import read_weights

    try:
        return read_checkpoint_shapes(path)
    except CheckpointReadError as exc:
        if path.suffix.lower() != ".safetensors":
            read_weights(path, "ControlNet")  # fails too, with the project's sentence for pickles
        raise ValueError(f"ControlNet {path.name} cannot be read: {exc.reason}.") from None


def diffusers_keys(state: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """A single file's tensors (or shapes) under diffusers' ControlNetModel keys: LDM files go
    through diffusers' converter; what is no ControlNet at all is a ValueError saying what it is."""
    keys = set(state)
    if any(k.startswith(LDM_PREFIX) for k in keys):  # 1.1 files, and 1.0 files holding a whole model
        state = {k[len(LDM_PREFIX):]: v for k, v in state.items() if k.startswith(LDM_PREFIX)}
        keys = set(state)
    if "lora_controlnet" in keys:
        raise ValueError(f"{path.name} is a Control-LoRA, which is not supported; use a full ControlNet.")
    if "controlnet_cond_embedding.conv_in.weight" in keys:
        return dict(state)
    if "input_hint_block.0.weight" in keys:
        return _convert_ldm(state)
    if any(k.startswith(("adapter.", "body.0.")) for k in keys):
        raise ValueError(f"{path.name} is a T2I-Adapter, which is not supported; use a ControlNet.")
    if any(k.startswith(("ip_adapter", "image_proj")) for k in keys):
        raise ValueError(f"{path.name} is an IP-Adapter, which is not supported; use a ControlNet.")
    raise ValueError(f"{path.name} is not a ControlNet: none of its {len(keys)} tensors is a ControlNet weight "
                     "('control_model.input_hint_block.*' or 'controlnet_cond_embedding.*').")


class _Shape(tuple):
    """A stand-in tensor for converting key names from shapes alone."""

    @property
    def shape(self) -> tuple:
        return tuple(self)


def _convert_ldm(state: Mapping[str, Any]) -> dict[str, Any]:
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("input_blocks.")})
    first_down = next((i for i in blocks if f"input_blocks.{i}.0.op.weight" in state), None)
    layers = (first_down - 1) if first_down else max(len(blocks) - 1, 1)
    values = {k: (_Shape(v) if isinstance(v, tuple) else v) for k, v in state.items()}
    converted = convert_controlnet_checkpoint(values, {"layers_per_block": layers})
    converted = {k: v for k, v in converted.items() if v is not None}
    for old, new in (("label_emb.0.0.", "add_embedding.linear_1."), ("label_emb.0.2.", "add_embedding.linear_2.")):
        for suffix in ("weight", "bias"):  # SDXL's text_time embedding, which diffusers' converter leaves out
            if old + suffix in values:
                converted[new + suffix] = values[old + suffix]
    return {k: (tuple(v) if isinstance(v, _Shape) else v) for k, v in converted.items()}


def _instantiate(config: Mapping, state: dict, label: str, dtype: "torch.dtype") -> "ControlNetModel":
    """Build the ControlNet without random init (on the meta device) and assign its weights;
    a weight that does not fit the config is a ValueError naming a few."""
    import torch
    from diffusers import ControlNetModel

    config = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        with torch.device("meta"):
            controlnet = ControlNetModel.from_config(config)
    except Exception as exc:
        raise ValueError(f"ControlNet {label} has a layout diffusers cannot build ({exc}).") from None
    expected = {k: tuple(v.shape) for k, v in controlnet.state_dict().items()}
    fixed = {}
    for key, value in state.items():
        want = expected.get(key)
        if want is not None and tuple(value.shape) != want and value.numel() == math.prod(want):
            value = value.reshape(want)  # 1x1 conv <-> linear projections
        fixed[key] = value.to(dtype) if value.is_floating_point() else value
    missing = sorted(set(expected) - set(fixed))
    unexpected = sorted(set(fixed) - set(expected))
    wrong = sorted(k for k in set(expected) & set(fixed) if tuple(fixed[k].shape) != expected[k])
    if missing or unexpected or wrong:
        parts = [f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise ValueError(f"ControlNet {label} does not fit its ControlNet layout: {'; '.join(parts)}.")
    controlnet.load_state_dict(fixed, strict=True, assign=True)
    return controlnet


def controlnet_folders(models_dir: Path, extra: Iterable[Path | None] = ()) -> tuple[Path, ...]:
    """models/ControlNet first, then `--controlnet-dir` where given (the extension scans both)."""
    return tuple(dict.fromkeys([Path(models_dir) / FOLDER, *(Path(e) for e in extra if e)]))
