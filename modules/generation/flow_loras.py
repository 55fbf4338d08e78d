"""`<lora:name:w>` on Flux and SD 3/3.5, through diffusers' own LoRA loaders.

diffusers' FluxLoraLoaderMixin reads both the kohya layout (`lora_unet_double_blocks_…`,
`lora_te1_…`) and the diffusers/peft layout; SD3LoraLoaderMixin reads the diffusers layout.
Each file becomes a peft adapter on the shared transformer (and text encoders), weighted with
`set_adapters`; a job without LoRAs deletes them all, so it runs the base weights exactly.
LoRAs trained for SD 1.x/2.x/SDXL (UNet block names) are refused with a note before loading:
peft would otherwise find nothing to attach to, or fail half-way. A file diffusers reads but
attaches nothing from (kohya's SD 3 layout, which diffusers 0.42 does not convert) is left out
with a note too, rather than failing the job in set_adapters.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

# Key fragments only a UNet LoRA (SD 1.x, 2.x, SDXL) has, in the kohya and diffusers layouts.
_UNET_MARKERS = ("down_blocks", "up_blocks", "mid_block", "input_blocks", "output_blocks", "middle_block", "lora_te2_")
# Key fragments of Flux/SD 3 LoRAs (kohya: joint/double/single blocks; diffusers: transformer.),
# looked for first: kohya's SD 3 LoRAs name CLIP-G lora_te2_ as SDXL's do.
_FLOW_MARKERS = ("joint_blocks", "double_blocks", "single_blocks", "transformer.")
KOHYA_SD3_MARKER = "lora_unet_joint_blocks_"
FAMILY_NAMES = {"flux": "Flux", "sd3": "SD 3"}


def _read(path: Path) -> dict:
    from modules.models.lora import read_lora_file

    state, _ = read_lora_file(path)
    return state


def made_for_unet(state: dict) -> bool:
    """Whether a LoRA's keys name UNet blocks: one made for SD 1.x/2.x/SDXL."""
    if any(marker in key for key in state for marker in _FLOW_MARKERS):
        return False
    return any(marker in key for key in state for marker in _UNET_MARKERS)


class FlowLoras:
    """The LoRAs active on one Flux/SD 3 pipeline's components (loaded on first use, kept while in use)."""

    def __init__(self, pipe, family: str):
        self.pipe = pipe
        self.family = family
        self._loaded: dict[tuple, str] = {}  # (path, mtime) -> adapter name
        self._refused: dict[tuple, str] = {}  # (path, mtime) -> why
        self.active: list[tuple[Any, float, float]] = []  # (LoraFile, te, unet) as applied

    def state(self) -> tuple:
        """What the text encoders' LoRAs are now: part of the prompt cache key."""
        return tuple((str(f.path), te) for f, te, _ in self.active)

    def apply(self, wanted: Sequence[tuple[Any, float, float]]) -> list[str]:
        """Make exactly these (file, text-encoder weight, transformer weight) active; returns
        warnings for files that cannot be used (they are left out, the rest still apply)."""
        warnings: list[str] = []
        names, weights, active = [], [], []
        for file, te, unet in wanted:
            key = _key(file.path)
            name = self._loaded.get(key) or self._load(key, file, warnings)
            if name is None:
                continue
            names.append(name)
            weights.append(self._weights(name, te, unet))
            active.append((file, te, unet))
        unused = [n for k, n in self._loaded.items() if n not in names]
        if unused:
            self.pipe.delete_adapters(unused)
            self._loaded = {k: n for k, n in self._loaded.items() if n in names}
        if names:
            self.pipe.set_adapters(names, adapter_weights=weights)
        self.active = active
        return warnings

    def clear(self) -> None:
        if self._loaded:
            self.pipe.unload_lora_weights()
        self._loaded, self.active = {}, []

    @property
    def loaded(self) -> bool:
        return bool(self._loaded)

    def _load(self, key: tuple, file, warnings: list[str]) -> str | None:
        if key in self._refused:
            warnings.append(self._refused[key])
            return None
        family = FAMILY_NAMES[self.family]
        try:
            state = _read(file.path)
            if made_for_unet(state):
                raise ValueError(f"it is made for SD 1.x, 2.x or SDXL, not {family}")
            name = f"lora_{len(self._refused) + len(self._loaded)}_{abs(hash(key)) % 10**8}"
            self.pipe.load_lora_weights(state, adapter_name=name)
            if not self._present(name):
                if self.family == "sd3" and any(k.startswith(KOHYA_SD3_MARKER) for k in state):
                    raise ValueError("kohya-layout SD 3 LoRAs (lora_unet_joint_blocks_… keys) are not supported yet; "
                                     "a diffusers-layout one (transformer.… keys) works")
                raise ValueError(f"none of its layers fit this {family} model")
        except Exception as exc:  # a bad or foreign file costs the LoRA, not the job
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            note = f"LoRA '{file.name}' was not applied: {reason}."
            log.warning(note)
            self._refused[key] = note
            warnings.append(note)
            return None
        self._loaded[key] = name
        return name

    def _present(self, name: str) -> bool:
        """Whether diffusers attached adapter `name` to any component (it may read a file and attach nothing)."""
        return any(name in adapters for adapters in self.pipe.get_list_adapters().values())

    def _weights(self, name: str, te: float, unet: float) -> Any:
        """One weight, or per component where the LoRA has text-encoder layers (A1111's te multiplier)."""
        components = self.pipe.get_list_adapters() if hasattr(self.pipe, "get_list_adapters") else {}
        with_te = [c for c, adapters in components.items() if name in adapters and c.startswith("text_encoder")]
        if not with_te or te == unet:
            return unet
        return {"transformer": unet, **{c: te for c in with_te}}


def _key(path: Path) -> tuple:
    path = Path(path)
    try:
        return str(path), path.stat().st_mtime_ns
    except OSError:
        return str(path), 0
