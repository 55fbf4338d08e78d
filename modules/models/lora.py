"""LoRA files: finding them on disk (`LoraLibrary`) and applying them to one loaded model
(`LoraStack`).

LoRAs are peft adapters injected through diffusers' loaders and never merged: the base weights
stay untouched, so switching LoRAs between jobs is a matter of activating other adapters, and a
job without LoRAs runs the exact base computation (bit for bit). Files come in two layouts, both
accepted: kohya/A1111 (`lora_unet_…`, `lora_te_…`/`lora_te1_…`/`lora_te2_…` with `.alpha`) and
diffusers/peft (`unet.….lora_A.weight`, `text_encoder.….lora_B.weight`). Every file is checked
against the model's layers before anything is injected, so a LoRA made for another architecture
is refused with a readable warning and leaves the model as it was.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.models.catalog import PARTIAL_SUFFIXES, HashCache, compute_safetensors_body_sha256, natural_sort_key

if TYPE_CHECKING:
    import torch

    from modules.models.loaded import LoadedModel

log = logging.getLogger(__name__)

LORA_EXTENSIONS = (".safetensors", ".pt", ".ckpt")
LORA_SHORTHASH_LENGTH = 12  # A1111's `Lora hashes:` infotext
ALIAS_METADATA_KEY = "ss_output_name"  # written by kohya's trainer
ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # diffusers' LoraConfig per component, as JSON
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
TEXT_COMPONENTS = ("text_encoder", "text_encoder_2")
KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
# What a LoRA was probably trained for, from its cross-attention (UNet) or CLIP width.
CROSS_ATTENTION_FAMILIES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
TEXT_WIDTH_FAMILIES = {768: "SD 1.x", 1024: "SD 2.x"}
ARCH_FAMILIES = {"sd1": "SD 1.x", "tiny-sd1": "SD 1.x", "demo-shapes": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


# --------------------------------------------------------------------------- files


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` strings of a safetensors header (only the header is read); {} for
    other formats or unreadable files."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return {}
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # a broken header must not break a listing
        log.warning("Could not read the metadata of %s: %s", path, e)
        return {}


def read_lora_file(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(tensors on the CPU, diffusers' per-component LoraConfig metadata or None).

    `.pt`/`.ckpt` are read with `weights_only=True`, so a pickle cannot run code."""
    import torch

    path = Path(path)
    metadata = None
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
        raw = read_safetensors_metadata(path).get(ADAPTER_METADATA_KEY)
        if raw:
            try:
                metadata = json.loads(raw)
            except json.JSONDecodeError:
                log.warning("Ignoring unreadable %s in %s", ADAPTER_METADATA_KEY, path)
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError("it holds no tensors")
    return {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}, metadata


@dataclass(frozen=True)
class LoraFile:
    """One LoRA on disk. `name` is what a prompt's `<lora:name:…>` uses; `alias` is the name
    it was trained under (kohya's `ss_output_name`), accepted as well."""

    name: str
    path: Path
    alias: str

    @classmethod
    def from_path(cls, path: Path) -> LoraFile:
        path = Path(path)
        alias = read_safetensors_metadata(path).get(ALIAS_METADATA_KEY) or path.stem
        return cls(name=path.stem, path=path, alias=alias)

    def metadata(self) -> dict[str, Any]:
        """Header metadata, read now; JSON object strings (kohya's tag frequencies, dataset
        dirs) are decoded, as A1111's API returns them."""
        decoded: dict[str, Any] = {}
        for key, value in read_safetensors_metadata(self.path).items():
            if value.startswith("{"):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass
            decoded[key] = value
        return decoded


def _is_partial(path: Path) -> bool:
    """A download still arriving: a temp-style suffix or an aria2 control file beside it."""
    if any(s.lower() in PARTIAL_SUFFIXES for s in path.suffixes):
        return True
    return path.with_name(path.name + ".aria2").exists()


class LoraLibrary:
    """The LoRA files in `dirs` (A1111's `models/Lora`, `--lora-dir`), scanned on `refresh`."""

    def __init__(self, dirs: tuple[Path, ...], hashes: HashCache):
        self.dirs = tuple(Path(d) for d in dirs)
        self.hashes = hashes
        self._body_hashes = hashes.sibling("lora-addnet-sha256", compute_safetensors_body_sha256)
        self._files: list[LoraFile] | None = None

    def refresh(self) -> list[LoraFile]:
        """Rescan every folder recursively (hidden entries and partial downloads skipped),
        sorted naturally by relative path."""
        found: dict[Path, tuple[list, Path]] = {}
        for root in self.dirs:
            for path in _walk(root):
                relative = path.relative_to(root).as_posix()
                found.setdefault(path.resolve(), (natural_sort_key(relative), path))
        self._files = [LoraFile.from_path(path) for _, path in sorted(found.values(), key=lambda item: item[0])]
        return list(self._files)

    @property
    def files(self) -> list[LoraFile]:
        if self._files is None:
            self.refresh()
        return list(self._files or [])

    def find(self, name: str) -> LoraFile | None:
        """By file name, then alias; exact case first, then ignoring case."""
        files = self.files
        for fold in (lambda s: s, str.casefold):
            wanted = fold(name)
            for attr in ("name", "alias"):
                match = next((f for f in files if fold(getattr(f, attr)) == wanted), None)
                if match is not None:
                    return match
        return None

    def shorthash(self, file: LoraFile) -> str | None:
        """A1111's `Lora hashes` value: the first 12 hex digits of the SHA-256 of a
        .safetensors file's tensor data (header excluded, the "addnet" hash), of the whole
        file for other formats; computed once, then cached."""
        hashes = self._body_hashes if file.path.suffix.lower() == ".safetensors" else self.hashes
        digest = hashes.sha256(file.path, compute=True)
        return digest[:LORA_SHORTHASH_LENGTH] if digest else None

    def describe(self) -> list[dict]:
        """A1111's `/sdapi/v1/loras` entries."""
        return [{"name": f.name, "alias": f.alias, "path": str(f.path), "metadata": f.metadata()} for f in self.files]


def _walk(root: Path):
    """LoRA files under `root`, following links but never into the same folder twice."""
    if not root.is_dir():
        return
    seen: set[Path] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = Path(folder).resolve()
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in names:
            path = Path(folder) / name
            if not name.startswith(".") and path.suffix.lower() in LORA_EXTENSIONS and not _is_partial(path):
                yield path


# --------------------------------------------------------------------------- reading into peft form


class LoraUnfit(ValueError):
    """A LoRA that cannot be applied to this model; the message is for the user."""


def _bake_kohya_alphas(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold each module's `alpha / rank` into its up weight and drop the alphas.

    diffusers maps kohya alphas onto peft patterns by name, which misses modules whose alpha
    differs from the most common one; baked in, every module is exact and diffusers sees a
    plain LoRA with alpha == rank (scale 1)."""
    baked = {}
    for key, tensor in state.items():
        if key.endswith(".alpha"):
            continue
        if key.endswith(".lora_up.weight"):
            base = key[: -len(".lora_up.weight")]
            alpha, down = state.get(base + ".alpha"), state.get(base + ".lora_down.weight")
            if alpha is not None and down is not None and down.shape[0]:
                tensor = (tensor.float() * (float(alpha) / down.shape[0])).to(tensor.dtype)
        baked[key] = tensor
    return baked


def _to_diffusers_layout(state: dict[str, torch.Tensor], model: LoadedModel) -> dict[str, torch.Tensor]:
    """Any accepted layout to diffusers' `<component>.<module>…` keys, through diffusers'
    own converter (which also maps SDXL's sgm block names with the UNet config)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if state and all(k.startswith(KOHYA_PREFIXES) for k in state):
        state = _bake_kohya_alphas(state)
    loader = StableDiffusionXLPipeline if model.is_sdxl else StableDiffusionPipeline
    try:
        converted, _alphas = loader.lora_state_dict(dict(state), unet_config=model.unet.config)
    except (ValueError, KeyError, IndexError) as e:
        raise LoraUnfit(f"not a LoRA layout this program reads: {str(e).strip().splitlines()[0][:160]}") from e
    if converted and not any(k.startswith(tuple(c + "." for c in COMPONENTS)) for k in converted):
        # diffusers' old attention-processor files name UNet modules without a prefix.
        converted = {f"unet.{k}": v for k, v in converted.items()}
    return converted


def _split_components(state: dict[str, torch.Tensor], model: LoadedModel) -> dict[str, dict[str, torch.Tensor]]:
    """{component: {peft key relative to the component: tensor}}, exactly as the loaders
    will see it. Keys for no known component make the file unfit; parts for a component the
    model lacks stay as they are (the caller refuses them)."""
    from diffusers.utils.state_dict_utils import StateDictType, convert_state_dict_to_peft, convert_unet_state_dict_to_peft

    parts: dict[str, dict] = {c: {} for c in COMPONENTS}
    stray = []
    for key, tensor in state.items():
        component = next((c for c in COMPONENTS if key.startswith(c + ".")), None)
        if component is None:
            stray.append(key)
        else:
            parts[component][key[len(component) + 1 :]] = tensor
    if stray:
        raise LoraUnfit(f"{len(stray)} tensors belong to no part of a Stable Diffusion model (e.g. {stray[0]})")

    parts["unet"] = convert_unet_state_dict_to_peft(parts["unet"])  # a no-op on peft keys
    for component in TEXT_COMPONENTS:
        encoder = getattr(model, component, None)
        if not parts[component] or encoder is None:
            continue
        # Explicit types: diffusers' guess needs an out_proj key to recognise the old layout.
        part = convert_state_dict_to_peft(parts[component], original_type=StateDictType.DIFFUSERS_OLD)
        part = convert_state_dict_to_peft(part, original_type=StateDictType.DIFFUSERS)
        if not hasattr(encoder, "text_model"):  # transformers 5 flattened CLIPTextModel
            part = {k.removeprefix("text_model."): v for k, v in part.items()}
        parts[component] = part
    return {c: p for c, p in parts.items() if p}


def _fit_to_layers(part: dict[str, torch.Tensor], module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Check every tensor against the layer it patches (before anything is injected) and
    give 1x1-conv/linear tensors the form peft expects. Returns (tensors, problems)."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = dict(module.named_modules())
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in part.items():
        target, sep, leaf = key.partition(".lora_")
        groups.setdefault(target, {})["lora_" + leaf if sep else key] = tensor

    fitted: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for target, tensors in groups.items():
        layer = layers.get(target)
        if layer is None:
            problems.append(f"{target}: the model has no such layer")
            continue
        if isinstance(layer, BaseTunerLayer):
            layer = layer.get_base_layer()
        if isinstance(layer, torch.nn.Linear):
            inputs, outputs, kernel = layer.in_features, layer.out_features, None
        elif isinstance(layer, torch.nn.Conv2d) and layer.groups == 1:
            inputs, outputs, kernel = layer.in_channels, layer.out_channels, tuple(layer.kernel_size)
        else:
            problems.append(f"{target}: LoRA on a {type(layer).__name__} is not supported")
            continue
        down, up = tensors.get("lora_A.weight"), tensors.get("lora_B.weight")
        if down is None or up is None or down.ndim < 2 or up.ndim < 2:
            problems.append(f"{target}: incomplete LoRA pair")
            continue
        rank = down.shape[0]
        shaped = {"lora_A.weight": _reshape(down, kernel), "lora_B.weight": _reshape(up, None if kernel is None else (1, 1))}
        expected = {
            "lora_A.weight": (rank, inputs, *(kernel or ())),
            "lora_B.weight": (outputs, rank, *((1, 1) if kernel else ())),
        }
        for leaf, tensor in tensors.items():
            if leaf not in shaped:  # lora_B.bias, DoRA's lora_magnitude_vector: one value per output
                shaped[leaf] = tensor
                expected[leaf] = tuple(tensor.shape) if tensor.numel() == outputs else (outputs,)
        wrong = [leaf for leaf in shaped if tuple(shaped[leaf].shape) != expected[leaf]]
        if wrong:
            leaf = wrong[0]
            problems.append(f"{target}.{leaf} has shape {list(tensors[leaf].shape)}, the layer needs {list(expected[leaf])}")
            continue
        fitted.update({f"{target}.{leaf}": t for leaf, t in shaped.items()})
    return fitted, problems


def _reshape(tensor: torch.Tensor, kernel: tuple | None) -> torch.Tensor:
    """A 1x1 conv weight for a linear layer (kernel None) or a linear one for a 1x1 conv."""
    if kernel is None and tensor.ndim == 4 and tensor.shape[2:] == (1, 1):
        return tensor.flatten(1)
    if kernel == (1, 1) and tensor.ndim == 2:
        return tensor[:, :, None, None]
    return tensor


def _made_for(parts: dict[str, dict[str, torch.Tensor]]) -> str | None:
    """A guess at the model family a LoRA was trained for, to make the refusal helpful."""
    if parts.get("text_encoder_2"):
        return "SDXL"
    for key, tensor in parts.get("unet", {}).items():
        if key.endswith("attn2.to_k.lora_A.weight") and tensor.ndim >= 2:
            return CROSS_ATTENTION_FAMILIES.get(tensor.shape[1])
    for key, tensor in parts.get("text_encoder", {}).items():
        if key.endswith("q_proj.lora_A.weight") and tensor.ndim >= 2:
            return TEXT_WIDTH_FAMILIES.get(tensor.shape[1])
    return None


def prepare_lora(
    state: dict[str, torch.Tensor], model: LoadedModel
) -> dict[str, dict[str, torch.Tensor]]:
    """A file's tensors as {component: peft tensors} that fit `model`'s layers exactly, on
    the model's device and dtype; raises LoraUnfit (nothing touched) otherwise."""
    parts = _split_components(_to_diffusers_layout(state, model), model)
    if not parts:
        raise LoraUnfit("it holds no LoRA weights")
    problems: list[str] = []
    fitted: dict[str, dict] = {}
    for component, part in parts.items():
        module = getattr(model, component, None)
        if module is None:
            problems.append(f"this model has no {component}")
            continue
        fitted[component], found = _fit_to_layers(part, module)
        problems += found
    if problems:
        guess = _made_for(parts)
        if guess and guess != ARCH_FAMILIES.get(model.arch):
            raise LoraUnfit(f"made for {guess}?")
        more = f"; {len(problems) - 1} more" if len(problems) > 1 else ""
        raise LoraUnfit(problems[0] + more)
    return {
        component: {k: v.to(device=model.device, dtype=model.dtype) for k, v in part.items()}
        for component, part in fitted.items()
    }


# --------------------------------------------------------------------------- the stack


@dataclass(frozen=True)
class _Adapter:
    """One LoRA injected into the model under a peft adapter `name`."""

    name: str
    key: tuple  # (resolved path, mtime_ns, size): a changed file is a new adapter
    components: tuple[str, ...]


class LoraStack:
    """The LoRAs applied to one loaded model, kept loaded between jobs.

    Not thread-safe: it changes the model, so only the job worker (which owns the model
    between jobs) calls it."""

    def __init__(self, model: LoadedModel, max_cached: int = 8):
        self.model = model
        self.max_cached = max(1, int(max_cached))
        self._adapters: OrderedDict[tuple, _Adapter] = OrderedDict()  # least recently used first
        self._refused: dict[tuple, str] = {}  # files already found unfit, by key
        self._active: list[tuple[_Adapter, LoraFile, float, float]] = []
        self._activated: tuple | None = None  # what the layers were last set to: skip the walk when unchanged

    @property
    def active(self) -> list[tuple[LoraFile, float, float]]:
        """(file, te, unet) of the LoRAs in effect after the last `apply` (for the infotext)."""
        return [(file, te, unet) for _, file, te, unet in self._active]

    def apply(self, wanted: Sequence[tuple[LoraFile, float, float]]) -> list[str]:
        """Make exactly `wanted` (file, text-encoder multiplier, UNet multiplier) active.

        Each file is read once and its adapter reused while unchanged on disk; the same file
        twice adds its multipliers. Files that cannot be used are skipped with a warning."""
        warnings: list[str] = []
        merged: OrderedDict[tuple, list] = OrderedDict()
        for file, te, unet in wanted:
            try:
                key = _file_key(file.path)
            except OSError:
                warnings.append(f"LoRA '{file.name}' was not found at {file.path}: skipped")
                continue
            if key in merged:
                merged[key][1] += float(te)
                merged[key][2] += float(unet)
            else:
                merged[key] = [file, float(te), float(unet)]

        active = []
        known = set(self._adapters)
        for key, (file, te, unet) in merged.items():
            if te == 0 and unet == 0:
                continue
            adapter, warning = self._ensure_loaded(key, file)
            if warning:
                warnings.append(warning)
            if adapter is not None:
                active.append((adapter, file, te, unet))

        self._active = active
        self._evict({adapter.key for adapter, *_ in active})
        signature = tuple((adapter.name, te, unet) for adapter, _, te, unet in active)
        if signature != self._activated or set(self._adapters) - known:  # a new adapter may have come in active
            self._activate()
            self._activated = signature
        return warnings

    @property
    def loaded(self) -> bool:
        """Whether any adapter is in the model (active or kept for reuse)."""
        return bool(self._adapters)

    def text_state(self) -> tuple:
        """Changes whenever the text encoders' effective weights change (prompt-cache key)."""
        return tuple(
            (adapter.key, te)
            for adapter, _, te, _ in self._active
            if te != 0 and any(c in TEXT_COMPONENTS for c in adapter.components)
        )

    def clear(self) -> None:
        """Remove every adapter and every peft wrapper: the model is its plain self again."""
        from diffusers.utils.peft_utils import recurse_remove_peft_layers

        self._adapters.clear()
        self._refused.clear()
        self._active = []
        self._activated = None
        for component in COMPONENTS:
            module = getattr(self.model, component, None)
            if module is None:
                continue
            recurse_remove_peft_layers(module)
            if hasattr(module, "peft_config"):
                del module.peft_config
            if hasattr(module, "_hf_peft_config_loaded"):
                module._hf_peft_config_loaded = False

    # -- internals ----------------------------------------------------------------------

    def _ensure_loaded(self, key: tuple, file: LoraFile) -> tuple[_Adapter | None, str | None]:
        if key in self._adapters:
            self._adapters.move_to_end(key)
            return self._adapters[key], None
        if key in self._refused:
            return None, self._refused[key]
        for stale in [k for k in self._adapters if k[0] == key[0]]:  # the file changed on disk
            self._drop(stale)
        try:
            state, metadata = read_lora_file(file.path)
            parts = prepare_lora(state, self.model)
        except LoraUnfit as e:
            return None, self._refuse(key, f"LoRA '{file.name}' does not fit this model ({e}): skipped")
        except Exception as e:
            log.exception("Could not read LoRA %s", file.path)
            return None, self._refuse(key, f"LoRA '{file.name}' could not be read ({_first_line(e)}): skipped")

        # Unique per model, even if another stack has used it: peft refuses a name twice.
        adapter = _Adapter(name=f"lora_{uuid.uuid4().hex[:12]}", key=key, components=tuple(parts))
        try:
            self._inject(adapter, parts, metadata)
        except Exception as e:
            log.exception("Could not apply LoRA %s", file.path)
            return None, self._refuse(key, f"LoRA '{file.name}' could not be applied ({_first_line(e)}): skipped")
        self._adapters[key] = adapter
        log.info("Loaded LoRA %s as adapter %s (%s)", file.path, adapter.name, ", ".join(adapter.components))
        return adapter, None

    def _refuse(self, key: tuple, warning: str) -> str:
        self._refused[key] = warning
        log.warning(warning)
        return warning

    def _inject(self, adapter: _Adapter, parts: dict[str, dict], metadata: dict | None) -> None:
        """Load through diffusers' loaders; on any failure take out what went in."""
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        loader = StableDiffusionXLPipeline if self.model.is_sdxl else StableDiffusionPipeline
        touched = []
        try:
            for component, part in parts.items():
                module = getattr(self.model, component)
                prefixed = {f"{component}.{k}": v for k, v in part.items()}
                config = _component_metadata(metadata, component)
                touched.append(module)
                if component == "unet":
                    loader.load_lora_into_unet(prefixed, None, module, adapter_name=adapter.name, metadata=config)
                    if self.model.extra.get("fp8_storage"):
                        _adapter_in_compute_dtype(module, adapter.name, part, self.model.dtype)
                else:
                    with _quiet("transformers.integrations.peft"):
                        loader.load_lora_into_text_encoder(
                            prefixed, None, module, prefix=component, adapter_name=adapter.name, metadata=config
                        )
        except Exception:
            for module in touched:
                _delete_adapter(module, adapter.name)
            raise

    def _drop(self, key: tuple) -> None:
        adapter = self._adapters.pop(key)
        for component in adapter.components:
            _delete_adapter(getattr(self.model, component), adapter.name)
        log.info("Unloaded LoRA adapter %s (%s)", adapter.name, key[0])

    def _evict(self, keep: set) -> None:
        """Beyond `max_cached`, delete the least recently used adapters not in use."""
        while len(self._adapters) > self.max_cached:
            victim = next((k for k in self._adapters if k not in keep), None)
            if victim is None:
                break
            self._drop(victim)

    def _activate(self) -> None:
        """Set each component's active adapters and scales from `_active`; everything else
        inactive. A component with none active computes exactly its base layers."""
        for component in COMPONENTS:
            module = getattr(self.model, component, None)
            if module is None:
                continue
            scales = {}
            for adapter, _, te, unet in self._active:
                scale = unet if component == "unet" else te
                if component in adapter.components and scale != 0:
                    scales[adapter.name] = scale
            _set_active(module, scales)


def _set_active(module, scales: dict[str, float]) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    names = list(scales)
    for layer in module.modules():
        if isinstance(layer, BaseTunerLayer):
            layer.set_adapter(names, inference_mode=True)
            set_scale = getattr(layer, "set_scale", None)
            if set_scale is not None:
                for name, scale in scales.items():
                    set_scale(name, scale)


def _delete_adapter(module, name: str) -> None:
    """Remove adapter `name` from every layer of `module` (absent layers are fine)."""
    from diffusers.utils.peft_utils import delete_adapter_layers

    delete_adapter_layers(module, name)
    config = getattr(module, "peft_config", None)
    if isinstance(config, dict):
        config.pop(name, None)


def _component_metadata(metadata: dict | None, component: str) -> dict | None:
    """diffusers' metadata for one component, or None so the loader derives the config
    (an empty dict would make it build a default LoraConfig)."""
    if not metadata:
        return None
    prefix = component + "."
    return {k: v for k, v in metadata.items() if k.startswith(prefix)} or None


def _file_key(path: Path) -> tuple:
    stat = Path(path).stat()
    return (str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


class _quiet:
    """Silence one logger's warnings for a moment: transformers reports every other adapter's
    weights as "MISSING" each time a second LoRA is loaded into a text encoder, which is
    expected (each adapter has its own weights) and would flood the console."""

    def __init__(self, name: str):
        self.logger = logging.getLogger(name)
        self.level = self.logger.level

    def __enter__(self):
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def _adapter_in_compute_dtype(unet, name: str, part: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """fp8 weight storage (modules.generation.speed): peft gives a new adapter its base layer's
    dtype, which is float8 between calls, where matmuls do not run and the LoRA would be rounded
    to 3 mantissa bits. Put the adapter in the compute dtype and load its values again, exactly."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import set_peft_model_state_dict

    for layer in unet.modules():
        if not isinstance(layer, BaseTunerLayer):
            continue
        for attr in layer.adapter_layer_names:
            holder = getattr(layer, attr, None)
            if holder is None or name not in holder:
                continue
            if isinstance(holder[name], torch.nn.Module):
                holder[name].to(dtype=dtype)
            else:  # a ParameterDict entry (embedding LoRAs)
                holder[name] = torch.nn.Parameter(holder[name].detach().to(dtype), requires_grad=False)
    set_peft_model_state_dict(unet, part, adapter_name=name)
