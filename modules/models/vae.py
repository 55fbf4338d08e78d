"""External VAE files: A1111's `sd_vae` setting and `models/VAE/`.

`VaeLibrary` lists the files and turns a setting value into a file: "None" keeps the
checkpoint's own VAE, "Automatic" looks for one named after the checkpoint, anything else
is a file name. `VaeSwitch` puts a file's weights into a loaded model, built from that
model's own VAE config so scaling factor and block layout stay the checkpoint's; the
checkpoint's VAE waits on the CPU until it is wanted back.

Files come in the LDM layout of A1111 (`encoder.down.0.block.0...`, maybe under
`first_stage_model.`, often with `model_ema.*`/`loss.*` extras) or diffusers' layout
(`encoder.down_blocks.0.resnets.0...`); LDM keys go through diffusers' own converter.
"""

from __future__ import annotations

import logging
from pathlib import Path

from typing import TYPE_CHECKING

from modules.models.catalog import SHORTHASH_LENGTH, HashCache, natural_sort_key
from modules.models.embeddings import file_signature, relative_name, scan_files

if TYPE_CHECKING:  # torch is imported where a VAE is loaded, so listing VAEs stays light
    import torch

    from modules.models.loaded import LoadedModel

log = logging.getLogger(__name__)

VAE_EXTENSIONS = (".safetensors", ".pt", ".ckpt")
AUTOMATIC = "Automatic"
NONE = "None"
# Beside a checkpoint, `<stem>.vae.<ext>` belongs to it (A1111's "Automatic"); safest format first.
SIDECAR_SUFFIXES = (".vae.safetensors", ".vae.pt", ".vae.ckpt")
# Prefixes a VAE's keys may carry: inside a full checkpoint, or saved from a pipeline.
KEY_PREFIXES = ("first_stage_model.", "vae.")
VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
DIFFUSERS_MARKERS = ("down_blocks.", "up_blocks.", "mid_block.")
# diffusers' attention names before 0.14, still found in old files.
OLD_ATTENTION_NAMES = ((".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0."))


class VaeLibrary:
    """The VAE files users can choose, named and sorted by file name (with extension) as A1111 does."""

    def __init__(self, dirs: tuple[Path, ...], hashes: HashCache):
        self.dirs = tuple(Path(d) for d in dirs)
        self.hashes = hashes
        self._files: list[Path] = []
        self.refresh()

    def refresh(self) -> None:
        """Rescan the folders. A file name found twice: the first one wins."""
        seen: dict[str, Path] = {}
        for path in scan_files(self.dirs, VAE_EXTENSIONS):
            if path.name in seen:
                log.warning("Ignoring VAE %s: %s has the same name", path, seen[path.name])
                continue
            seen[path.name] = path
        self._files = sorted(seen.values(), key=lambda p: natural_sort_key(p.name))

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    def choices(self) -> list[str]:
        """The `sd_vae` dropdown: the two special values, then every file name."""
        return [AUTOMATIC, NONE, *(p.name for p in self._files)]

    def find(self, name: str) -> Path | None:
        """The file called `name`: its file name, that ignoring case, its path relative to
        a VAE folder, or its stem (a name without extension, as infotexts may carry)."""
        name = (name or "").strip()
        files = self._files
        for matches in (
            lambda p: p.name == name,
            lambda p: p.name.casefold() == name.casefold(),
            lambda p: relative_name(p, self.dirs) == name,
            lambda p: p.stem == name,
        ):
            found = next((p for p in files if matches(p)), None)
            if found is not None:
                return found
        return None

    def resolve(self, choice: str, checkpoint: Path | None) -> Path | None:
        """The file the setting `choice` means for `checkpoint`; None = the checkpoint's own VAE."""
        choice = (choice or "").strip()
        if choice.casefold() == NONE.casefold():
            return None
        if choice.casefold() == AUTOMATIC.casefold():
            return self.automatic(checkpoint)
        found = self.find(choice)
        if found is None:
            raise ValueError(f"VAE not found: '{choice}'. Available: {', '.join(self.choices())}")
        return found

    def automatic(self, checkpoint: Path | None) -> Path | None:
        """`<stem>.vae.safetensors|pt|ckpt` beside the checkpoint, else a file in the VAE
        folders with the checkpoint's stem (or `<stem>.vae`), else None."""
        if checkpoint is None:
            return None
        checkpoint = Path(checkpoint)
        stem = checkpoint.name if checkpoint.is_dir() else checkpoint.stem
        for suffix in SIDECAR_SUFFIXES:
            sidecar = checkpoint.with_name(stem + suffix)
            if sidecar.is_file():
                return sidecar
        for wanted in (stem, stem + ".vae"):
            found = next((p for p in self._files if p.stem == wanted), None)
            if found is not None:
                return found
        return None

    def shorthash(self, path: Path) -> str | None:
        """A1111's `VAE hash:`: the first 10 hex digits of the file's SHA-256."""
        digest = self.hashes.sha256(path, compute=True)
        return digest[:SHORTHASH_LENGTH] if digest else None

    def describe(self) -> list[dict]:
        """A1111's `/sdapi/v1/sd-vae` answer."""
        return [{"model_name": p.name, "filename": str(p)} for p in self._files]


# --------------------------------------------------------------------------- reading files


def read_vae_state_dict(path: Path, config) -> dict[str, torch.Tensor]:
    """A VAE file's weights under diffusers' AutoencoderKL names; other tensors dropped."""
    from modules.models.arch import first_line

    path = Path(path)
    raw = _read_tensors(path)
    keys = list(raw)
    prefix = next((p for p in KEY_PREFIXES if any(k.startswith(p + VAE_PARTS[0]) for k in keys)), "")
    state = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix) and k[len(prefix):].startswith(VAE_PARTS)}
    if not state:
        raise ValueError(f"VAE file {path.name} holds no VAE weights (no encoder/decoder tensors)")
    if any(marker in k for k in state for marker in DIFFUSERS_MARKERS):
        return {_new_attention_name(k): v for k, v in state.items()}
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    try:
        return convert_ldm_vae_checkpoint(state, dict(config))
    except Exception as e:  # the converter assumes SD's VAE topology and fails on others
        raise ValueError(f"VAE file {path.name} is not a VAE in the LDM layout this model uses ({first_line(e)})") from e


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    import torch

    from modules.models.arch import CheckpointReadError, first_line, load_ckpt_state_dict

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:
            raise ValueError(f"VAE file {path.name} is truncated or not a safetensors file ({first_line(e)})") from e
    try:
        state = load_ckpt_state_dict(path)
    except CheckpointReadError as e:
        raise ValueError(f"VAE file {path.name} cannot be read: {e.reason}") from e
    return {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _new_attention_name(key: str) -> str:
    for old, new in OLD_ATTENTION_NAMES:
        if old in key:
            return key.replace(old, new)
    return key


def build_vae(path: Path, config, device: torch.device, dtype: torch.dtype):
    """An AutoencoderKL from `config` holding the weights of `path`, on `device` in `dtype`.

    Built on the meta device and filled by assignment, so no memory goes to a random
    initialisation. Every tensor the config expects must be there with its exact shape.
    """
    import torch

    from diffusers import AutoencoderKL

    state = read_vae_state_dict(path, config)
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(config)
    _check_fits(path, state, vae.state_dict())
    # copy=True: tensors from a memory-mapped .ckpt must not keep the file mapped.
    state = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype, copy=True) for k, v in state.items()}
    vae.load_state_dict(state, strict=True, assign=True)
    return vae.eval().requires_grad_(False)


def _check_fits(path: Path, state: dict, expected: dict) -> None:
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        key = wrong[0]
        raise ValueError(
            f"VAE file {path.name} does not fit this model: {key} has shape {list(state[key].shape)}, "
            f"the model's VAE expects {list(expected[key].shape)} ({len(wrong)} tensors differ)"
        )
    if missing:
        raise ValueError(f"VAE file {path.name} does not fit this model: it lacks {len(missing)} tensors (e.g. {missing[0]})")
    if extra:
        raise ValueError(
            f"VAE file {path.name} does not fit this model: it has {len(extra)} tensors the model's VAE lacks (e.g. {extra[0]})"
        )


# --------------------------------------------------------------------------- switching


class VaeSwitch:
    """Which VAE a loaded model decodes with. Owns the checkpoint's own VAE while a file's
    VAE is in use, parked on the CPU so its memory on the accelerator is given back."""

    def __init__(self, model: LoadedModel):
        self.model = model
        self._own = None  # the checkpoint's VAE while a file's VAE is in use
        self._current: Path | None = None
        self._loaded_signature: tuple | None = None

    @property
    def current(self) -> Path | None:
        """The VAE file in use; None while the checkpoint's own VAE is."""
        return self._current

    def apply(self, path: Path | None) -> None:
        """Decode with the VAE in `path`, or with the checkpoint's own for None. The same
        unchanged file again is a no-op; a file that does not fit raises ValueError and
        leaves the model as it was."""
        model = self.model
        if path is None:
            if self._own is not None:
                model.vae = self._own.to(model.device)
                self._own = None
                log.info("Restored the checkpoint's own VAE")
            self._current = self._loaded_signature = None
            return
        path = Path(path).resolve()
        signature = file_signature(path)
        if signature is None:
            raise ValueError(f"VAE file {path} does not exist")
        if path == self._current and signature == self._loaded_signature:
            return
        own = self._own if self._own is not None else model.vae
        vae = build_vae(path, own.config, model.device, model.vae_dtype)
        if self._own is None:
            self._own = model.vae.to("cpu")
        model.vae = vae
        self._current, self._loaded_signature = path, signature
        log.info("Loaded VAE %s", path)
