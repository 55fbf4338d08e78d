"""What a ControlNet unit asks for, in the A1111 ControlNet extension's terms.

One `UnitSettings` model serves the API (`alwayson_scripts.controlnet.args`), the page, the
job queue and the infotext (`ControlNet 0: "Module: canny, Model: ..., Weight: 1.0, ..."`),
so a unit means the same thing wherever it comes from. The pictures travel beside it in
`ControlUnit`, as img2img's init images travel beside its parameters.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, Callable

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# The extension's display strings; requests may send their index instead.
RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
HR_OPTIONS = ("Both", "Low res only", "High res only")
BALANCED, PROMPT_FIRST, CONTROL_FIRST = CONTROL_MODES

# Older names the extension still accepts for its resize modes.
_RESIZE_ALIASES = {
    "inner fit (scale to fit)": "Crop and Resize", "scale to fit (inner fit)": "Crop and Resize",
    "outer fit (shrink to fit)": "Resize and Fill", "envelope (outer fit)": "Resize and Fill",
}
# Extension fields that change the picture and are not implemented here: refused, not dropped.
_UNSUPPORTED = ("advanced_weighting", "effective_region_mask", "ipadapter_input", "batch_images")
# The fields the extension writes into the infotext, in its order.
INFOTEXT_FIELDS = ("module", "model", "weight", "resize_mode", "processor_res", "threshold_a", "threshold_b",
                   "guidance_start", "guidance_end", "pixel_perfect", "control_mode")


def _choice(value: Any, choices: tuple[str, ...], aliases: dict[str, str] | None = None) -> str:
    """A choice by its name (any case), an alias, or its index (int or digit string)."""
    if isinstance(value, bool):
        raise ValueError(f"must be one of: {', '.join(choices)}")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
        if 0 <= index < len(choices):
            return choices[index]
    elif isinstance(value, str):
        wanted = value.strip().lower()
        for choice in choices:
            if choice.lower() == wanted:
                return choice
        if aliases and wanted in aliases:
            return aliases[wanted]
    raise ValueError(f"must be one of: {', '.join(choices)}")


class UnitSettings(BaseModel):
    """A unit's settings, everything but its pictures; defaults are the extension's."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    enabled: bool = True  # the extension's API units are on unless they say otherwise (webuiapi always sends it)
    module: str = "none"  # the preprocessor
    model: str = "None"  # a ControlNet from models/ControlNet, "name [hash]" or "name"
    weight: float = Field(1.0, ge=0.0, le=2.0)
    resize_mode: str = "Crop and Resize"
    low_vram: bool = False
    processor_res: int = -1  # -1: the preprocessor's default
    threshold_a: float = -1.0  # -1: the preprocessor's default
    threshold_b: float = -1.0
    guidance_start: float = Field(0.0, ge=0.0, le=1.0)
    guidance_end: float = Field(1.0, ge=0.0, le=1.0)
    pixel_perfect: bool = False
    control_mode: str = BALANCED
    hr_option: str = "Both"
    save_detected_map: bool = True
    # The page's "Use the img2img input": the unit takes img2img's picture when it has none of
    # its own (the extension does the same for an empty unit in img2img).
    use_img2img_input: bool = False

    @field_validator("resize_mode", mode="before")
    @classmethod
    def _resize_mode(cls, value: Any) -> str:
        return _choice(value, RESIZE_MODES, _RESIZE_ALIASES)

    @field_validator("control_mode", mode="before")
    @classmethod
    def _control_mode(cls, value: Any) -> str:
        return _choice(value, CONTROL_MODES)

    @field_validator("hr_option", mode="before")
    @classmethod
    def _hr_option(cls, value: Any) -> str:
        return _choice(value, HR_OPTIONS)

    @field_validator("module", "model", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("must be a name (text)")
        return value.strip()

    @model_validator(mode="after")
    def _guidance(self) -> "UnitSettings":
        if self.guidance_start > self.guidance_end:
            raise ValueError(f"Starting Control Step ({self.guidance_start}) is after Ending Control Step ({self.guidance_end})")
        return self

    @property
    def has_model(self) -> bool:
        return self.model.lower() not in ("", "none")


@dataclass(frozen=True)
class ControlUnit:
    settings: UnitSettings
    image: Image.Image | None = None
    mask: Image.Image | None = None  # white where the unit's picture is masked (inpaint, effective region)


def settings_from(values: dict, what: str = "ControlNet unit") -> UnitSettings:
    """Validated settings; a readable ValueError naming the field otherwise."""
    try:
        return UnitSettings.model_validate(values)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()))
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        raise ValueError(f"{what}: {'; '.join(parts)}") from None


# ---------------------------------------------------------------------------- API


ImageDecoder = Callable[[str, str], Image.Image]  # (base64 or data URL, what to call it) -> image


def units_from_api(args: Any, decode: ImageDecoder) -> list[ControlUnit]:
    """`alwayson_scripts["controlnet"]["args"]` as the extension takes it: a list of unit dicts
    (webuiapi's ControlNetUnit.to_dict(), the Photoshop and Krita plug-ins' units). `decode`
    turns a base64 field into a picture (the API's decoder, with its size limit)."""
    if isinstance(args, dict):  # {"args": [...]} passed whole
        args = args.get("args", [])
    if not isinstance(args, (list, tuple)):
        raise ValueError("alwayson_scripts.controlnet.args must be a list of ControlNet units.")
    return [_unit_from_dict(unit, i, decode) for i, unit in enumerate(args)]


def _unit_from_dict(raw: Any, index: int, decode: ImageDecoder) -> ControlUnit:
    what = f"ControlNet unit {index}"
    if not isinstance(raw, dict):
        raise ValueError(f"{what} must be an object with the extension's unit fields (module, model, image, ...).")
    values = dict(raw)
    for alias, name in (("input_image", "image"), ("mask_image", "mask"), ("lowvram", "low_vram"), ("guidance", "guidance_end"),
                        ("guessmode", "control_mode")):
        if alias in values:
            if values.get(name) not in (None, "") and name != "control_mode":
                raise ValueError(f"{what} sets both '{alias}' and '{name}': send one.")
            values[name] = values.pop(alias)
    used = [name for name in _UNSUPPORTED if values.get(name) not in (None, [], "")]
    if used:
        raise ValueError(f"{what}: {', '.join(used)} is not supported here.")
    settings = settings_from({k: v for k, v in values.items() if k not in ("image", "mask") and v is not None}, what)
    image, mask = _pictures(values.get("image"), values.get("mask"), what, decode) if settings.enabled else (None, None)
    return ControlUnit(settings, image, mask)


def _pictures(image: Any, mask: Any, what: str, decode: ImageDecoder) -> tuple[Image.Image | None, Image.Image | None]:
    """The extension's image forms: base64, {"image", "mask"}, [image, mask], or a list of one such."""
    if isinstance(image, list) and len(image) == 1 and isinstance(image[0], dict):
        image = image[0]
    if isinstance(image, dict):
        image, mask = image.get("image"), image.get("mask") if mask in (None, "") else mask
    elif isinstance(image, (list, tuple)):
        if len(image) != 2 or not all(isinstance(x, str) for x in image):
            raise ValueError(f"{what}: image must be one picture (base64), {{\"image\", \"mask\"}} or [image, mask]; "
                             "batches of control pictures are not supported.")
        image, mask = image
    if image not in (None, "") and not isinstance(image, str):
        raise ValueError(f"{what}: image must be a base64-encoded picture.")
    if mask not in (None, "") and not isinstance(mask, str):
        raise ValueError(f"{what}: mask must be a base64-encoded picture.")
    picture = decode(image, f"{what} image") if image else None
    hole = decode(mask, f"{what} mask") if mask else None
    return picture, hole


# ---------------------------------------------------------------------------- queue


def _png(image: Image.Image | None) -> str | None:
    if image is None:
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _unpng(data: str | None) -> Image.Image | None:
    if not data:
        return None
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def unit_to_payload(unit: ControlUnit) -> dict:
    """A unit as the job queue stores it (JSON; pictures as PNG), so queued jobs survive a restart."""
    return {"settings": unit.settings.model_dump(), "image": _png(unit.image), "mask": _png(unit.mask)}


def unit_from_payload(data: dict) -> ControlUnit:
    return ControlUnit(UnitSettings.model_validate(data["settings"]), _unpng(data.get("image")), _unpng(data.get("mask")))


# ---------------------------------------------------------------------------- infotext


def _display(field: str) -> str:
    return " ".join(word.capitalize() for word in field.split("_"))


def infotext_value(settings: UnitSettings) -> str:
    """The extension's `ControlNet N` value: `Module: canny, Model: ..., Weight: 1.0, ...`.
    Values are written as Python prints them (1.0, False), as the extension does."""
    return ", ".join(f"{_display(name)}: {getattr(settings, name)}" for name in INFOTEXT_FIELDS)


def _parse_value(text: str) -> Any:
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def settings_from_infotext(text: str) -> UnitSettings:
    """A `ControlNet N` infotext value back into settings (the unit enabled, no picture).
    ValueError when it is not in the extension's form."""
    values: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition(": ")
        if not sep:
            raise ValueError(f"ControlNet infotext item '{item.strip()}' is not 'Key: value'.")
        values["_".join(word.lower() for word in key.split(" "))] = _parse_value(value.strip())
    for name in ("module", "model"):
        if name in values:
            values[name] = str(values[name])
    return settings_from({**values, "enabled": True}, "ControlNet infotext")
