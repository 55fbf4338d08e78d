"""The one definition of a generation request: txt2img (with hires fix) and img2img.

Every control on the page, every API field and every infotext key comes from the fields
below: each field carries its A1111 UI label (`label`), its infotext key (`infotext`), its
UI default (`default`) and its range. Add a parameter here and the other layers follow.
Field names are A1111's API names, so API requests validate against the same classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from modules.generation import samplers

MIN_SIZE, MAX_SIZE = 64, 2048
MAX_SEED = 4294967294  # what A1111 draws random seeds below

# Hires fix upscalers: latent ones interpolate the latents (mode, antialias), pixel ones
# decode, resize and encode again. Model upscalers (models/ESRGAN, ...) are valid where the
# caller names them: `create(upscalers=...)`, or the validation context's "upscalers".
LATENT_UPSCALERS = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
PIXEL_UPSCALERS = ("None", "Lanczos", "Nearest")
HIRES_UPSCALERS = (*LATENT_UPSCALERS, *PIXEL_UPSCALERS)
SAME_SAMPLER, SAME_SCHEDULER = "Use same sampler", "Use same scheduler"
SAME_CHECKPOINT = "Use same checkpoint"  # hires fix on the first pass's checkpoint
NO_REFINER = "None"  # refiner_checkpoint when off (A1111 reads "", "None" and "none" so)
HIRES_REFINER_PASSES = ("first pass", "second pass", "both passes")  # A1111's hires_fix_refiner_pass

# img2img choices, sent as their index (A1111's API and UI agree on these).
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
INPAINT_AREAS = ("Whole picture", "Only masked")
# A1111's `emphasis` setting: how (word:1.2) weights act on the text encoder's output.
EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")
RNG_SOURCES = ("GPU", "CPU", "NV")  # A1111's randn_source, drawn by modules.generation.noise
# A1111's face_restoration_model choices (modules.postprocessing.face_restoration runs them).
FACE_RESTORERS = ("CodeFormer", "GFPGAN")

# A1111 settings that travel with each job as parameters: field -> config.json key. The page
# and the API fill them from the settings unless a request or a pasted infotext sets them.
SETTING_FIELDS = {
    "clip_skip": "CLIP_stop_at_last_layers", "emphasis": "emphasis", "randn_source": "randn_source",
    "eta_noise_seed_delta": "eta_noise_seed_delta", "eta_ancestral": "eta_ancestral", "eta_ddim": "eta_ddim",
    "s_churn": "s_churn", "s_tmin": "s_tmin", "s_tmax": "s_tmax", "s_noise": "s_noise", "sigma_min": "sigma_min",
    "sigma_max": "sigma_max", "rho": "rho", "always_discard_next_to_last_sigma": "always_discard_next_to_last_sigma",
    "beta_dist_alpha": "beta_dist_alpha", "beta_dist_beta": "beta_dist_beta",
    "face_restoration_model": "face_restoration_model", "code_former_weight": "code_former_weight",
    "s_min_uncond": "s_min_uncond", "token_merging_ratio": "token_merging_ratio", "token_merging_ratio_hr": "token_merging_ratio_hr",
    "token_merging_ratio_img2img": "token_merging_ratio_img2img",
    "refiner_switch_by_sample_steps": "refiner_switch_by_sample_steps", "hires_fix_refiner_pass": "hires_fix_refiner_pass",
    "sdxl_refiner_low_aesthetic_score": "sdxl_refiner_low_aesthetic_score", "sdxl_refiner_high_aesthetic_score": "sdxl_refiner_high_aesthetic_score",
}


def is_text(text: str) -> bool:
    """Whether `text` can be written as UTF-8: a lone surrogate (JSON's "\\ud800") cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _meta(label: str, infotext: str | None = None, **extra: Any) -> dict:
    return {"label": label, "infotext": infotext, **extra}


class GenerationParams(BaseModel):
    """A validated txt2img request (img2img extends it); defaults are A1111's UI defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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
    # Flux and SD 3/3.5 (modules.generation.flow_runner), Forge's names: Flux dev's guidance
    # embedding (written to the infotext for Flux dev only) and a shift of the flow schedule
    # replacing the model's own (0: the model's; written only when set).
    distilled_cfg_scale: float = Field(3.5, ge=0.0, le=30.0, json_schema_extra=_meta("Distilled CFG Scale", "Distilled CFG Scale", step=0.1))
    shift: float = Field(0.0, ge=0.0, le=100.0, json_schema_extra=_meta("Shift (0 = the model's)", "Shift", step=0.1))
    seed: int = Field(-1, ge=-1, le=2**32 - 1, json_schema_extra=_meta("Seed", "Seed"))
    # A1111's "Extra" seed options (modules.generation.noise): the first noise mixed towards the
    # variation seed's (0 = the seed's picture, 1 = the variation seed's), and drawn at the
    # "Resize seed from" size, pasted centred, so a picture keeps its composition at a new size.
    subseed: int = Field(-1, ge=-1, le=2**32 - 1, json_schema_extra=_meta("Variation seed", "Variation seed"))
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0, json_schema_extra=_meta("Variation strength", "Variation seed strength", step=0.01))
    seed_resize_from_w: int = Field(0, ge=0, le=MAX_SIZE, json_schema_extra=_meta("Resize seed from width", step=8))
    seed_resize_from_h: int = Field(0, ge=0, le=MAX_SIZE, json_schema_extra=_meta("Resize seed from height", step=8))
    clip_skip: int = Field(1, ge=1, le=12, json_schema_extra=_meta("Clip skip", "Clip skip"))
    emphasis: str = Field("Original", json_schema_extra=_meta("Emphasis mode", "Emphasis", choices=EMPHASIS_MODES))
    # Styles from styles.csv, applied to the prompts when the job runs (A1111's `styles`).
    styles: tuple[str, ...] = Field((), json_schema_extra=_meta("Styles"))
    # The API's disable_extra_networks: <lora:...> tags are removed from the prompt but not applied.
    disable_extra_networks: bool = Field(False, json_schema_extra=_meta("Disable extra networks"))
    # A1111's img2img_fix_steps setting: False runs steps x denoising strength, as A1111 does.
    img2img_fix_steps: bool = Field(False, json_schema_extra=_meta("With img2img, do exactly the amount of steps the slider specifies"))
    denoising_strength: float = Field(0.7, ge=0.0, le=1.0, json_schema_extra=_meta("Denoising strength", "Denoising strength", step=0.01))
    # Restore faces after decoding; the infotext names the model ("Face restoration: GFPGAN").
    restore_faces: bool = Field(False, json_schema_extra=_meta("Restore faces", "Face restoration"))
    face_restoration_model: str = Field("CodeFormer", json_schema_extra=_meta("Face restoration model", choices=FACE_RESTORERS))
    code_former_weight: float = Field(0.5, ge=0.0, le=1.0, json_schema_extra=_meta("CodeFormer weight", step=0.01))
    # Seamless pictures: every convolution of the UNet and VAE wraps around (modules.generation.tiling).
    tiling: bool = Field(False, json_schema_extra=_meta("Tiling", "Tiling"))

    # A1111's sampler parameters: settings (config.json, override_settings, a pasted infotext)
    # that change the picture, so each job carries them and its infotext records them.
    randn_source: str = Field("GPU", json_schema_extra=_meta("Random number generator source", "RNG", choices=RNG_SOURCES))
    eta_noise_seed_delta: int = Field(0, ge=0, le=2**31 - 1, json_schema_extra=_meta("Eta noise seed delta", "ENSD"))
    eta: float | None = Field(None, ge=0.0, le=1.0, json_schema_extra=_meta("Eta"))  # the API's eta; None: the settings below
    eta_ancestral: float = Field(1.0, ge=0.0, le=1.0, json_schema_extra=_meta("Eta for k-diffusion samplers", "Eta", step=0.01))
    eta_ddim: float = Field(0.0, ge=0.0, le=1.0, json_schema_extra=_meta("Eta for DDIM", "Eta DDIM", step=0.01))
    s_churn: float = Field(0.0, ge=0.0, le=100.0, json_schema_extra=_meta("sigma churn", "Sigma churn", step=0.01))
    s_tmin: float = Field(0.0, ge=0.0, le=10.0, json_schema_extra=_meta("sigma tmin", "Sigma tmin", step=0.01))
    s_tmax: float = Field(0.0, ge=0.0, le=999.0, json_schema_extra=_meta("sigma tmax (0 = no limit)", "Sigma tmax", step=0.01))
    s_noise: float = Field(1.0, ge=0.0, le=1.1, json_schema_extra=_meta("sigma noise", "Sigma noise", step=0.001))
    sigma_min: float = Field(0.0, ge=0.0, le=10.0, json_schema_extra=_meta("sigma min (0 = the model's)", "Schedule min sigma", step=0.01))
    sigma_max: float = Field(0.0, ge=0.0, le=1000.0, json_schema_extra=_meta("sigma max (0 = the model's)", "Schedule max sigma", step=0.01))
    rho: float = Field(0.0, ge=0.0, le=100.0, json_schema_extra=_meta("rho (0 = the schedule's)", "Schedule rho", step=0.01))
    always_discard_next_to_last_sigma: bool = Field(False, json_schema_extra=_meta("Always discard next-to-last sigma", "Discard penultimate sigma"))
    beta_dist_alpha: float = Field(0.6, gt=0.0, le=1.0, json_schema_extra=_meta("Beta scheduler - alpha", "Beta schedule alpha", step=0.01))
    beta_dist_beta: float = Field(0.6, gt=0.0, le=1.0, json_schema_extra=_meta("Beta scheduler - beta", "Beta schedule beta", step=0.01))
    # A1111's Optimizations that trade a little of the picture for speed: skip the negative prompt
    # on alternate late steps (NGMS), and token merging (modules.generation.token_merging).
    s_min_uncond: float = Field(0.0, ge=0.0, json_schema_extra=_meta("Negative Guidance minimum sigma", "NGMS", step=0.01, maximum=15.0))
    token_merging_ratio: float = Field(0.0, ge=0.0, le=0.9, json_schema_extra=_meta("Token merging ratio", "Token merging ratio", step=0.1))
    token_merging_ratio_hr: float = Field(0.0, ge=0.0, le=0.9,
                                          json_schema_extra=_meta("Token merging ratio for high-res pass", "Token merging ratio hr", step=0.1))
    token_merging_ratio_img2img: float = Field(0.0, ge=0.0, le=0.9, json_schema_extra=_meta("Token merging ratio for img2img", step=0.1))

    # A1111's Refiner: another checkpoint of the same latent space takes over the sampling once
    # `refiner_switch_at` of the model's timesteps are behind (modules.generation.engines.Takeover).
    refiner_checkpoint: str = Field(NO_REFINER, json_schema_extra=_meta("Refiner", "Refiner"))
    refiner_switch_at: float = Field(0.8, ge=0.0, le=1.0, json_schema_extra=_meta("Switch at", "Refiner switch at", step=0.01, minimum=0.01))
    # A1111's refiner settings (they change the picture, so jobs carry them): the switch counted in
    # sampling steps rather than model timesteps, which hires fix pass(es) it joins, and the SDXL
    # refiner's aesthetic scores for the prompt (high) and the negative prompt (low).
    refiner_switch_by_sample_steps: bool = Field(False, json_schema_extra=_meta(
        "Switch to refiner by sampling steps instead of model timesteps", "Refiner switch by sampling steps"))
    hires_fix_refiner_pass: str = Field("second pass", json_schema_extra=_meta(
        "Hires fix: which pass to enable refiner for", "Hires refiner", choices=HIRES_REFINER_PASSES))
    sdxl_refiner_low_aesthetic_score: float = Field(2.5, ge=0.0, le=10.0, json_schema_extra=_meta("SDXL low aesthetic score", step=0.1))
    sdxl_refiner_high_aesthetic_score: float = Field(6.0, ge=0.0, le=10.0, json_schema_extra=_meta("SDXL high aesthetic score", step=0.1))

    # Hires fix (txt2img only).
    enable_hr: bool = Field(False, json_schema_extra=_meta("Hires. fix"))
    hr_upscaler: str = Field("Latent", json_schema_extra=_meta("Upscaler", "Hires upscaler"))
    hr_second_pass_steps: int = Field(0, ge=0, le=150, json_schema_extra=_meta("Hires steps", "Hires steps"))
    hr_scale: float = Field(2.0, ge=1.0, le=4.0, json_schema_extra=_meta("Upscale by", "Hires upscale", step=0.05))
    hr_resize_x: int = Field(0, ge=0, le=MAX_SIZE, json_schema_extra=_meta("Resize width to", step=8))
    hr_resize_y: int = Field(0, ge=0, le=MAX_SIZE, json_schema_extra=_meta("Resize height to", step=8))
    hr_sampler_name: str = Field(SAME_SAMPLER, json_schema_extra=_meta("Hires sampling method", "Hires sampler"))
    hr_scheduler: str = Field(SAME_SCHEDULER, json_schema_extra=_meta("Hires schedule type", "Hires schedule type"))
    hr_prompt: str = Field("", json_schema_extra=_meta("Hires prompt", "Hires prompt"))
    hr_negative_prompt: str = Field("", json_schema_extra=_meta("Hires negative prompt", "Hires negative prompt"))
    hr_checkpoint_name: str = Field(SAME_CHECKPOINT, json_schema_extra=_meta("Hires checkpoint", "Hires checkpoint"))

    @model_validator(mode="before")
    @classmethod
    def _text_is_text(cls, values: Any) -> Any:
        """Refuse a lone surrogate (JSON's "\ud800" decodes to one): it is not text, and the
        tokenizer, the infotext and the file name would each fail on it later."""
        if isinstance(values, dict):
            for name, value in values.items():
                for text in (value if isinstance(value, (list, tuple)) else (value,)):
                    if isinstance(text, str) and not is_text(text):
                        raise ValueError(f"{name} holds a lone surrogate (an invalid character such as \\ud800): send valid UTF-8 text")
        return values

    @field_validator("token_merging_ratio", "token_merging_ratio_hr", "token_merging_ratio_img2img", mode="before")
    @classmethod
    def _merging_range(cls, v: Any) -> Any:
        """A1111's API takes any ratio (tomesd caps what it merges): kept within 0..0.9 here."""
        return min(max(v, 0.0), 0.9) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("seed_resize_from_w", "seed_resize_from_h", mode="before")
    @classmethod
    def _resize_off(cls, v: Any) -> Any:
        """A1111's API sends -1 for "no seed resize"; here that is 0."""
        return 0 if isinstance(v, (int, float, str)) and not isinstance(v, bool) and str(v).strip() == "-1" else v

    @field_validator("refiner_checkpoint", mode="before")
    @classmethod
    def _no_refiner(cls, v: Any) -> Any:
        return NO_REFINER if isinstance(v, str) and v.strip() in ("", "None", "none") else v

    @field_validator("width", "height")
    @classmethod
    def _size(cls, v: int, info) -> int:
        if not (MIN_SIZE <= v <= MAX_SIZE) or v % 8:
            raise ValueError(f"must be a multiple of 8 from {MIN_SIZE} to {MAX_SIZE}, got {v}")
        return v

    @field_validator("emphasis", "face_restoration_model", "randn_source", "hires_fix_refiner_pass")
    @classmethod
    def _one_of(cls, v: str, info: ValidationInfo) -> str:
        choices = {"emphasis": EMPHASIS_MODES, "face_restoration_model": FACE_RESTORERS, "randn_source": RNG_SOURCES,
                   "hires_fix_refiner_pass": HIRES_REFINER_PASSES}[info.field_name]
        if v not in choices:
            raise ValueError(f"must be one of: {', '.join(choices)}")
        return v

    def sampler_options(self) -> samplers.SamplerOptions:
        """The sampler parameters as the samplers take them. A request's eta wins over the
        settings'; which setting applies depends on the sampler (see SamplerOptions.eta_for)."""
        return samplers.SamplerOptions(
            eta=self.eta, eta_ancestral=self.eta_ancestral, eta_ddim=self.eta_ddim, s_churn=self.s_churn, s_tmin=self.s_tmin,
            s_tmax=self.s_tmax, s_noise=self.s_noise, sigma_min=self.sigma_min, sigma_max=self.sigma_max, rho=self.rho,
            discard_penultimate=self.always_discard_next_to_last_sigma, beta_alpha=self.beta_dist_alpha, beta_beta=self.beta_dist_beta,
        )

    @model_validator(mode="after")
    def _names(self, info: ValidationInfo) -> "GenerationParams":
        samplers.resolve(self.sampler_name, self.scheduler)  # raises a readable ValueError
        if self.enable_hr:
            models = tuple((info.context or {}).get("upscalers") or ())
            if self.hr_upscaler not in HIRES_UPSCALERS and self.hr_upscaler not in models:
                raise ValueError(f"Hires upscaler '{self.hr_upscaler}' not found. Choose one of: {', '.join((*HIRES_UPSCALERS, *models))}.")
            self.hires_sampler()
            w, h = self.hires_size()
            if max(w, h) > 2 * MAX_SIZE:
                raise ValueError(f"Hires fix would make {w}x{h}; the largest side allowed is {2 * MAX_SIZE}.")
        return self

    @property
    def refiner(self) -> str | None:
        """The refiner checkpoint asked for, None when off."""
        return None if self.refiner_checkpoint == NO_REFINER else self.refiner_checkpoint.strip()

    @property
    def hires_checkpoint(self) -> str | None:
        """The checkpoint the hires pass runs on, None for the first pass's."""
        name = self.hr_checkpoint_name.strip()
        return name if self.enable_hr and name not in ("", SAME_CHECKPOINT) else None

    def hires_sampler(self) -> tuple[samplers.Sampler, samplers.Schedule]:
        """The second pass's sampler and schedule: the first pass's unless the hires ones are set."""
        name = self.sampler_name if self.hr_sampler_name in ("", SAME_SAMPLER) else self.hr_sampler_name
        schedule = self.scheduler if self.hr_scheduler in ("", SAME_SCHEDULER) else self.hr_scheduler
        return samplers.resolve(name, schedule)

    def token_merging(self, hires: bool = False) -> float:
        """The ratio a pass merges tokens by, as A1111 picks it: the high-res pass's own ratio,
        or img2img's, where set (non-zero), else token_merging_ratio."""
        if hires and self.token_merging_ratio_hr > 0:
            return self.token_merging_ratio_hr
        if isinstance(self, Img2ImgParams) and self.token_merging_ratio_img2img > 0:
            return self.token_merging_ratio_img2img
        return self.token_merging_ratio

    def hires_size(self) -> tuple[int, int]:
        """Final size of a hires fix run, a multiple of 8. "Upscale by" unless a resize is set;
        one side 0 keeps the aspect ratio, both set crops to fill (as A1111)."""
        x, y = self.hr_resize_x, self.hr_resize_y
        if x == 0 and y == 0:
            x, y = self.width * self.hr_scale, self.height * self.hr_scale
        elif x == 0:
            x = y * self.width / self.height
        elif y == 0:
            y = x * self.height / self.width
        return max(MIN_SIZE, int(x) // 8 * 8), max(MIN_SIZE, int(y) // 8 * 8)

    @classmethod
    def create(cls, upscalers: Iterable[str] = (), **values: Any) -> "GenerationParams":
        """Build from loose input (page or API): None means default; errors become one readable
        ValueError. `upscalers`: the model upscaler names hires fix may use besides the built-ins."""
        cleaned = {k: v for k, v in values.items() if v is not None}
        try:
            return cls.model_validate(cleaned, context={"upscalers": tuple(upscalers)})
        except ValidationError as exc:
            raise ValueError(readable_errors(exc, cls)) from None

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


class Img2ImgParams(GenerationParams):
    """An img2img or inpaint request: txt2img's fields plus how to use the init image and mask.
    The images themselves travel beside it (see modules.generation.runner.InitImages)."""

    denoising_strength: float = Field(0.75, ge=0.0, le=1.0, json_schema_extra=_meta("Denoising strength", "Denoising strength", step=0.01))
    resize_mode: int = Field(0, ge=0, le=3, json_schema_extra=_meta("Resize mode", choices=RESIZE_MODES))
    mask_blur: int = Field(4, ge=0, le=64, json_schema_extra=_meta("Mask blur", "Mask blur"))
    inpainting_mask_invert: int = Field(0, ge=0, le=1, json_schema_extra=_meta("Mask mode", "Mask mode", choices=MASK_MODES))
    inpainting_fill: int = Field(1, ge=0, le=3, json_schema_extra=_meta("Masked content", "Masked content", choices=MASKED_CONTENT))
    inpaint_full_res: bool = Field(False, json_schema_extra=_meta("Inpaint area", "Inpaint area", choices=INPAINT_AREAS))
    inpaint_full_res_padding: int = Field(32, ge=0, le=256, json_schema_extra=_meta("Only masked padding, pixels", "Masked area padding", step=4))

    @field_validator("resize_mode", "inpainting_mask_invert", "inpainting_fill", "inpaint_full_res", mode="before")
    @classmethod
    def _choice_names(cls, v: Any, info) -> Any:
        """Accept a choice's name where A1111 sends its index ("Crop and resize" or 1)."""
        if isinstance(v, str) and not v.strip().isdigit():
            choices = cls.model_fields[info.field_name].json_schema_extra["choices"]
            lowered = [c.lower() for c in choices]
            if v.strip().lower() not in lowered:
                raise ValueError(f"must be one of: {', '.join(choices)}")
            index = lowered.index(v.strip().lower())
            return bool(index) if info.field_name == "inpaint_full_res" else index
        return v

    @model_validator(mode="after")
    def _no_hires(self) -> "Img2ImgParams":
        if self.enable_hr:
            raise ValueError("Hires. fix is a txt2img option; img2img sets its size and denoising directly.")
        return self


def readable_errors(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    fields = (model or GenerationParams).model_fields
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ())]
        name = loc[0] if loc else ""
        label = fields[name].json_schema_extra["label"] if name in fields else name
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "is not a known parameter"
        parts.append(f"{label}: {msg}" if label else msg)
    return "; ".join(parts)


def format_number(value: float) -> str:
    """A1111 prints the slider value: 7 stays '7', 7.5 stays '7.5'."""
    return str(int(value)) if float(value).is_integer() else str(value)


AFTER_CFG = ("Distilled CFG Scale",)  # extra keys that go right after CFG scale, where Forge writes them


def infotext_fields(
    params: GenerationParams, *, seed: int, model_hash: str | None, model_name: str | None, version: str,
    clip_skip_applies: bool = True, masked: bool = False, vae_hash: str | None = None, vae_name: str | None = None,
    extras: list[tuple[str, Any]] = (), subseed: int | None = None, fp8_weight: str | None = None,
) -> list[tuple[str, Any]]:
    """The params line of A1111's infotext, keys in A1111's order (None values are dropped later).
    `clip_skip_applies` is False for models that ignore Clip skip (SD2, SDXL); `masked` says an
    inpainting mask was used, which adds A1111's mask keys; `vae_*` name a VAE file in use;
    `extras` (Emphasis, Lora hashes, TI hashes) come last, before Version, as in A1111.
    `subseed` is the image's variation seed (params.subseed when not given); `fp8_weight` is
    the fp8_storage setting the model was loaded with, when its weights are stored in fp8."""
    sampler, schedule = samplers.resolve(params.sampler_name, params.scheduler)
    meta = GenerationParams.field_meta
    img2img = isinstance(params, Img2ImgParams)
    denoising = params.denoising_strength if img2img or params.enable_hr else None
    fields: list[tuple[str, Any]] = [
        (meta("steps")["infotext"], params.steps),
        (meta("sampler_name")["infotext"], sampler.name),
        (meta("scheduler")["infotext"], samplers.infotext_schedule_label(sampler, schedule)),
        (meta("cfg_scale")["infotext"], format_number(params.cfg_scale)),
        (meta("seed")["infotext"], seed),
        (meta("restore_faces")["infotext"], params.face_restoration_model if params.restore_faces else None),
        ("Size", f"{params.width}x{params.height}"),
        ("Model hash", model_hash),
        ("Model", model_name),
        ("FP8 weight", fp8_weight),
        ("VAE hash", vae_hash),
        ("VAE", vae_name),
        *_variation_fields(params, subseed),
        (meta("denoising_strength")["infotext"], None if denoising is None else format_number(denoising)),
        (meta("clip_skip")["infotext"], params.clip_skip if params.clip_skip > 1 and clip_skip_applies else None),
        ("ENSD", params.eta_noise_seed_delta if _uses_ensd(params, sampler) else None),
        ("Token merging ratio", format_number(params.token_merging()) if params.token_merging() > 0 else None),
        ("Token merging ratio hr", format_number(params.token_merging(True)) if params.enable_hr and params.token_merging(True) > 0 else None),
        ("RNG", params.randn_source if params.randn_source != "GPU" else None),
        (meta("tiling")["infotext"], "True" if params.tiling else None),
    ]
    if params.enable_hr:
        fields += _hires_fields(params, sampler, schedule)
    if img2img and masked:
        fields += [
            ("Mask blur", params.mask_blur or None),
            ("Mask mode", MASK_MODES[1] if params.inpainting_mask_invert else None),
            ("Masked content", MASKED_CONTENT[params.inpainting_fill] if params.inpainting_fill != 1 else None),
            ("Inpaint area", INPAINT_AREAS[1] if params.inpaint_full_res else None),
            ("Masked area padding", params.inpaint_full_res_padding if params.inpaint_full_res else None),
        ]
    extras = list(extras)
    beside_cfg = [e for e in extras if e[0] in AFTER_CFG]  # Forge writes Flux's guidance right after CFG scale
    if beside_cfg:
        at = next(i for i, (key, _) in enumerate(fields) if key == meta("cfg_scale")["infotext"]) + 1
        fields[at:at] = beside_cfg
        extras = [e for e in extras if e[0] not in AFTER_CFG]
    return fields + extras + sampler_fields(params, sampler, schedule) + [("Version", version)]


def _variation_fields(params: GenerationParams, subseed: int | None) -> list[tuple[str, Any]]:
    """A1111's Variation seed, Variation seed strength and Seed resize from, each only when in use."""
    varied = params.subseed_strength > 0
    resized = params.seed_resize_from_w > 0 and params.seed_resize_from_h > 0
    return [
        ("Variation seed", (params.subseed if subseed is None else subseed) if varied else None),
        ("Variation seed strength", format_number(params.subseed_strength) if varied else None),
        ("Seed resize from", f"{params.seed_resize_from_w}x{params.seed_resize_from_h}" if resized else None),
    ]


def _uses_ensd(params: GenerationParams, sampler: samplers.Sampler) -> bool:
    """A1111 records ENSD for the samplers that add per-step noise, when they add any."""
    return bool(params.eta_noise_seed_delta) and sampler.uses_ensd and params.sampler_options().eta_for(sampler) != 0


def sampler_fields(params: GenerationParams, sampler: samplers.Sampler, schedule: samplers.Schedule) -> list[tuple[str, Any]]:
    """A1111's sampler-parameter keys, each written only where it applies and is not neutral."""
    options = params.sampler_options()
    fields: list[tuple[str, Any]] = []
    if sampler.eta is not None:
        eta = options.eta_for(sampler)
        neutral, key = (0.0, "Eta DDIM") if sampler.eta == "ddim" else (1.0, "Eta")
        fields.append((key, eta if eta != neutral else None))
    if sampler.churn:
        fields += [("Sigma churn", params.s_churn or None), ("Sigma tmin", params.s_tmin or None), ("Sigma tmax", params.s_tmax or None)]
    if sampler.churn or sampler.takes_s_noise:
        fields.append(("Sigma noise", params.s_noise if params.s_noise != 1.0 else None))
    wanted = samplers.effective_schedule(sampler, schedule)
    if not sampler.timestep_based and wanted.name != "automatic":
        fields += [("Schedule min sigma", params.sigma_min or None), ("Schedule max sigma", params.sigma_max or None)]
        if wanted.default_rho != -1 and params.rho and params.rho != wanted.default_rho:
            fields.append(("Schedule rho", params.rho))
        if wanted.name == "beta":
            fields += [("Beta schedule alpha", params.beta_dist_alpha), ("Beta schedule beta", params.beta_dist_beta)]
    if params.always_discard_next_to_last_sigma and not sampler.discard_penultimate:
        fields.append(("Discard penultimate sigma", "True"))
    return fields


def _hires_fields(params: GenerationParams, sampler: samplers.Sampler, schedule: samplers.Schedule) -> list[tuple[str, Any]]:
    """A1111's hires keys: the scale or the resize, steps when set, the upscaler, and the
    second pass's sampler and prompts only where they differ from the first pass."""
    resized = params.hr_resize_x or params.hr_resize_y
    hr_sampler, hr_schedule = params.hires_sampler()
    return [
        ("Hires upscale", None if resized else format_number(params.hr_scale)),
        ("Hires resize", f"{params.hr_resize_x}x{params.hr_resize_y}" if resized else None),
        ("Hires checkpoint", params.hires_checkpoint),  # the service puts the checkpoint's "name [hash]" here, as A1111 writes it
        ("Hires steps", params.hr_second_pass_steps or None),
        ("Hires upscaler", params.hr_upscaler),
        ("Hires sampler", hr_sampler.name if hr_sampler != sampler else None),
        ("Hires schedule type", samplers.infotext_schedule_label(hr_sampler, hr_schedule) if hr_schedule != schedule else None),
        ("Hires prompt", params.hr_prompt if params.hr_prompt and params.hr_prompt != params.prompt else None),
        ("Hires negative prompt", params.hr_negative_prompt if params.hr_negative_prompt and params.hr_negative_prompt != params.negative_prompt else None),
    ]
