"""A1111's settings (`config.json`): what each key means, its default and its allowed values,
and the store that loads, checks, saves and announces them.

The definitions are the one list the Settings tab, `GET/POST /sdapi/v1/options` and the
file share, so a setting is added in one place. The store is owned by the app object and
handed to whoever needs it; listeners (the generation service, the model manager) pick up
changes, so nothing reads settings behind the app's back.

A hand-edited file with a bad value does not stop the server: that key falls back to its
default and a warning names it. Unknown keys (A1111's many others, extensions') are kept.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.generation.limits import WorkLimits
from modules.generation.previews import PREVIEW_METHODS
from modules.postprocessing.interrogate import category_names
from modules.generation.params import EMPHASIS_MODES, FACE_RESTORERS, HIRES_REFINER_PASSES, RNG_SOURCES, is_text
from modules.generation.speed import COMPILE_LABELS, COMPILE_MODES, FP8_CHOICES
from modules.models.network_cards import ORDERS as CARD_ORDERS, SORT_FIELDS as CARD_SORT_FIELDS

log = logging.getLogger(__name__)

IMAGE_FORMATS = ("png", "jpg", "webp")
WORK_LIMITS = WorkLimits()  # the limit_* settings' defaults
MAX_VALUE_BYTES = 64 * 1024  # one setting in config.json: styles and extensions' lists fit, a 50 MB value does not


class SettingsNotSaved(ValueError):
    """config.json could not be written (disk full, read-only): the change was undone."""


@dataclass(frozen=True)
class Setting:
    """One config.json key. `choices` may be a callable for lists known only at run time
    (checkpoints, VAEs); those are checked by their owners when applied, not here."""

    key: str
    default: Any
    label: str
    section: str
    choices: tuple | Callable[[], Iterable[str]] | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    info: str = ""
    hidden: bool = False  # kept in config.json and /options, but no control in the Settings tab (the Extensions tab owns it)

    @property
    def kind(self) -> type:
        return type(self.default) if self.default is not None else str

    def check(self, value: Any) -> Any:
        """The value as stored, or ValueError with a sentence. JSON types are strict ("80" is
        not a quality, 1 is not true), but a whole float (a slider's 20.0) is a whole number."""
        kind = self.kind
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{self.key} must be true or false, got {value!r}")
        elif kind is int:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{self.key} must be a whole number, got {value!r}")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{self.key} must be a number, got {value!r}")
            value = float(value)
        elif kind is list:  # a multiple choice (A1111's CheckboxGroup settings): strings, each one of the choices
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{self.key} must be a list of strings, got {value!r}")
            unknown = [v for v in value if isinstance(self.choices, tuple) and v not in self.choices]
            if unknown:
                raise ValueError(f"{self.key} takes only {', '.join(map(str, self.choices))}; got {', '.join(map(repr, unknown))}")
            return list(value)
        elif value is None and self.default is None:
            return None
        elif not isinstance(value, str):
            raise ValueError(f"{self.key} must be a string, got {value!r}")
        elif "\0" in value:
            raise ValueError(f"{self.key} holds a NUL character, which no file name or text setting can hold")
        elif not is_text(value):
            raise ValueError(f"{self.key} holds a lone surrogate (an invalid character such as \\ud800): send valid UTF-8 text")
        if self.minimum is not None and value < self.minimum or self.maximum is not None and value > self.maximum:
            raise ValueError(f"{self.key} must be from {_num(self.minimum)} to {_num(self.maximum)}, got {value!r}")
        if isinstance(self.choices, tuple) and value not in self.choices:
            raise ValueError(f"{self.key} must be one of: {', '.join(map(str, self.choices))}; got {value!r}")
        return value


def _num(value: float | None) -> str:
    return "" if value is None else str(int(value)) if float(value).is_integer() else str(value)


SAVING = "Saving images/grids"
PATHS = "Paths for saving"
DIRS = "Saving to a directory"
SD = "Stable Diffusion"
PREVIEWS = "Live previews"
VAE = "VAE"
OPTIMIZATIONS = "Optimizations"
SAMPLER_PARAMETERS = "Sampler parameters"
POSTPROCESSING = "Postprocessing"
FACE_RESTORATION = "Face restoration"
UPSCALING = "Upscaling"
GALLERY = "Gallery"
LIMITS = "Limits"
INTERROGATE = "Interrogate"
CONTROLNET = "ControlNet"
EXTENSIONS = "Extensions"
USER_INTERFACE = "User interface"
EXTRA_NETWORKS = "Extra Networks"
# A1111's extension index (ui_extensions.py); WEBUI_EXTENSIONS_INDEX replaces it, as in A1111.
EXTENSIONS_INDEX_URL = os.environ.get("WEBUI_EXTENSIONS_INDEX") or \
    "https://raw.githubusercontent.com/AUTOMATIC1111/stable-diffusion-webui-extensions/master/index.json"
INTERROGATE_CATEGORIES = category_names()  # configs/interrogate's lists

SETTINGS: tuple[Setting, ...] = (
    Setting("samples_save", True, "Always save all generated images", SAVING),
    Setting("samples_format", "png", "File format for images", SAVING, IMAGE_FORMATS),
    Setting("samples_filename_pattern", "", "Images filename pattern", SAVING,
            info="Empty: [seed] in date folders, else [seed]-[prompt_spaces]. Tags: [seed] [prompt] [prompt_spaces] [prompt_words] "
                 "[model_name] [model_hash] [steps] [cfg] [sampler] [width] [height] [date] [datetime] [datetime<%Y%m%d>] [user] [none]"),
    Setting("grid_save", True, "Always save all generated image grids", SAVING),
    Setting("grid_format", "png", "File format for grids", SAVING, IMAGE_FORMATS),
    Setting("save_txt", False, "Create a text file with infotext next to every image", SAVING),
    Setting("save_selected_only", True, "When using 'Save' button, only save a single selected image", SAVING),
    Setting("enable_pnginfo", True, "Save text information about generation parameters as chunks to png files", SAVING),
    Setting("jpeg_quality", 80, "Quality for saved jpeg and webp images", SAVING, minimum=1, maximum=100, step=1),
    Setting("webp_lossless", False, "Use lossless compression for webp images", SAVING),
    Setting("outdir_txt2img_samples", "outputs/txt2img-images", "Output directory for txt2img images", PATHS),
    Setting("outdir_img2img_samples", "outputs/img2img-images", "Output directory for img2img images", PATHS),
    Setting("outdir_extras_samples", "outputs/extras-images", "Output directory for images from extras tab", PATHS),
    Setting("outdir_txt2img_grids", "outputs/txt2img-grids", "Output directory for txt2img grids", PATHS),
    Setting("outdir_img2img_grids", "outputs/img2img-grids", "Output directory for img2img grids", PATHS),
    Setting("outdir_save", "log/images", "Directory for saving images using the Save button", PATHS),
    Setting("save_to_dirs", True, "Save images to a subdirectory", DIRS),
    Setting("grid_save_to_dirs", True, "Save grids to a subdirectory", DIRS),
    Setting("directories_filename_pattern", "[date]", "Directory name pattern", DIRS, info="Tags as for file names, e.g. [date] or [model_name]"),
    Setting("directories_max_prompt_words", 8, "Max prompt words for [prompt_words] pattern", DIRS, minimum=1, maximum=20, step=1),
    Setting("sd_model_checkpoint", None, "Stable Diffusion checkpoint", SD, choices=lambda: ()),
    Setting("sd_vae", "Automatic", "SD VAE", SD, choices=lambda: ()),
    Setting("CLIP_stop_at_last_layers", 1, "Clip skip", SD, minimum=1, maximum=12, step=1),
    Setting("emphasis", "Original", "Emphasis mode", SD, EMPHASIS_MODES,
            info="Original: A1111's (weights scale the embedding, then the mean is restored); No norm: without the mean; "
                 "Ignore: (brackets) are plain text; None: weights are ignored"),
    Setting("comma_padding_backtrack", 20, "Prompt word wrap length limit", SD, minimum=0, maximum=74, step=1,
            info="in tokens: a 75-token chunk ends at the last comma within this many tokens, so phrases are not split"),
    Setting("hires_fix_refiner_pass", "second pass", "Hires fix: which pass to enable refiner for", SD, HIRES_REFINER_PASSES),
    Setting("refiner_switch_by_sample_steps", False, "Switch to refiner by sampling steps instead of model timesteps", SD,
            info="A1111's old behaviour: Switch at counts model calls, not the share of the noise schedule behind"),
    Setting("sdxl_refiner_low_aesthetic_score", 2.5, "SDXL low aesthetic score", SD, minimum=0, maximum=10, step=0.1,
            info="the SDXL refiner's conditioning for the negative prompt"),
    Setting("sdxl_refiner_high_aesthetic_score", 6.0, "SDXL high aesthetic score", SD, minimum=0, maximum=10, step=0.1,
            info="the SDXL refiner's conditioning for the prompt"),
    Setting("randn_source", "GPU", "Random number generator source", SD, RNG_SOURCES,
            info="GPU: the generating device's noise (what A1111 does on NVIDIA); CPU: the same picture on every device; "
                 "NV: NVIDIA's GPU noise computed on any device, to remake pictures made on NVIDIA cards"),
    Setting("eta_noise_seed_delta", 0, "Eta noise seed delta", SAMPLER_PARAMETERS, minimum=0, maximum=2**31 - 1, step=1,
            info="ENSD: the per-step noise of ancestral samplers is seeded with seed + this (31337 in some shared infotexts)"),
    Setting("eta_ancestral", 1.0, "Eta for k-diffusion samplers", SAMPLER_PARAMETERS, minimum=0, maximum=1, step=0.01,
            info="noise multiplier; applies to Euler a and the other ancestral and SDE samplers"),
    Setting("eta_ddim", 0.0, "Eta for DDIM", SAMPLER_PARAMETERS, minimum=0, maximum=1, step=0.01,
            info="noise multiplier for DDIM and DDIM CFG++; higher adds more randomness"),
    Setting("s_churn", 0.0, "sigma churn", SAMPLER_PARAMETERS, minimum=0, maximum=100, step=0.01,
            info="amount of stochasticity (Euler, Heun, DPM2)"),
    Setting("s_tmin", 0.0, "sigma tmin", SAMPLER_PARAMETERS, minimum=0, maximum=10, step=0.01,
            info="churn only from this noise level up"),
    Setting("s_tmax", 0.0, "sigma tmax", SAMPLER_PARAMETERS, minimum=0, maximum=999, step=0.01,
            info="churn only up to this noise level; 0 = no limit"),
    Setting("s_noise", 1.0, "sigma noise", SAMPLER_PARAMETERS, minimum=0, maximum=1.1, step=0.001,
            info="amount of additional noise to counteract loss of detail during sampling"),
    Setting("sigma_min", 0.0, "sigma min", SAMPLER_PARAMETERS, minimum=0, maximum=10, step=0.001,
            info="the schedule's lowest noise level; 0 = the model's"),
    Setting("sigma_max", 0.0, "sigma max", SAMPLER_PARAMETERS, minimum=0, maximum=100, step=0.001,
            info="the schedule's highest noise level; 0 = the model's"),
    Setting("rho", 0.0, "rho", SAMPLER_PARAMETERS, minimum=0, maximum=20, step=0.01,
            info="shape of the Karras (default 7) and Polyexponential (default 1) schedules; 0 = the default"),
    Setting("always_discard_next_to_last_sigma", False, "Always discard next-to-last sigma", SAMPLER_PARAMETERS),
    Setting("beta_dist_alpha", 0.6, "Beta scheduler - alpha", SAMPLER_PARAMETERS, minimum=0.01, maximum=1, step=0.01),
    Setting("beta_dist_beta", 0.6, "Beta scheduler - beta", SAMPLER_PARAMETERS, minimum=0.01, maximum=1, step=0.01),
    Setting("live_previews_enable", True, "Show live previews of the created image", PREVIEWS),
    Setting("show_progress_every_n_steps", 10, "Live preview display period", PREVIEWS, minimum=-1, maximum=32, step=1,
            info="in sampling steps; -1: only at the end"),
    Setting("show_progress_type", PREVIEW_METHODS[1], "Live preview method", PREVIEWS, PREVIEW_METHODS,
            info="Full: the VAE (slow on large pictures); Approx cheap: a fixed colour projection of the latents, nearly free; "
                 "TAESD: madebyollin's tiny decoder in models/VAE-approx (taesd_decoder.pth for SD1/2, taesdxl_decoder.pth for SDXL), "
                 "else Approx cheap. Approx NN (A1111's) is not built in: it draws as Approx cheap"),
    Setting("vae_tiling_megapixels", 2.0, "Tiled VAE above this many megapixels", VAE, minimum=0, maximum=64, step=0.1,
            info="larger pictures are encoded and decoded in bands, so they fit in a small card's memory (same picture, "
                 "slower); 0: never. A1111 has no such built-in setting (its users add the Tiled VAE extension)"),
    # A1111's Optimizations section (modules/generation/speed.py: model-wide, a change reloads the model;
    # the token merging ratios and NGMS travel with each job).
    Setting("s_min_uncond", 0.0, "Negative Guidance minimum sigma", OPTIMIZATIONS, minimum=0, maximum=15, step=0.01,
            info="skip the negative prompt on every other step once the noise is below this sigma, when the picture is "
                 "almost ready; 0 = off, higher = faster (NGMS in the infotext)"),
    Setting("token_merging_ratio", 0.0, "Token merging ratio", OPTIMIZATIONS, minimum=0, maximum=0.9, step=0.1,
            info="merge similar image tokens before self-attention at full latent resolution; 0 = off, higher = faster, "
                 "less detail"),
    Setting("token_merging_ratio_img2img", 0.0, "Token merging ratio for img2img", OPTIMIZATIONS, minimum=0, maximum=0.9, step=0.1,
            info="only applies if non-zero and overrides above"),
    Setting("token_merging_ratio_hr", 0.0, "Token merging ratio for high-res pass", OPTIMIZATIONS, minimum=0, maximum=0.9, step=0.1,
            info="only applies if non-zero and overrides above"),
    Setting("fp8_storage", "Disable", "FP8 weight", OPTIMIZATIONS, FP8_CHOICES,
            info="store the UNet's weights in 8 bits and cast each layer up as it runs: about half the UNet's memory, "
                 "slightly different pictures (FP8 weight in the infotext); --unet-in-fp8-e4m3fn forces it on"),
    Setting("opt_channelslast", False, "Channels-last memory format for the UNet and VAE", OPTIMIZATIONS,
            info="faster convolutions on some GPUs and CPUs, the same pictures; --opt-channelslast forces it on"),
    Setting("opt_tf32", True, "TF32 for float32 maths on Ampere and newer NVIDIA GPUs", OPTIMIZATIONS,
            info="faster float32 matrix maths (the VAE in float32, the samplers) at slightly lower precision; --no-tf32 turns it off"),
    Setting("sd_compile", COMPILE_LABELS["none"], "Compile the model with torch.compile", OPTIMIZATIONS, tuple(COMPILE_LABELS.values()),
            info="faster steps after a compile of tens of seconds (minutes for SDXL) on the first job of each image size; "
                 "needs a C++ compiler (Triton on NVIDIA); --compile sets it from the command line"),
    Setting("sd_compile_mode", "default", "torch.compile mode", OPTIMIZATIONS, COMPILE_MODES,
            info="reduce-overhead uses CUDA graphs (fastest at small batches, more memory); max-autotune compiles longer"),
    Setting("face_restoration_model", FACE_RESTORERS[0], "Face restoration model", FACE_RESTORATION, FACE_RESTORERS,
            info="used by Restore faces; a model missing from models/GFPGAN or models/Codeformer means the other one present. "
                 "CodeFormer needs the optional spandrel-extra-arches package and is for non-commercial use only (S-Lab licence)"),
    Setting("code_former_weight", 0.5, "CodeFormer weight", FACE_RESTORATION, minimum=0, maximum=1, step=0.01,
            info="0 = maximum effect; 1 = minimum effect"),
    Setting("face_restoration_unload", False, "Move face restoration model from VRAM into RAM after processing", FACE_RESTORATION),
    Setting("use_original_name_batch", True, "Use original name for output filename during batch process in extras tab", POSTPROCESSING),
    Setting("ESRGAN_tile", 192, "Tile size for ESRGAN upscalers", UPSCALING, minimum=0, maximum=512, step=16,
            info="0 = no tiling; smaller tiles need less memory"),
    Setting("ESRGAN_tile_overlap", 8, "Tile overlap for ESRGAN upscalers", UPSCALING, minimum=0, maximum=48, step=1,
            info="in pixels; low values = visible seam"),
    Setting("gallery_per_page", 36, "Images per page in the Gallery tab", GALLERY, minimum=6, maximum=240, step=1),
    Setting("gallery_show_all_users", False, "With log-ins on, show every user's images in the Gallery tab", GALLERY,
            info="Off: each user sees only their own folder (outputs/<folder>/<user>/...)."),
    # A1111's Interrogate section (modules/postprocessing/interrogate.py, tagger.py).
    Setting("interrogate_keep_models_in_memory", False, "Keep models in VRAM", INTERROGATE),
    Setting("interrogate_return_ranks", False, "Include ranks of model tags matches in results.", INTERROGATE),
    Setting("interrogate_clip_num_beams", 1, "BLIP: num_beams", INTERROGATE, minimum=1, maximum=16, step=1),
    Setting("interrogate_clip_min_length", 24, "BLIP: minimum description length", INTERROGATE, minimum=1, maximum=128, step=1),
    Setting("interrogate_clip_max_length", 48, "BLIP: maximum description length", INTERROGATE, minimum=1, maximum=256, step=1),
    Setting("interrogate_clip_dict_limit", 1500, "CLIP: maximum number of lines in text file", INTERROGATE, minimum=0, maximum=100_000, step=1,
            info="0 = No limit"),
    Setting("interrogate_clip_skip_categories", [], "CLIP: skip inquire categories", INTERROGATE, INTERROGATE_CATEGORIES),
    Setting("interrogate_deepbooru_score_threshold", 0.5, "deepbooru: score threshold", INTERROGATE, minimum=0, maximum=1, step=0.01),
    Setting("deepbooru_sort_alpha", True, "deepbooru: sort tags alphabetically", INTERROGATE, info="if not: sort by score"),
    Setting("deepbooru_use_spaces", True, "deepbooru: use spaces in tags", INTERROGATE, info="if not: use underscores"),
    Setting("deepbooru_escape", True, "deepbooru: escape (\\) brackets", INTERROGATE, info="so they are used as literal brackets and not for emphasis"),
    Setting("deepbooru_filter_tags", "", "deepbooru: filter out those tags", INTERROGATE, info="separate by comma"),
    # The A1111 ControlNet extension's settings, under its keys (modules/controlnet/service.py).
    Setting("control_net_unit_count", 3, "Multi-ControlNet: ControlNet unit number (requires restart)", CONTROLNET, minimum=1, maximum=10,
            step=1),
    Setting("control_net_model_cache_size", 2, "Model cache size", CONTROLNET, minimum=1, maximum=10, step=1,
            info="ControlNets kept loaded between jobs"),
    Setting("control_net_models_path", "", "Extra path to scan for ControlNet models (e.g. training output directory)", CONTROLNET),
    Setting("control_net_no_detectmap", False, "Do not append detectmap to output", CONTROLNET,
            info="the API's images and the page's gallery otherwise end with each unit's detected map"),
    # Bounds on one request's work (modules/generation/limits.py); 0 turns one off.
    Setting("limit_prompt_characters", WORK_LIMITS.prompt_characters, "Longest prompt (characters)", LIMITS, minimum=0, maximum=10_000_000, step=1,
            info="0: no limit"),
    Setting("limit_and_parts", WORK_LIMITS.and_parts, "Most AND parts in a prompt", LIMITS, minimum=0, maximum=100_000, step=1, info="0: no limit"),
    Setting("limit_schedule_entries", WORK_LIMITS.schedule_entries, "Most prompt editing / alternation schedule entries per job", LIMITS, minimum=0,
            maximum=1_000_000, step=1, info="0: no limit"),
    Setting("limit_prompt_tokens", WORK_LIMITS.prompt_tokens, "Most tokens in all of a job's prompts together", LIMITS, minimum=0, maximum=10_000_000,
            step=1, info="0: no limit"),
    Setting("limit_loras_per_prompt", WORK_LIMITS.loras_per_prompt, "Most LoRAs in a prompt", LIMITS, minimum=0, maximum=10_000, step=1, info="0: no limit"),
    Setting("limit_megapixel_steps", WORK_LIMITS.megapixel_steps, "Most work per job (megapixel-steps)", LIMITS, minimum=0, maximum=10**12, step=1,
            info="batch size x batch count x steps x megapixels, hires fix included; 0: no limit"),
    Setting("script_max_jobs", 200, "Most jobs one script run may queue", LIMITS, minimum=1, maximum=100_000, step=1,
            info="X/Y/Z plot cells, prompt matrix combinations, prompts from file lines: a larger run is refused before it starts"),
    Setting("limit_request_megabytes", 16.0, "Largest API request body (MB)", LIMITS, minimum=0, maximum=4096, step=1,
            info="routes without pictures: txt2img, options, ..."),
    Setting("limit_image_request_megabytes", 128.0, "Largest API request body with pictures (MB)", LIMITS, minimum=0, maximum=4096,
            step=1, info="img2img, extras, PNG Info, interrogate"),
    Setting("limit_image_megapixels", WORK_LIMITS.image_megapixels, "Largest image accepted (megapixels)", LIMITS, minimum=0, maximum=1_000, step=1,
            info="uploads and API images larger than this are refused before they are decoded"),
    # The page (modules/ui/): its language, and what it does when a job ends while the tab is in the background.
    Setting("localization", "None", "Localization", USER_INTERFACE, choices=lambda: (),
            info="the page's language: a localizations/<name>.json file; reload the page after changing it"),
    Setting("notification_audio", True, "Play notification sound after image generation", USER_INTERFACE,
            info="when the tab is in the background; notification.mp3 in the data folder if there is one, else a short tone"),
    Setting("notification_volume", 100, "Notification sound volume", USER_INTERFACE, minimum=0, maximum=100, step=1, info="in %"),
    # A1111's Extra Networks section: the cards under the prompt (modules/ui/extra_networks.py).
    Setting("extra_networks_default_multiplier", 1.0, "Default multiplier for extra networks", EXTRA_NETWORKS, minimum=0, maximum=2,
            step=0.01),
    Setting("extra_networks_card_order_field", "Path", "Default order field for Extra Networks cards", EXTRA_NETWORKS, CARD_SORT_FIELDS),
    Setting("extra_networks_card_order", "Ascending", "Default order for Extra Networks cards", EXTRA_NETWORKS, CARD_ORDERS),
    # A1111's extension switches (modules/extensions/layout.py reads them; the Extensions tab writes them).
    Setting("disabled_extensions", [], "Disabled extensions", EXTENSIONS, hidden=True),
    Setting("disable_all_extensions", "none", "Disable all extensions (preserves the list of disabled extensions)", EXTENSIONS,
            ("none", "extra", "all"), hidden=True),
    Setting("extensions_index_url", EXTENSIONS_INDEX_URL, "URL of the extension index", EXTENSIONS, hidden=True),
)

BY_KEY = {s.key: s for s in SETTINGS}


@dataclass
class SettingsStore:
    """config.json, loaded once at start, checked, and written back on every change (atomically,
    indent 4 as A1111 writes it)."""

    path: Path
    definitions: dict[str, Setting] = field(default_factory=lambda: dict(BY_KEY))
    values: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # from the last load, for the page to show
    _listeners: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    _guards: list[Callable[[str, Any], None]] = field(default_factory=list)  # see add_guard
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @classmethod
    def open(cls, path: Path) -> "SettingsStore":
        store = cls(Path(path))
        store.load()
        return store

    def load(self) -> list[str]:
        """Read the file: a missing file is all defaults; unreadable JSON is set aside as
        `config.json.bad` (A1111 moves it to tmp/) and defaults used; each bad value is
        replaced by its default. Returns (and keeps) the warnings."""
        raw: dict[str, Any] = {}
        warnings: list[str] = []
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                if not isinstance(raw, dict):
                    raise ValueError("the file does not hold a JSON object")
            except (OSError, ValueError) as exc:
                backup = self.path.with_name(self.path.name + ".bad")
                shutil.copyfile(self.path, backup)
                warnings.append(f"{self.path.name} could not be read ({exc}); it was copied to {backup.name} and defaults are used.")
                raw = {}
        values = dict(raw)
        for key, setting in self.definitions.items():
            if key not in raw:
                values[key] = setting.default
                continue
            try:
                values[key] = setting.check(raw[key])
            except ValueError as exc:
                warnings.append(f"{self.path.name}: {exc}; using the default {setting.default!r}.")
                values[key] = setting.default
        with self._lock:
            self.values, self.warnings = values, warnings
        for warning in warnings:
            log.warning("%s", warning)
        return warnings

    def __getitem__(self, key: str) -> Any:
        return self.values[key] if key in self.values else self.definitions[key].default

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def preview_every(self) -> int:
        """Steps between live previews (0: none), from A1111's two live-preview settings."""
        return max(0, self["show_progress_every_n_steps"]) if self["live_previews_enable"] else 0

    def check(self, updates: dict[str, Any]) -> dict[str, Any]:
        """The updates as they would be stored; ValueError for the first bad one. Keys this
        app does not define are accepted and kept (A1111 extensions' settings)."""
        checked = {key: self.definitions[key].check(value) if key in self.definitions else value for key, value in updates.items()}
        for key, value in checked.items():  # an unknown key's value is kept as sent: it must be storable, and small
            try:
                size = len(json.dumps({key: value}, ensure_ascii=False, allow_nan=False).encode("utf-8"))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"the settings sent cannot be stored in config.json ({exc})") from None
            if size > MAX_VALUE_BYTES:
                raise ValueError(f"{key[:100]!r} is {size:,} bytes as JSON, more than config.json keeps for one setting ({MAX_VALUE_BYTES:,})")
        for key, value in checked.items():
            if self.values.get(key, _MISSING) != value:  # a value already in force (the owner's config.json) is never refused
                for guard in self._guards:
                    guard(key, value)
        return checked

    def add_guard(self, guard: Callable[[str, Any], None]) -> None:
        """`guard(key, value)` runs for every change before it is accepted and may raise
        ValueError to refuse it (the network policy refuses output folders outside the data
        folder on a shared server). Loading config.json does not go through it."""
        self._guards.append(guard)

    def update(self, updates: dict[str, Any], notify: bool = True) -> dict[str, Any]:
        """Check every value first (a bad one changes nothing), let the listeners apply the
        changed ones (a listener's ValueError rolls the change back), then save. Returns
        the keys that changed, with their new values."""
        checked = self.check(updates)
        with self._lock:
            changed = {k: v for k, v in checked.items() if self.values.get(k, _MISSING) != v}
            if not changed:
                return {}
            before = dict(self.values)
            self.values.update(changed)
            try:
                if notify:
                    for listener in self._listeners:
                        listener(changed)
            except ValueError:
                self.values = before
                raise
            try:
                self.save()
            except OSError as exc:  # a full disk or a read-only folder: config.json stays as it was, and so do we
                self.values = before
                self._notify_quietly({k: before[k] for k in changed if k in before})
                raise SettingsNotSaved(f"Could not save the settings to {self.path}: {exc.strerror or exc}. Nothing was changed; "
                                       "free some space (or fix the folder's permissions) and apply again.") from None
        return changed

    def _notify_quietly(self, values: dict[str, Any]) -> None:
        """Tell the listeners of a change that is being undone; they took the new values already."""
        for listener in self._listeners:
            try:
                listener(values)
            except ValueError:
                log.warning("Could not restore %s after a failed save", sorted(values))

    def on_change(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """`listener(changed)` runs for each update, before it is saved; it may raise
        ValueError to refuse the change."""
        self._listeners.append(listener)

    def save(self) -> None:
        """Write config.json through a temp file, so a crash never leaves half a file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with self._lock:
            text = json.dumps(self.values, indent=4, ensure_ascii=False)
        try:
            temp.write_text(text + "\n", encoding="utf-8")
            os.replace(temp, self.path)
        except OSError:
            temp.unlink(missing_ok=True)
            raise

    def add_definitions(self, settings: Iterable[Setting]) -> list[str]:
        """Settings an extension adds: config.json's value for each is checked now (the file was
        read before the extensions loaded), else its default. A key the app or an earlier
        extension already defines is refused. Returns the problems (also in `warnings`)."""
        problems: list[str] = []
        with self._lock:
            for setting in settings:
                if setting.key in self.definitions:
                    problems.append(f"Setting '{setting.key}' is defined twice; the second definition ({setting.label!r}) is ignored.")
                    continue
                self.definitions[setting.key] = setting
                if setting.key not in self.values:
                    self.values[setting.key] = setting.default
                    continue
                try:
                    self.values[setting.key] = setting.check(self.values[setting.key])
                except ValueError as exc:
                    problems.append(f"{self.path.name}: {exc}; using the default {setting.default!r}.")
                    self.values[setting.key] = setting.default
            self.warnings.extend(problems)
        for problem in problems:
            log.warning("%s", problem)
        return problems

    def sections(self) -> dict[str, list[Setting]]:
        grouped: dict[str, list[Setting]] = {}
        for setting in self.definitions.values():
            grouped.setdefault(setting.section, []).append(setting)
        return grouped


_MISSING = object()
