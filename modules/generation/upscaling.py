"""A1111's Extras "Upscale" step: resize by a scale or to a size, with an upscaler, optionally
blended with a second one. Pure PIL, no gradio or FastAPI: the Extras job, the API and tests
call `postprocess` directly.

Upscalers live in an `UpscalerRegistry`. The built-in ones are plain resamplers ("None" is a
plain Lanczos resize, "Lanczos", "Nearest"); the model upscalers (ESRGAN and friends, from
models/ESRGAN/ ...) are `Upscaler` subclasses in modules.postprocessing.upscalers, added after
the built-ins. A job that wants tile progress and interrupt binds an `UpscaleWatch` to the
registry (`registry.watched(watch)`); plain resizes ignore it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from modules.generation.params import format_number, readable_errors
from modules.outputs.infotext import format_params_line

MAX_SIDE = 8192  # the largest result side the Extras tab makes
NONE = "None"


class UpscaleInterrupted(Exception):
    """A model upscale stopped between tiles because the job was interrupted or skipped."""


@dataclass(frozen=True)
class UpscaleWatch:
    """How a job watches a model upscale: `on_tile(done, total)` after each tile of an image,
    and `stop()` asked before each tile (True raises UpscaleInterrupted)."""

    on_tile: Callable[[int, int], None] | None = None
    stop: Callable[[], bool] | None = None


class Upscaler:
    """One entry of A1111's upscaler list. Subclasses implement `upscale(image, scale)`; the
    describe fields are what GET /sdapi/v1/upscalers reports."""

    name: str = NONE
    scale: int = 4  # the model's native factor; A1111 reports 4 for the plain resamplers too
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None

    def upscale(self, image: Image.Image, scale: float) -> Image.Image:
        """`image` enlarged (or shrunk) by `scale`, about round(side * scale) pixels a side."""
        raise NotImplementedError

    def resize_to(self, image: Image.Image, size: tuple[int, int]) -> Image.Image:
        """`image` at exactly `size`, stretched if the aspect differs: upscale by the larger
        factor, then a Lanczos resize fixes the last pixels."""
        factor = max(size[0] / image.width, size[1] / image.height)
        result = self.upscale(image, factor)
        return result if result.size == size else result.resize(size, Image.Resampling.LANCZOS)

    def describe(self) -> dict:
        return {"name": self.name, "model_name": self.model_name, "model_path": self.model_path, "model_url": self.model_url, "scale": self.scale}

    def watched(self, watch: UpscaleWatch) -> "Upscaler":
        """This upscaler reporting to `watch`; a plain resize has nothing to report."""
        return self


class Resampler(Upscaler):
    """A plain PIL resize ("None", "Lanczos", "Nearest"): one resize straight to the size."""

    def __init__(self, name: str, resample: Image.Resampling):
        self.name, self.resample = name, resample

    def upscale(self, image: Image.Image, scale: float) -> Image.Image:
        return self.resize_to(image, (max(1, round(image.width * scale)), max(1, round(image.height * scale))))

    def resize_to(self, image: Image.Image, size: tuple[int, int]) -> Image.Image:
        return image.copy() if image.size == size else image.resize(size, self.resample)


def builtin_upscalers() -> tuple[Upscaler, ...]:
    return (Resampler(NONE, Image.Resampling.LANCZOS), Resampler("Lanczos", Image.Resampling.LANCZOS), Resampler("Nearest", Image.Resampling.NEAREST))


class UpscalerRegistry:
    """The upscalers one app offers, in A1111's order (None first). Immutable once built:
    rescanning model folders makes a new registry."""

    def __init__(self, upscalers: Iterable[Upscaler] | None = None):
        items = tuple(upscalers) if upscalers is not None else builtin_upscalers()
        self._by_name = {u.name: u for u in items}
        if len(self._by_name) != len(items):
            raise ValueError("Two upscalers share a name.")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def get(self, name: str, what: str = "Upscaler") -> Upscaler:
        upscaler = self._by_name.get(name)
        if upscaler is None:
            raise ValueError(f"{what} '{name}' not found. Choose one of: {', '.join(self.names)}.")
        return upscaler

    def describe(self) -> list[dict]:
        return [u.describe() for u in self._by_name.values()]

    def watched(self, watch: UpscaleWatch) -> "UpscalerRegistry":
        """The same upscalers, reporting tiles to `watch` and stopping when it says so."""
        return UpscalerRegistry(u.watched(watch) for u in self._by_name.values())


def _meta(label: str, **extra) -> dict:
    return {"label": label, **extra}


class ExtrasParams(BaseModel):
    """One Extras request, with A1111's API names and defaults. Build it with `create`, which
    turns every problem into one readable ValueError and checks the upscaler names against a
    registry (the built-in one unless given)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resize_mode: int = Field(0, ge=0, le=1, json_schema_extra=_meta("Resize mode", choices=("Scale by", "Scale to")))
    upscaling_resize: float = Field(2.0, gt=0, le=8, json_schema_extra=_meta("Resize", minimum=1, maximum=8, step=0.05))
    upscaling_resize_w: int = Field(512, ge=1, le=MAX_SIDE, json_schema_extra=_meta("Width", step=8))
    upscaling_resize_h: int = Field(512, ge=1, le=MAX_SIDE, json_schema_extra=_meta("Height", step=8))
    upscaling_crop: bool = Field(True, json_schema_extra=_meta("Crop to fit"))
    upscaler_1: str = Field(NONE, json_schema_extra=_meta("Upscaler 1"))
    upscaler_2: str = Field(NONE, json_schema_extra=_meta("Upscaler 2"))
    extras_upscaler_2_visibility: float = Field(0.0, ge=0, le=1, json_schema_extra=_meta("Upscaler 2 visibility", step=0.001))
    gfpgan_visibility: float = Field(0.0, ge=0, le=1, json_schema_extra=_meta("GFPGAN visibility", step=0.001))
    codeformer_visibility: float = Field(0.0, ge=0, le=1, json_schema_extra=_meta("CodeFormer visibility", step=0.001))
    codeformer_weight: float = Field(0.0, ge=0, le=1, json_schema_extra=_meta("CodeFormer weight (0 = maximum effect, 1 = minimum effect)", step=0.001))
    upscale_first: bool = Field(False, json_schema_extra=_meta("Upscale Before Restoring Faces"))  # accepted; A1111 1.x always upscales first

    @model_validator(mode="after")
    def _known_upscalers(self, info: ValidationInfo) -> "ExtrasParams":
        registry = (info.context or {}).get("upscalers") or UpscalerRegistry()
        registry.get(self.upscaler_1, "Upscaler 1")
        registry.get(self.upscaler_2, "Upscaler 2")
        return self

    @classmethod
    def create(cls, upscalers: UpscalerRegistry | None = None, **values) -> "ExtrasParams":
        """From loose input (page or API): None means the default."""
        cleaned = {k: v for k, v in values.items() if v is not None}
        try:
            return cls.model_validate(cleaned, context={"upscalers": upscalers})
        except ValidationError as exc:
            raise ValueError(readable_errors(exc, cls)) from None

    @classmethod
    def field_meta(cls, name: str) -> dict:
        info = cls.model_fields[name]
        return {**(info.json_schema_extra or {}), "default": info.default}


@dataclass(frozen=True)
class Postprocessed:
    image: Image.Image
    info: dict[str, str]  # A1111's "Postprocess ..." keys, in its order


def target_size(size: tuple[int, int], params: ExtrasParams) -> tuple[int, int]:
    """The result's size for an image of `size`; a readable ValueError outside 1..8192."""
    if params.resize_mode == 1:
        width, height = params.upscaling_resize_w, params.upscaling_resize_h
    else:
        width, height = round(size[0] * params.upscaling_resize), round(size[1] * params.upscaling_resize)
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise ValueError(f"The result would be {width}x{height}; each side must be 1 to {MAX_SIDE}.")
    return width, height


def _upscale(image: Image.Image, upscaler: Upscaler, params: ExtrasParams, size: tuple[int, int]) -> Image.Image:
    """One upscaler's result at `size`. "Scale to" with crop scales to cover the size
    (keeping the aspect) and keeps the centre, as A1111's "Crop to fit"; without crop it stretches."""
    if params.resize_mode == 1 and params.upscaling_crop:
        factor = max(size[0] / image.width, size[1] / image.height)
        cover = (max(size[0], round(image.width * factor)), max(size[1], round(image.height * factor)))
        scaled = upscaler.resize_to(image, cover)
        left, top = (scaled.width - size[0]) // 2, (scaled.height - size[1]) // 2
        return scaled.crop((left, top, left + size[0], top + size[1]))
    return upscaler.resize_to(image, size)


def postprocess(image: Image.Image, params: ExtrasParams, upscalers: UpscalerRegistry | None = None, faces=None) -> Postprocessed:
    """Upscale `image` (RGB) as `params` say. Upscaler 1 makes the picture; Upscaler 2, when
    chosen with a visibility above 0, makes a second one blended over it at that visibility.
    GFPGAN, then CodeFormer (`faces`, a modules.postprocessing FaceRestoration) run on the
    upscaled picture and their keys follow the upscale's: A1111 1.x's order (its postprocessing
    scripts' 1000/2000/3000), which ignores the older `upscale_first` field, as this does."""
    registry = upscalers or UpscalerRegistry()
    first = registry.get(params.upscaler_1, "Upscaler 1")
    second = registry.get(params.upscaler_2, "Upscaler 2") if params.upscaler_2 != NONE else None
    size = target_size(image.size, params)

    info: dict[str, str] = {}
    if params.resize_mode == 1:
        info["Postprocess upscale to"] = f"{size[0]}x{size[1]}"
        if params.upscaling_crop:
            info["Postprocess crop to"] = f"{size[0]}x{size[1]}"
    else:
        info["Postprocess upscale by"] = format_number(params.upscaling_resize)
    info["Postprocess upscaler"] = first.name

    result = _upscale(image, first, params, size)
    visibility = params.extras_upscaler_2_visibility
    if second is not None and visibility > 0:
        other = _upscale(image, second, params, size)
        result = Image.blend(result, other.convert(result.mode), visibility)
        info["Postprocess upscaler 2"] = second.name
        info["Postprocess upscaler 2 visibility"] = format_number(round(visibility, 3))
    result, face_info = _restore_faces(result, params, faces)
    return Postprocessed(result, {**info, **face_info})


def _restore_faces(image: Image.Image, params: ExtrasParams, faces) -> tuple[Image.Image, dict[str, str]]:
    from modules.postprocessing.face_restoration import extras_restore

    return extras_restore(image, faces, params.gfpgan_visibility, params.codeformer_visibility, params.codeformer_weight)


def info_text(info: dict[str, str]) -> str:
    """The `postprocessing` text: "Key: value, Key2: value", quoted as infotexts are."""
    return format_params_line(info.items())
