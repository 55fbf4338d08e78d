"""What one LoRA training run is asked to do: one validated value shared by the Train tab, the
API route and the run's recorded payload (a restart rebuilds the job from it).

Field names are kohya sd-scripts' command-line names (`network_dim`, `max_train_steps`, ...),
the vocabulary LoRA trainers' users know; the labels are what the page shows.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modules.generation.params import readable_errors

SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
PRECISIONS = ("no", "fp16", "bf16")
OPTIMIZERS = ("AdamW", "AdamW8bit")
NAME_PATTERN = re.compile(r"^[\w][\w .+-]{0,99}$")  # a file name in models/Lora, no folders
MAX_PROMPTS = 32
CHOICES = {"lr_scheduler": SCHEDULERS, "mixed_precision": PRECISIONS, "optimizer_type": OPTIMIZERS}
WATCH_ONLY = frozenset({"sample_every_n_steps", "sample_prompts", "sample_seed", "sample_steps", "eval_prompts", "eval_every_n_steps",
                        "eval_images_per_prompt", "save_every_n_steps"})


def _meta(label: str, **extra: Any) -> dict:
    return {"label": label, **extra}


class LoraTrainingParams(BaseModel):
    """A LoRA run. Defaults suit a small character or style set on SD 1.5 (kohya's usual
    starting point: rank 16, alpha 8, 1e-4, constant); the demo model wants more steps and a
    higher rate, which its guide says."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    output_name: str = Field("my-lora", json_schema_extra=_meta("LoRA name"))
    train_data_dir: str = Field("", json_schema_extra=_meta("Dataset folder"))
    checkpoint: str = Field("", json_schema_extra=_meta("Checkpoint (empty: the one in use)"))
    caption_extension: str = Field(".txt", json_schema_extra=_meta("Caption file extension"))
    caption_template: str = Field("", json_schema_extra=_meta("Caption template ([trigger], [filewords])"))
    trigger_word: str = Field("", json_schema_extra=_meta("Trigger word"))
    network_dim: int = Field(16, ge=1, le=256, json_schema_extra=_meta("Rank (network dim)"))
    network_alpha: float = Field(8.0, gt=0, le=256, json_schema_extra=_meta("Alpha"))
    conv_dim: int = Field(0, ge=0, le=256, json_schema_extra=_meta("Conv rank (LoCon, 0: off)"))
    conv_alpha: float = Field(1.0, gt=0, le=256, json_schema_extra=_meta("Conv alpha"))
    learning_rate: float = Field(1e-4, gt=0, le=1.0, json_schema_extra=_meta("Learning rate"))
    unet_lr: float | None = Field(None, gt=0, le=1.0, json_schema_extra=_meta("UNet learning rate (empty: learning rate)"))
    text_encoder_lr: float | None = Field(None, gt=0, le=1.0, json_schema_extra=_meta("Text encoder learning rate (empty: learning rate)"))
    lr_scheduler: str = Field("constant", json_schema_extra=_meta("LR scheduler", choices=SCHEDULERS))
    lr_warmup_steps: int = Field(0, ge=0, le=100000, json_schema_extra=_meta("Warm-up steps"))
    max_train_steps: int = Field(1600, ge=0, le=1000000, json_schema_extra=_meta("Max steps (Epochs, when set, override it)"))
    max_train_epochs: int = Field(0, ge=0, le=10000, json_schema_extra=_meta("Epochs (0: use max steps)"))
    train_batch_size: int = Field(1, ge=1, le=64, json_schema_extra=_meta("Batch size"))
    resolution: int = Field(512, ge=64, le=2048, multiple_of=8, json_schema_extra=_meta("Resolution", step=64))
    enable_bucket: bool = Field(True, json_schema_extra=_meta("Aspect-ratio buckets"))
    min_bucket_reso: int = Field(256, ge=64, le=4096, json_schema_extra=_meta("Smallest bucket side", step=64))
    max_bucket_reso: int = Field(1024, ge=64, le=4096, json_schema_extra=_meta("Largest bucket side", step=64))
    bucket_reso_steps: int = Field(64, ge=8, le=256, multiple_of=8, json_schema_extra=_meta("Bucket side step", step=8))
    caption_dropout_rate: float = Field(0.0, ge=0.0, le=1.0, json_schema_extra=_meta("Caption dropout"))
    shuffle_caption: bool = Field(False, json_schema_extra=_meta("Shuffle caption tags"))
    keep_tokens: int = Field(0, ge=0, le=75, json_schema_extra=_meta("Keep first N tags in place"))
    network_train_unet_only: bool = Field(False, json_schema_extra=_meta("UNet only (do not train the text encoder)"))
    noise_offset: float = Field(0.0, ge=0.0, le=1.0, json_schema_extra=_meta("Noise offset"))
    min_snr_gamma: float = Field(0.0, ge=0.0, le=100.0, json_schema_extra=_meta("Min-SNR gamma (0: off)"))
    seed: int = Field(42, ge=0, le=2**32 - 1, json_schema_extra=_meta("Seed"))
    mixed_precision: str = Field("fp16", json_schema_extra=_meta("Mixed precision (CUDA)", choices=PRECISIONS))
    gradient_checkpointing: bool = Field(False, json_schema_extra=_meta("Gradient checkpointing (CUDA)"))
    optimizer_type: str = Field("AdamW", json_schema_extra=_meta("Optimizer", choices=OPTIMIZERS))
    save_every_n_steps: int = Field(0, ge=0, le=1000000, json_schema_extra=_meta("Save a copy every N steps (0: only at the end)"))
    sample_every_n_steps: int = Field(0, ge=0, le=1000000, json_schema_extra=_meta("Sample images every N steps (0: only at the end)"))
    sample_prompts: tuple[str, ...] = Field((), max_length=MAX_PROMPTS, json_schema_extra=_meta("Sample prompts (one per line)"))
    sample_seed: int = Field(1, ge=0, le=2**32 - 1, json_schema_extra=_meta("Sample seed"))
    sample_steps: int = Field(20, ge=1, le=150, json_schema_extra=_meta("Sample sampling steps"))
    eval_prompts: tuple[str, ...] = Field((), max_length=MAX_PROMPTS, json_schema_extra=_meta("Held-out prompts for scores (one per line)"))
    eval_every_n_steps: int = Field(0, ge=0, le=1000000, json_schema_extra=_meta("Score every N steps (0: only at the end)"))
    eval_images_per_prompt: int = Field(2, ge=1, le=16, json_schema_extra=_meta("Score images per held-out prompt"))

    @field_validator("output_name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not NAME_PATTERN.match(value) or value.endswith((".", " ")):
            raise ValueError("must be a file name of letters, digits, spaces, '.', '+', '-' or '_' (no folders), up to 100 characters")
        return value

    @field_validator("lr_scheduler", "mixed_precision", "optimizer_type")
    @classmethod
    def _one_of(cls, value: str, info) -> str:
        return _choice(value, CHOICES[info.field_name])

    @field_validator("caption_extension")
    @classmethod
    def _extension(cls, value: str) -> str:
        value = value.strip() or ".txt"
        value = value if value.startswith(".") else "." + value
        if not re.fullmatch(r"\.[\w.]{1,15}", value):
            raise ValueError("must be a file extension such as .txt or .caption")
        return value

    @field_validator("sample_prompts", "eval_prompts", mode="before")
    @classmethod
    def _lines(cls, value: Any) -> Any:
        """One prompt per line from the page, a list from the API; blank lines dropped."""
        if isinstance(value, str):
            value = value.splitlines()
        if isinstance(value, (list, tuple)):
            return tuple(str(v).strip() for v in value if str(v).strip())
        return value

    @classmethod
    def from_request(cls, values: dict[str, Any]) -> "LoraTrainingParams":
        """From the page or the API: None means the default; every problem in one ValueError."""
        cleaned = {k: v for k, v in dict(values).items() if v is not None}
        try:
            params = cls.model_validate(cleaned)
        except ValidationError as exc:
            raise ValueError(readable_errors(exc, cls)) from None
        if params.max_train_steps == 0 and params.max_train_epochs == 0:
            raise ValueError("Set Max steps or Epochs: both are 0, so the run would not train at all.")
        if params.min_bucket_reso > params.max_bucket_reso:
            raise ValueError("Smallest bucket side is larger than the largest bucket side.")
        if not params.train_data_dir.strip():
            raise ValueError("Dataset folder: give the folder of training pictures.")
        return params

    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def training_key(self) -> str:
        """The settings that decide the weights, as one string: a saved state resumes only
        under the same key. What is drawn or scored along the way (samples, held-out prompts)
        and how often copies are saved can change without losing the run."""
        kept = {k: v for k, v in self.to_payload().items() if k not in WATCH_ONLY}
        return json.dumps(kept, sort_keys=True)

    @classmethod
    def field_meta(cls, name: str) -> dict:
        """Label, range and choices of a field, for building the page's controls."""
        info = cls.model_fields[name]
        meta = dict(info.json_schema_extra or {})
        for m in info.metadata:
            for attr, key in (("ge", "minimum"), ("gt", "minimum"), ("le", "maximum")):
                if getattr(m, attr, None) is not None:
                    meta.setdefault(key, getattr(m, attr))
        meta["default"] = info.default
        return meta

    @property
    def unet_rate(self) -> float:
        return self.unet_lr or self.learning_rate

    @property
    def text_rate(self) -> float:
        return self.text_encoder_lr or self.learning_rate


def _choice(value: str, choices: tuple[str, ...]) -> str:
    for choice in choices:
        if value.strip().lower() == choice.lower():
            return choice
    raise ValueError(f"must be one of {', '.join(choices)}")
