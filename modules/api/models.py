"""A1111's API request bodies, mapped onto the one parameter model.

The classes list A1111's field names with A1111's API defaults (they differ from the UI's:
Euler, 50 steps, and for img2img "fill" / "Only masked" / padding 0). Fields this server
does not use are still accepted, because clients send them all; the few whose silent
omission would give a different picture than the client asked for are refused with a
message instead (see `unsupported`).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from typing import Annotated, Any

from PIL import Image
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from modules.generation import samplers
from modules.generation.params import MAX_SIZE, MIN_SIZE, SETTING_FIELDS, GenerationParams, Img2ImgParams, is_text


def truncate_fraction(value: Any) -> Any:
    """A fractional number sent for a whole-number field is cut to its integer part, as
    A1111's API (pydantic 1) does: `hr_second_pass_steps: 7.5` means 7. Anything else is
    left to the field's own validation."""
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return value


# A whole-number request field that takes 7.5 as 7 (A1111's clients send such numbers).
ApiInt = Annotated[int, BeforeValidator(truncate_fraction)]

_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)

# Request fields mapped straight onto the parameter model (the rest need translating or are unused).
DIRECT_FIELDS = ("prompt", "negative_prompt", "seed", "scheduler", "batch_size", "n_iter", "steps", "cfg_scale", "width", "height", "denoising_strength",
                 "subseed", "subseed_strength", "tiling", "distilled_cfg_scale", "shift")
HIRES_FIELDS = ("enable_hr", "hr_scale", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_prompt", "hr_negative_prompt")
IMG2IMG_FIELDS = ("resize_mode", "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding", "inpainting_mask_invert")


# alwayson_scripts' key for the ControlNet extension, lower-cased (A1111 matches titles in any case).
CONTROLNET_SCRIPT = "controlnet"

# The most styles, init images or extras images one request may list (A1111 sets none; a
# client that sends thousands is not a studio's).
MAX_LIST = 100


class Txt2ImgRequest(BaseModel):
    """POST /sdapi/v1/txt2img. JSON null means the default, as in A1111."""

    model_config = ConfigDict(extra="allow")

    prompt: str | None = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = Field(None, max_length=MAX_LIST)
    seed: ApiInt | None = -1
    subseed: ApiInt | None = -1
    subseed_strength: float | None = 0
    seed_resize_from_h: ApiInt | None = -1
    seed_resize_from_w: ApiInt | None = -1
    sampler_name: str | None = None
    sampler_index: str | None = "Euler"
    scheduler: str | None = None
    batch_size: ApiInt | None = 1
    n_iter: ApiInt | None = 1
    steps: ApiInt | None = 50
    cfg_scale: float | None = 7.0
    distilled_cfg_scale: float | None = 3.5  # Forge's: Flux dev's guidance embedding
    shift: float | None = None  # the flow schedule's shift for Flux and SD 3 (0 or null: the model's)
    width: ApiInt | None = 512
    height: ApiInt | None = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool | None = False
    do_not_save_grid: bool | None = False
    eta: float | None = None
    s_churn: float | None = None
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None
    s_min_uncond: float | None = None
    denoising_strength: float | None = 0.75
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool | None = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool | None = False
    firstpass_image: str | None = None
    comments: dict | None = None
    enable_hr: bool | None = False
    firstphase_width: ApiInt | None = 0
    firstphase_height: ApiInt | None = 0
    hr_scale: float | None = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: ApiInt | None = 0
    hr_resize_x: ApiInt | None = 0
    hr_resize_y: ApiInt | None = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = ""
    hr_negative_prompt: str | None = ""
    force_task_id: str | None = None
    script_name: str | None = None
    script_args: list | None = Field(default_factory=list)
    alwayson_scripts: dict | None = Field(default_factory=dict)
    send_images: bool | None = True
    save_images: bool | None = False
    infotext: str | None = None

    def text_problem(self) -> str | None:
        """The first field whose text holds a lone surrogate (JSON's "\\ud800": not text; it
        would fail the tokenizer, the infotext, a file name and the echo of the request)."""
        return _surrogate_in(self.model_dump(exclude={"init_images", "mask"}), "")

    def unsupported(self) -> list[str]:
        """Requested features this server would silently leave out: refused, with their names."""
        problems = []
        if self.firstpass_image:
            problems.append("firstpass_image (not supported yet)")
        return problems

    def extension_alwayson(self) -> list[tuple[str, list]]:
        """`alwayson_scripts` entries other than ControlNet, as (title, args): the extensions'
        always-on scripts (A1111's shape {"title": {"args": [...]}}; a missing args is [])."""
        found = []
        for name, value in (self.alwayson_scripts or {}).items():
            if str(name).lower() == CONTROLNET_SCRIPT:
                continue
            if not isinstance(value, dict) or not isinstance(value.get("args", []), (list, type(None))):
                raise ValueError(f"alwayson_scripts.{name} must be an object {{\"args\": [...]}} with the script's arguments in order.")
            found.append((str(name), list(value.get("args") or [])))
        return found

    def controlnet_args(self) -> list:
        """`alwayson_scripts.controlnet.args`: the ControlNet extension's units as sent (A1111
        matches script titles in any case: webuiapi sends "ControlNet"); [] when there are none."""
        found = [(name, value) for name, value in (self.alwayson_scripts or {}).items() if str(name).lower() == CONTROLNET_SCRIPT]
        if not found:
            return []
        if len(found) > 1:
            raise ValueError(f"alwayson_scripts names ControlNet twice ({', '.join(repr(n) for n, _ in found)}): send one.")
        name, value = found[0]
        if not isinstance(value, dict) or not isinstance(value.get("args", []), list):
            raise ValueError(f"alwayson_scripts.{name} must be an object {{\"args\": [unit, ...]}} with a list of ControlNet units.")
        return value.get("args") or []

    def generation_values(self, settings: dict[str, Any] | None = None, upscalers: tuple[str, ...] = ()) -> dict[str, Any]:
        """The request as GenerationParams fields; None values are left to the parameter model's
        defaults, and the settings jobs carry (Clip skip, emphasis, sampler parameters: `settings`,
        by parameter name) to the server's unless override_settings names them. With
        `infotext`, what it names fills every field the request does not set itself (A1111)."""
        return self._with_infotext(self._values(dict(settings or {})), upscalers)

    def _with_infotext(self, values: dict[str, Any], upscalers: tuple[str, ...] = ()) -> dict[str, Any]:
        if not self.infotext:
            return values
        from modules.outputs.paste import params_from_infotext

        pasted = params_from_infotext(self.infotext, img2img=isinstance(self, Img2ImgRequest), upscalers=upscalers)
        sent = set(self.model_fields_set)
        overrides = self.override_settings or {}
        own = {"sampler_name": {"sampler_name", "sampler_index"}, **{name: set() for name in SETTING_FIELDS}}
        for name, value in pasted.values.items():
            if name in sent or own.get(name, set()) & sent:
                continue
            if name in SETTING_FIELDS and SETTING_FIELDS[name] in overrides:
                continue
            values[name] = value
        return values

    def adjustments(self, upscalers: tuple[str, ...] = ()) -> list[str]:
        """What the server changed in the request, for the result's warnings: a width or
        height that is not a multiple of 8 is rounded down, as A1111 does (Open WebUI sends
        100x100); a schedule type it does not know means Automatic, as in A1111."""
        notes = []
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and value != _multiple_of_8(value):
                notes.append(f"{name.capitalize()} {value} was rounded down to {_multiple_of_8(value)}, a multiple of 8.")
        for name in ("scheduler", "hr_scheduler"):
            value = getattr(self, name)
            if value and value != "Use same scheduler" and samplers.find_schedule(value) is None:
                notes.append(f"Schedule type '{value}' is not one of {', '.join(s.label for s in samplers.SCHEDULES)}: Automatic was used.")
        if self.infotext:
            from modules.outputs.paste import params_from_infotext

            pasted = params_from_infotext(self.infotext, img2img=isinstance(self, Img2ImgRequest), upscalers=upscalers)
            skipped = pasted.skipped
            notes.extend(f"Infotext '{key}' was not applied: {why}." for key, why in skipped.items())
            notes.extend(f"Infotext 'ControlNet {index}' was not applied: as in A1111, units come from alwayson_scripts.controlnet, "
                         "not from the infotext." for index in pasted.controlnet)
        return notes

    def _values(self, settings: dict[str, Any]) -> dict[str, Any]:
        values = {k: getattr(self, k) for k in DIRECT_FIELDS if getattr(self, k) is not None}
        for name in ("width", "height"):
            if name in values:
                values[name] = _multiple_of_8(values[name])
        for name in ("seed_resize_from_w", "seed_resize_from_h"):  # A1111's -1 (its API default), like any size <= 0: off
            value = getattr(self, name)
            if value is not None:
                values[name] = max(value, 0)
        if "scheduler" in values and samplers.find_schedule(values["scheduler"]) is None:
            values["scheduler"] = "Automatic"
        values["sampler_name"] = self.sampler_name or self.sampler_index or "Euler"
        values.update(self._settings(settings))
        if self.styles:
            values["styles"] = tuple(self.styles)
        if self.disable_extra_networks:
            values["disable_extra_networks"] = True
        if self.restore_faces is not None:
            values["restore_faces"] = self.restore_faces
        if self.refiner_checkpoint not in (None, "", "None", "none"):  # A1111 reads the switch only with a refiner
            values["refiner_checkpoint"] = self.refiner_checkpoint
            if self.refiner_switch_at is not None:
                values["refiner_switch_at"] = self.refiner_switch_at
        if self.enable_hr:
            values.update({k: getattr(self, k) for k in HIRES_FIELDS if getattr(self, k) is not None})
            values["hr_upscaler"] = self.hr_upscaler or "Latent"
            if self.hr_sampler_name:
                values["hr_sampler_name"] = self.hr_sampler_name
            if self.hr_checkpoint_name:
                values["hr_checkpoint_name"] = self.hr_checkpoint_name
            if self.hr_scheduler and samplers.find_schedule(self.hr_scheduler) is not None:
                values["hr_scheduler"] = self.hr_scheduler
        return values

    def _settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The settings-backed fields: the server's, then override_settings'. As in A1111, the
        request's own eta always counts, and its s_churn / s_tmin / s_tmax / s_noise only
        while the matching setting is at its neutral value."""
        overrides = self.override_settings or {}
        values = dict(settings)
        for name, key in SETTING_FIELDS.items():
            if key in overrides and overrides[key] is not None:
                values[name] = clip_skip_value(overrides[key]) if name == "clip_skip" else overrides[key]
        if self.eta is not None:
            values["eta"] = self.eta
        if self.s_min_uncond is not None:  # A1111: the request's own value, else the setting
            values["s_min_uncond"] = self.s_min_uncond
        for name, neutral in (("s_churn", 0.0), ("s_tmin", 0.0), ("s_tmax", 0.0), ("s_noise", 1.0)):
            sent = getattr(self, name)
            if sent is not None and values.get(name, neutral) == neutral:
                values[name] = sent
        return values

    def params(self, settings: dict[str, Any] | None = None, upscalers: tuple[str, ...] = ()) -> GenerationParams:
        """`upscalers`: the model upscaler names hr_upscaler may take (the server's)."""
        return GenerationParams.create(upscalers, **self.generation_values(settings, upscalers))

    def wanted_checkpoint(self) -> str | None:
        wanted = (self.override_settings or {}).get("sd_model_checkpoint") or None
        if wanted is not None and not isinstance(wanted, str):
            raise ValueError(f"override_settings.sd_model_checkpoint must be a checkpoint title or name, got {wanted!r}")
        return wanted

    def wanted_vae(self) -> str | None:
        """override_settings.sd_vae: "Automatic", "None" or a file in models/VAE (checked by the service)."""
        return (self.override_settings or {}).get("sd_vae") or None


class Img2ImgRequest(Txt2ImgRequest):
    """POST /sdapi/v1/img2img: txt2img's fields plus the init images and mask."""

    init_images: list[str] | None = Field(None, max_length=MAX_LIST)
    resize_mode: ApiInt | None = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: ApiInt | None = 4
    mask_blur_y: ApiInt | None = 4
    mask_blur: ApiInt | None = None
    mask_round: bool | None = True
    inpainting_fill: ApiInt | None = 0
    inpaint_full_res: bool | int | None = True
    inpaint_full_res_padding: ApiInt | None = 0
    inpainting_mask_invert: ApiInt | None = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool | None = False

    def unsupported(self) -> list[str]:
        problems = [p for p in super().unsupported() if not p.startswith("firstpass_image")]
        if self.latent_mask:
            problems.append("latent_mask (not supported yet)")
        if self.enable_hr:
            problems.append("enable_hr (hires fix is a txt2img option)")
        return problems

    def _values(self, settings: dict[str, Any]) -> dict[str, Any]:
        values = super()._values(settings)
        values["denoising_strength"] = 0.75 if self.denoising_strength is None else self.denoising_strength
        values.update({k: getattr(self, k) for k in IMG2IMG_FIELDS if getattr(self, k) is not None})
        values["inpaint_full_res"] = bool(values.get("inpaint_full_res", True))
        blur = self.mask_blur if self.mask_blur is not None else max(self.mask_blur_x or 0, self.mask_blur_y or 0)
        values["mask_blur"] = blur
        return values

    def params(self, settings: dict[str, Any] | None = None, upscalers: tuple[str, ...] = ()) -> Img2ImgParams:
        return Img2ImgParams.create(upscalers, **self.generation_values(settings, upscalers))


def _multiple_of_8(value: int) -> int:
    """Sizes in the supported range come down to a multiple of 8; others are left for the
    parameter model to refuse with its message."""
    return value // 8 * 8 if MIN_SIZE <= value <= MAX_SIZE else value


def clip_skip_value(value: Any) -> int:
    """CLIP_stop_at_last_layers as sent by a client: a whole number from 1 to 12."""
    problem = ValueError(f"CLIP_stop_at_last_layers must be a whole number from 1 to 12, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise problem
    try:
        number = float(value)
    except ValueError:
        raise problem from None
    if not number.is_integer() or not 1 <= number <= 12:
        raise problem
    return int(number)


def _surrogate_in(value: Any, where: str, depth: int = 0) -> str | None:
    """Where in a request's values a lone surrogate is, if anywhere (nesting looked at 20 deep)."""
    if isinstance(value, str):
        return None if is_text(value) else f"{where or 'the request'} holds a lone surrogate (an invalid character such as \\ud800): send valid UTF-8 text"
    if depth > 20:
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = _surrogate_in(key, f"{where}: a key", depth + 1) if isinstance(key, str) else None
        found = found or _surrogate_in(item, f"{where}.{key}" if where else str(key), depth + 1)
        if found:
            return found
    return None


def decode_base64(data: str, what: str) -> bytes:
    """The bytes of a base64 field, with or without a data: URL prefix; a readable ValueError otherwise."""
    if not isinstance(data, str) or not data.strip():
        raise ValueError(f"{what} is empty.")
    text = _DATA_URL.sub("", data.strip())
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64.") from None


def decode_image(data: str, what: str, max_pixels: int | None = None) -> Image.Image:
    """A base64 image as sent (first frame, EXIF rotation applied, mode and metadata kept),
    refused with a readable ValueError when it is not an image or has more than `max_pixels`."""
    from modules.generation.image_input import read_image

    return read_image(decode_base64(data, what), what, max_pixels)


def encode_base64(image: Image.Image, file_format: str, infotext: str | None, quality: int = 80) -> str:
    """An image as A1111's API returns it: base64 without a data: prefix, infotext embedded."""
    from modules.outputs.saving import encode_image

    buffer = io.BytesIO()
    encode_image(image, buffer, file_format, infotext, quality)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
