"""The extension API: everything an extension's `scripts/*.py` may use, in one module. What is
named here stays; anything else in `modules/` may change between versions.

Two kinds of scripts:

- `Script` is A1111's: `title()`, `show(is_img2img)` (`AlwaysVisible` for an always-on script,
  True for one in the Script menu), `ui(is_img2img)` returning gradio components, and the hooks
  with A1111's names (`before_process`, `process`, `before_process_batch`, `process_batch`,
  `postprocess_batch`, `postprocess_image`, `postprocess`) that get the processing object `p`
  (A1111's common fields) and the script's arguments. A selectable one's `run(p, *args)` calls
  `process_images(p)` as often as it likes; each call is one queued job.
- `QueueScript` is this project's: it declares its controls as `ScriptArg`s (so the page and
  /sdapi/v1/script-info are made from one list), checks the whole request in `prepare` before
  anything is queued, and queues its jobs through a `ScriptContext` (the built-in X/Y/Z plot,
  prompt matrix, ... are written this way).

Callbacks (`on_app_started`, `on_ui_tabs`, `on_ui_settings`/`add_setting`, `on_before_image_saved`,
`on_image_saved`, `on_cfg_denoiser`, `on_infotext_pasted`) are registered while the extension's
scripts load; they belong to that extension, and one that raises is named in the log and the
page and switched off for the job, not the server.
"""

from __future__ import annotations

from modules.generation import samplers  # the sampler table: SAMPLERS, SCHEDULES, find_sampler, find_schedule, resolve
from modules.generation.images import flatten as flatten_image
from modules.generation.params import FACE_RESTORERS, MASKED_CONTENT, MAX_SEED, RNG_SOURCES, GenerationParams, Img2ImgParams
from modules.outputs import tiles  # overlapping tiles of a picture and their stitching (SD upscale's)
from modules.outputs.grids import GridLabel, annotated_grid, combine_grids
from modules.outputs.infotext import format_params_line
from modules.outputs.saving import make_grid  # pictures tiled into one, row by row (a batch's grid)
from modules.scripts.args import ScriptArg, read_bool
from modules.scripts.base import LARGEST_SEED, SEEDS, ScriptEnv, ScriptRequest, ScriptResult, counted_seeds, fixed_seeds
from modules.scripts.base import Script as QueueScript
from modules.scripts.context import ScriptContext, ScriptStopped  # ScriptStopped: what ctx calls raise once the user interrupts


from modules.extensions.callbacks import CFGDenoiserParams, ImageSaveParams
from modules.extensions.callbacks import current as _current
from modules.extensions.callbacks import register as _register
from modules.extensions.hook_scripts import AlwaysVisible, Script
from modules.extensions.processing import (
    PostprocessImageArgs,
    Processed,
    Processing,
    StableDiffusionProcessing,
    StableDiffusionProcessingImg2Img,
    StableDiffusionProcessingTxt2Img,
    process_images,
)


# ---------------------------------------------------------------------- callbacks

def on_app_started(callback) -> None:
    """callback(page, app) once the server is built: `app` is the FastAPI app (add routes to it),
    `page` the gradio Blocks (None with --nowebui)."""
    _register("app_started", callback)


def on_ui_tabs(callback) -> None:
    """callback() -> [(blocks, title, elem_id)]: tabs for the page, each a gr.Blocks the
    callback built (`with gr.Blocks() as blocks: ...`), shown before Settings."""
    _register("ui_tabs", callback)


def on_ui_settings(callback) -> None:
    """callback() at start, after every extension loaded: call add_setting there."""
    _register("ui_settings", callback)


def on_before_image_saved(callback) -> None:
    """callback(ImageSaveParams) before each picture of a job is written: it may replace
    params.image or change params.pnginfo["parameters"] (the infotext)."""
    _register("before_image_saved", callback)


def on_image_saved(callback) -> None:
    """callback(ImageSaveParams) after each picture of a job is written (params.filename is its path)."""
    _register("image_saved", callback)


def on_cfg_denoiser(callback) -> None:
    """callback(CFGDenoiserParams) before each UNet call of every job (see CFGDenoiserParams)."""
    _register("cfg_denoiser", callback)


def on_infotext_pasted(callback) -> None:
    """callback(infotext, params: dict) when an infotext is read for pasting (paste button, PNG
    Info): add to or change `params`, A1111's field names as keys."""
    _register("infotext_pasted", callback)


def add_setting(key: str, default, label: str, section=("extensions", "Extensions"), choices=None, minimum=None,
                maximum=None, step=None, info: str = "") -> None:
    """A setting in config.json, /sdapi/v1/options and the Settings tab (A1111's
    shared.opts.add_option). `section` is A1111's (id, title) or a title; `choices` a list for a
    dropdown; `minimum`/`maximum`/`step` make a number a slider. Read it in hooks as p.opts.<key>."""
    from modules.settings import Setting

    state = _current("add_setting")
    title = section[1] if isinstance(section, (tuple, list)) else str(section)
    state.settings.append(Setting(str(key), default, str(label), title, tuple(choices) if choices is not None else None,
                                  minimum, maximum, step, info))


def basedir() -> str:
    """The folder of the extension whose scripts are loading (A1111's scripts.basedir())."""
    return str(_current("basedir").path)


def InitImages(images, mask=None):  # noqa: N802 - a class to the caller
    """The init pictures (and inpainting mask) of an img2img job."""
    from modules.generation.runner import InitImages as _InitImages

    return _InitImages(tuple(images), mask)


def sampler_names() -> list[str]:
    return [s.name for s in samplers.SAMPLERS]


def scheduler_names() -> list[str]:
    return [s.label for s in samplers.SCHEDULES]


__all__ = [
    "Script", "AlwaysVisible", "PostprocessImageArgs", "Processing", "StableDiffusionProcessing", "StableDiffusionProcessingTxt2Img",
    "StableDiffusionProcessingImg2Img", "Processed", "process_images", "on_app_started", "on_ui_tabs", "on_ui_settings", "add_setting",
    "on_before_image_saved", "on_image_saved", "on_cfg_denoiser", "on_infotext_pasted", "ImageSaveParams", "CFGDenoiserParams", "basedir",

    "samplers", "tiles", "flatten_image", "FACE_RESTORERS", "MASKED_CONTENT", "MAX_SEED", "RNG_SOURCES", "GenerationParams",
    "Img2ImgParams", "GridLabel", "annotated_grid", "combine_grids", "format_params_line", "ScriptArg", "read_bool", "LARGEST_SEED",
    "SEEDS", "ScriptEnv", "ScriptRequest", "ScriptResult", "counted_seeds", "fixed_seeds", "QueueScript", "ScriptContext", "ScriptStopped", "make_grid",
    "InitImages", "sampler_names", "scheduler_names",
]
