"""Writing a trained LoRA the way kohya's sd-scripts do, so A1111, Forge, ComfyUI and this
UI's own loader all read it: `lora_unet_…`/`lora_te_…` (SDXL: `lora_te1_…`, `lora_te2_…`)
module names with `.lora_down.weight`, `.lora_up.weight` and `.alpha`, and the training
settings as `ss_*` strings in the safetensors header (A1111's cards read `ss_output_name`,
`ss_tag_frequency`, `ss_sd_model_name`, `ss_resolution` ...).

diffusers' PEFT-to-kohya key conversion does the renaming; two things are put right after it:
SD 1.x/2.x text encoders are `lora_te_` in kohya's files (diffusers writes `lora_te1_`), and
`.alpha` is the run's alpha rather than the rank (peft's scale is alpha/rank, as kohya's).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from modules.files import atomic_path

BASE_MODEL_VERSIONS = {"sd1": "sd_v1", "tiny-sd1": "sd_v1", "demo-shapes": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
MODELSPEC_ARCHITECTURES = {"sd_v1": "stable-diffusion-v1/lora", "sd_v2": "stable-diffusion-v2-512/lora", "sdxl_base_v1-0": "stable-diffusion-xl-v1-base/lora"}


def kohya_state_dict(parts: Mapping[str, Mapping[str, torch.Tensor]], alpha: float, sdxl: bool, conv_alpha: float | None = None) -> dict[str, torch.Tensor]:
    """`parts`: each component's peft LoRA weights ("unet", "text_encoder", "text_encoder_2":
    `….lora_A.weight` / `….lora_B.weight` keys without adapter names), as
    `get_peft_model_state_dict` gives them. Returns kohya keys, tensors contiguous in fp16-safe
    float32 (kohya saves in the training's save precision; float32 keeps every value).
    `conv_alpha`: the alpha of 3×3 convolution modules (LoCon), whose down weight is 4-D with a
    3×3 kernel."""
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

    prefixed = {f"{component}.{_kohya_module(component, key)}": value for component, weights in parts.items() for key, value in weights.items()}
    converted = convert_state_dict_to_kohya(prefixed)
    out: dict[str, torch.Tensor] = {}
    for key, value in converted.items():
        if not sdxl and key.startswith("lora_te1_"):
            key = "lora_te_" + key[len("lora_te1_"):]
        if key.endswith(".alpha"):
            down = converted.get(key.removesuffix(".alpha") + ".lora_down.weight")
            conv = conv_alpha is not None and down is not None and down.dim() == 4 and down.shape[-1] > 1
            value = torch.tensor(float(conv_alpha if conv else alpha))
        out[key] = value.detach().to("cpu", torch.float32).contiguous()
    return out


def _kohya_module(component: str, key: str) -> str:
    """transformers 5 flattened CLIPTextModel (no `text_model.` level); kohya's names, which
    A1111 and every loader expect, keep it."""
    if component.startswith("text_encoder") and not key.startswith("text_model."):
        return "text_model." + key
    return key


def training_metadata(values: Mapping[str, Any]) -> dict[str, str]:
    """`ss_*` (and `modelspec.*`) header strings; numbers and flags written as kohya does
    (str(value)), dicts as JSON."""
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return out


def save_lora(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> Path:
    """Write atomically: a LoRA list refreshing mid-write never sees half a file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        save_file(dict(tensors), str(temp), metadata=dict(metadata))
    return path
