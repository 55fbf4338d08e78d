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
from modules.scripts.args import ScriptArg, read_bool
from modules.scripts.base import LARGEST_SEED, SEEDS, ScriptEnv, ScriptRequest, ScriptResult, counted_seeds, fixed_seeds
from modules.scripts.base import Script as QueueScript
from modules.scripts.context import ScriptContext


def InitImages(images, mask=None):  # noqa: N802 - a class to the caller
    """The init pictures (and inpainting mask) of an img2img job."""
    from modules.generation.runner import InitImages as _InitImages

    return _InitImages(tuple(images), mask)


def sampler_names() -> list[str]:
    return [s.name for s in samplers.SAMPLERS]


def scheduler_names() -> list[str]:
    return [s.label for s in samplers.SCHEDULES]


__all__ = [
    "samplers", "tiles", "flatten_image", "FACE_RESTORERS", "MASKED_CONTENT", "MAX_SEED", "RNG_SOURCES", "GenerationParams",
    "Img2ImgParams", "GridLabel", "annotated_grid", "combine_grids", "format_params_line", "ScriptArg", "read_bool", "LARGEST_SEED",
    "SEEDS", "ScriptEnv", "ScriptRequest", "ScriptResult", "counted_seeds", "fixed_seeds", "QueueScript", "ScriptContext",
    "InitImages", "sampler_names", "scheduler_names",
]
