"""An infotext back into generation parameters: what A1111's "paste" does for the ↙ button,
PNG Info's "send to", and the API's `infotext` field.

The keys are the ones `infotext_fields` writes (so every field the core records comes back),
plus A1111's older spellings: a combined sampler name ("DPM++ 2M Karras"), hires keys without
a schedule, missing keys meaning their defaults. Whatever cannot be applied is listed by key
with the reason, never raised: pasted text can be anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from modules.generation import samplers
from modules.generation.params import (
    INPAINT_AREAS, MASK_MODES, MASKED_CONTENT, SAME_CHECKPOINT, SAME_SAMPLER, SAME_SCHEDULER, GenerationParams, Img2ImgParams,
)
from modules.outputs.infotext import parse_infotext

if TYPE_CHECKING:
    from modules.controlnet.units import UnitSettings

# The ControlNet extension's per-unit key: `ControlNet 0: "Module: canny, Model: ..., Weight: 1.0, ..."`.
_CONTROLNET_KEY = re.compile(r"^ControlNet (\d{1,2})$")


def _flag(value: str) -> bool:
    """A1111's `True`/`False` values."""
    if str(value).strip().lower() in ("true", "1", "yes"):
        return True
    if str(value).strip().lower() in ("false", "0", "no"):
        return False
    raise ValueError(value)


def _restorer(value: str) -> bool:
    """A1111 writes "Face restoration: <model name>" when Restore faces was on."""
    if not str(value).strip():
        raise ValueError(value)
    return True


# Infotext key -> (parameter, converter). Converters raise ValueError on a bad value.
_COMMON: dict[str, tuple[str, Callable[[str], Any]]] = {
    "Prompt": ("prompt", str),
    "Negative prompt": ("negative_prompt", str),
    "Steps": ("steps", int),
    "Sampler": ("sampler_name", str),
    "Schedule type": ("scheduler", str),
    "CFG scale": ("cfg_scale", float),
    "Seed": ("seed", int),
    "Variation seed": ("subseed", int),
    "Variation seed strength": ("subseed_strength", float),
    "Seed resize from-1": ("seed_resize_from_w", int),
    "Seed resize from-2": ("seed_resize_from_h", int),
    "Tiling": ("tiling", _flag),
    "Size-1": ("width", int),
    "Size-2": ("height", int),
    "Denoising strength": ("denoising_strength", float),
    "Face restoration": ("restore_faces", _restorer),
    "Clip skip": ("clip_skip", int),
    "Emphasis": ("emphasis", str),
    # A1111's sampler parameters (settings there; parameters that travel with the job here)
    "RNG": ("randn_source", str),
    "ENSD": ("eta_noise_seed_delta", int),
    "Eta": ("eta_ancestral", float),
    "Eta DDIM": ("eta_ddim", float),
    "Sigma churn": ("s_churn", float),
    "Sigma tmin": ("s_tmin", float),
    "Sigma tmax": ("s_tmax", float),
    "Sigma noise": ("s_noise", float),
    "Schedule min sigma": ("sigma_min", float),
    "Schedule max sigma": ("sigma_max", float),
    "Schedule rho": ("rho", float),
    "Discard penultimate sigma": ("always_discard_next_to_last_sigma", _flag),
    "Beta schedule alpha": ("beta_dist_alpha", float),
    "Beta schedule beta": ("beta_dist_beta", float),
    "Beta scheduler alpha": ("beta_dist_alpha", float),  # the spelling A1111's settings read back
    "Beta scheduler beta": ("beta_dist_beta", float),
    "NGMS": ("s_min_uncond", float),
    "Token merging ratio": ("token_merging_ratio", float),
    "Token merging ratio hr": ("token_merging_ratio_hr", float),
    "Distilled CFG Scale": ("distilled_cfg_scale", float),  # Forge's, Flux dev
    "Shift": ("shift", float),
    "Refiner": ("refiner_checkpoint", str),
    "Refiner switch at": ("refiner_switch_at", float),
    "Refiner switch by sampling steps": ("refiner_switch_by_sample_steps", _flag),
}
_HIRES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "Hires upscale": ("hr_scale", float),
    "Hires resize-1": ("hr_resize_x", int),
    "Hires resize-2": ("hr_resize_y", int),
    "Hires steps": ("hr_second_pass_steps", int),
    "Hires upscaler": ("hr_upscaler", str),
    "Hires sampler": ("hr_sampler_name", str),
    "Hires schedule type": ("hr_scheduler", str),
    "Hires prompt": ("hr_prompt", str),
    "Hires negative prompt": ("hr_negative_prompt", str),
    "Hires checkpoint": ("hr_checkpoint_name", str),
    "Hires refiner": ("hires_fix_refiner_pass", str),
}
_IMG2IMG: dict[str, tuple[str, Callable[[str], Any]]] = {
    "Mask blur": ("mask_blur", int),
    "Mask mode": ("inpainting_mask_invert", str),
    "Masked content": ("inpainting_fill", str),
    "Inpaint area": ("inpaint_full_res", str),
    "Masked area padding": ("inpaint_full_res_padding", int),
}
# Keys that describe the picture but set no control here: the model and VAE are settings
# (A1111 does not switch them on paste by default), the hashes name files the prompt's tags
# and words already call.
_SETTINGS = {"Model hash": "sd_model_checkpoint", "Model": "sd_model_checkpoint", "VAE": "sd_vae", "VAE hash": "sd_vae"}
_INFORMATIONAL = {"Version", "Lora hashes", "TI hashes", "Size", "Hires resize", "Hires resize-1", "Hires resize-2", "Seed resize from"}

# The halves of WxH values, as a person reading a warning knows them.
_SIZE_PARTS = {"Size-1": "Size (width)", "Size-2": "Size (height)", "Hires resize-1": "Hires resize (width)",
               "Hires resize-2": "Hires resize (height)", "Seed resize from-1": "Seed resize from (width)",
               "Seed resize from-2": "Seed resize from (height)"}

# A1111's defaults for keys an infotext leaves out (it writes them only when not default).
_MISSING_MEANS = {"clip_skip": 1, "scheduler": "Automatic", "emphasis": "Original", "randn_source": "GPU", "sigma_min": 0.0,
                  "sigma_max": 0.0, "rho": 0.0, "restore_faces": False, "subseed_strength": 0.0, "seed_resize_from_w": 0,
                  "seed_resize_from_h": 0, "tiling": False, "refiner_checkpoint": "None", "refiner_switch_by_sample_steps": False, "shift": 0.0}
_HIRES_MISSING_MEANS = {"hr_resize_x": 0, "hr_resize_y": 0, "hr_sampler_name": SAME_SAMPLER, "hr_scheduler": SAME_SCHEDULER,
                        "hr_prompt": "", "hr_negative_prompt": "", "hr_second_pass_steps": 0, "hr_checkpoint_name": SAME_CHECKPOINT}
_IMG2IMG_MISSING_MEANS = {"mask_blur": 0, "inpainting_mask_invert": MASK_MODES[0], "inpainting_fill": MASKED_CONTENT[1],
                          "inpaint_full_res": INPAINT_AREAS[0], "inpaint_full_res_padding": 32}


@dataclass
class Pasted:
    """What an infotext sets: parameter values, A1111 settings it names (`settings`, e.g.
    the checkpoint), the ControlNet units it describes by index (`controlnet`: everything but
    the picture, for the page's unit controls), and the keys that could not be applied, with why."""

    values: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    controlnet: dict[int, "UnitSettings"] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)  # the infotext's keys as read (after on_infotext_pasted)

    def report(self) -> str:
        return "; ".join(f"{key}: {why}" for key, why in self.skipped.items())


def params_from_infotext(text: str, img2img: bool = False, upscalers: Iterable[str] = (),
                         on_pasted: Callable[[str, dict], Any] | None = None, known: Iterable[str] = ()) -> Pasted:
    """The parameters an infotext names, each checked on its own so one bad value does not
    lose the others. `img2img` adds the mask keys (and drops the hires ones); `upscalers`
    are the model upscaler names a "Hires upscaler" may name besides the built-ins.
    `on_pasted(text, fields)` (the extensions' on_infotext_pasted) may add or change the read
    keys first; `known` are keys other controls take (an always-on script's), not reported."""
    fields = parse_infotext(text)
    if on_pasted is not None:
        on_pasted(text, fields)
    known = set(known)
    model = Img2ImgParams if img2img else GenerationParams
    hires = not img2img and any(k in fields for k in ("Hires upscale", "Hires upscaler", "Hires resize-1"))
    table = {**_COMMON, **(_IMG2IMG if img2img else _HIRES)}
    pasted = Pasted(fields=fields)
    for key, raw in fields.items():
        if key in table:
            name, convert = table[key]
            try:
                pasted.values[name] = convert(raw.strip() if isinstance(raw, str) and convert is not str else raw)
            except ValueError:
                pasted.skipped[key] = f"'{raw}' is not a valid value"
        elif _CONTROLNET_KEY.match(key):
            _paste_unit(pasted, key, raw)
        elif key in _SETTINGS:
            if key in ("Model", "VAE"):
                pasted.settings.setdefault(_SETTINGS[key], raw)
            else:
                pasted.settings[_SETTINGS[key]] = raw  # a hash finds the file more surely than a name
        elif key not in _INFORMATIONAL and key not in known and not (key.startswith("Hires") and img2img):
            pasted.skipped[key] = "not a setting this program has"
    for key in ("Size", "Hires resize", "Seed resize from"):
        if key in fields and f"{key}-1" not in fields and (key != "Hires resize" or not img2img):
            pasted.skipped[key] = f"'{fields[key]}' is not a size like 512x512"
    if len(fields) <= 2:
        return pasted  # no parameters line: only the prompts
    defaults = {**_MISSING_MEANS, **(_IMG2IMG_MISSING_MEANS if img2img else {}), **(_HIRES_MISSING_MEANS if hires else {})}
    for name, value in defaults.items():
        pasted.values.setdefault(name, value)
    if hires:
        pasted.values["enable_hr"] = True
    _drop_invalid(pasted, model, {name: key for key, (name, _) in table.items()}, tuple(upscalers))
    _normalise_samplers(pasted.values)
    pasted.skipped = {_SIZE_PARTS.get(key, key): why for key, why in pasted.skipped.items()}
    return pasted


def _paste_unit(pasted: Pasted, key: str, raw: str) -> None:
    """One `ControlNet N` value, as the extension reads it back; a malformed one is skipped with why."""
    from modules.controlnet.units import settings_from_infotext

    try:
        pasted.controlnet[int(_CONTROLNET_KEY.match(key).group(1))] = settings_from_infotext(str(raw))
    except ValueError as exc:
        pasted.skipped[key] = f"'{raw}' is not a ControlNet unit ({exc})"


def _normalise_samplers(values: dict[str, Any]) -> None:
    """Sampler and schedule as the controls name them: "DPM++ 2M Karras" becomes DPM++ 2M with
    Karras, and a sampler's own default schedule is Automatic (the infotext spells it out)."""
    if "sampler_name" in values:
        sampler, schedule = samplers.resolve(values["sampler_name"], values.get("scheduler", "Automatic"))
        values["sampler_name"], values["scheduler"] = sampler.name, schedule.label
    if values.get("hr_sampler_name", SAME_SAMPLER) != SAME_SAMPLER:
        hr_schedule = values.get("hr_scheduler", SAME_SCHEDULER)
        sampler, schedule = samplers.resolve(values["hr_sampler_name"], "Automatic" if hr_schedule == SAME_SCHEDULER else hr_schedule)
        values["hr_sampler_name"] = sampler.name
        if hr_schedule != SAME_SCHEDULER or schedule.name != "automatic":
            values["hr_scheduler"] = schedule.label


def _drop_invalid(pasted: Pasted, model: type[GenerationParams], keys: dict[str, str], upscalers: tuple[str, ...] = ()) -> None:
    """Check each value with the parameter model; the sampler and schedule, and the hires
    ones, are checked together too, since each names the other's choices. Of a pair that only
    fails together, the later one (the schedule) is dropped."""
    hires = "enable_hr" in pasted.values

    def fails(values: dict) -> str | None:
        try:
            model.create(upscalers, **values, **({"enable_hr": True} if hires or any(n.startswith("hr_") for n in values) else {}))
        except ValueError as exc:
            return str(exc)
        return None

    def drop(name: str, why: str) -> None:
        pasted.skipped[keys.get(name, name)] = why
        del pasted.values[name]

    for name in [n for n in pasted.values if n != "enable_hr"]:
        why = fails({name: pasted.values[name]})
        if why:
            drop(name, why)
    for group in (("sampler_name", "scheduler"), ("hr_sampler_name", "hr_scheduler", "hr_upscaler")):
        present = [n for n in group if n in pasted.values]
        why = fails({n: pasted.values[n] for n in present})
        while why and present:
            drop(present.pop(), why)
            why = fails({n: pasted.values[n] for n in present})
