"""The one definition of a txt2img request.

Every control on the page, every API field and every infotext key comes from the fields
below: each field carries its A1111 UI label (`label`), its infotext key (`infotext`), its
UI default (`default`) and its range. Add a parameter here and the other layers follow.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modules.generation import samplers

MIN_SIZE, MAX_SIZE = 64, 2048


def _meta(label: str, infotext: str | None = None, **extra: Any) -> dict:
    return {"label": label, "infotext": infotext, **extra}


class GenerationParams(BaseModel):
    """A validated txt2img request; defaults are A1111's UI defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field("", json_schema_extra=_meta("Prompt"))
    negative_prompt: str = Field("", json_schema_extra=_meta("Negative prompt"))
    sampler_name: str = Field(samplers.SAMPLERS[0].name, json_schema_extra=_meta("Sampling method", "Sampler"))
    scheduler: str = Field("Automatic", json_schema_extra=_meta("Schedule type", "Schedule type"))
    steps: int = Field(20, ge=1, le=150, json_schema_extra=_meta("Sampling steps", "Steps"))
    width: int = Field(512, json_schema_extra=_meta("Width", step=8, minimum=MIN_SIZE, maximum=MAX_SIZE))
    height: int = Field(512, json_schema_extra=_meta("Height", step=8, minimum=MIN_SIZE, maximum=MAX_SIZE))
    n_iter: int = Field(1, ge=1, le=100, json_schema_extra=_meta("Batch count"))
    batch_size: int = Field(1, ge=1, le=8, json_schema_extra=_meta("Batch size"))
    cfg_scale: float = Field(7.0, ge=1.0, le=30.0, json_schema_extra=_meta("CFG Scale", "CFG scale", step=0.5))
    seed: int = Field(-1, ge=-1, le=2**32 - 1, json_schema_extra=_meta("Seed", "Seed"))
    clip_skip: int = Field(1, ge=1, le=12, json_schema_extra=_meta("Clip skip", "Clip skip"))

    @field_validator("width", "height")
    @classmethod
    def _size(cls, v: int, info) -> int:
        if not (MIN_SIZE <= v <= MAX_SIZE) or v % 8:
            raise ValueError(f"must be a multiple of 8 from {MIN_SIZE} to {MAX_SIZE}, got {v}")
        return v

    @model_validator(mode="after")
    def _names(self) -> "GenerationParams":
        samplers.resolve(self.sampler_name, self.scheduler)  # raises a readable ValueError
        return self

    @classmethod
    def create(cls, **values: Any) -> "GenerationParams":
        """Build from loose input (page or API): None means default; errors become one readable ValueError."""
        cleaned = {k: v for k, v in values.items() if v is not None}
        try:
            return cls(**cleaned)
        except ValidationError as exc:
            raise ValueError(readable_errors(exc)) from None

    @classmethod
    def field_meta(cls, name: str) -> dict:
        info = cls.model_fields[name]
        meta = dict(info.json_schema_extra or {})
        for m in info.metadata:  # ge/le constraints become UI ranges
            for attr, key in (("ge", "minimum"), ("le", "maximum")):
                if getattr(m, attr, None) is not None:
                    meta.setdefault(key, getattr(m, attr))
        meta["default"] = info.default
        return meta


def readable_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ())]
        name = loc[0] if loc else ""
        label = GenerationParams.model_fields[name].json_schema_extra["label"] if name in GenerationParams.model_fields else name
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "is not a known parameter"
        parts.append(f"{label}: {msg}" if label else msg)
    return "; ".join(parts)


def format_number(value: float) -> str:
    """A1111 prints the slider value: 7 stays '7', 7.5 stays '7.5'."""
    return str(int(value)) if float(value).is_integer() else str(value)


def infotext_fields(
    params: GenerationParams, *, seed: int, model_hash: str | None, model_name: str | None, version: str, clip_skip_applies: bool = True
) -> list[tuple[str, Any]]:
    """The params line of A1111's infotext, keys in A1111's order (None values are dropped later).
    `clip_skip_applies` is False for models that ignore Clip skip (SD2, SDXL)."""
    sampler, schedule = samplers.resolve(params.sampler_name, params.scheduler)
    meta = GenerationParams.field_meta
    return [
        (meta("steps")["infotext"], params.steps),
        (meta("sampler_name")["infotext"], sampler.name),
        (meta("scheduler")["infotext"], samplers.infotext_schedule_label(sampler, schedule)),
        (meta("cfg_scale")["infotext"], format_number(params.cfg_scale)),
        (meta("seed")["infotext"], seed),
        ("Size", f"{params.width}x{params.height}"),
        ("Model hash", model_hash),
        ("Model", model_name),
        (meta("clip_skip")["infotext"], params.clip_skip if params.clip_skip > 1 and clip_skip_applies else None),
        ("Version", version),
    ]
