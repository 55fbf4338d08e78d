"""A1111-style scripts: the `Script` base class extension authors subclass, how its ui()
components become A1111's /script-info arguments, and the adapter that runs a selectable one
(`run(p, *args)`) as a queue script, each process_images(p) being one queued job."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from modules.scripts.args import ScriptArg
from modules.scripts.base import Script as QueueScript
from modules.scripts.base import ScriptEnv, ScriptRequest, ScriptResult

if TYPE_CHECKING:
    from modules.extensions.processing import Processed, Processing
    from modules.scripts.context import ScriptContext

log = logging.getLogger(__name__)


class _AlwaysVisible:
    """show()'s answer for a script that is always on (A1111's scripts.AlwaysVisible)."""

    def __repr__(self) -> str:
        return "AlwaysVisible"


AlwaysVisible = _AlwaysVisible()


class Script:
    """Base class of an A1111-style script. Override `title` and `show`, `ui` for the controls,
    and the hooks you need; each hook gets `p` (modules.extensions.processing.Processing) and
    the values of the components `ui` returned, in that order. The loader sets `filename` and
    `extension` (the folder name)."""

    filename: str = ""
    extension: str = ""

    def title(self) -> str:
        raise NotImplementedError

    def show(self, is_img2img: bool):
        """True: in the Script menu of that tab; AlwaysVisible: always on; False: not on that tab."""
        return True

    def ui(self, is_img2img: bool) -> list:
        """The script's gradio components; their values are the hooks' `*args`."""
        return []

    def run(self, p: "Processing", *args: Any) -> "Processed | None":
        """A selectable script's work: call process_images(p) as often as needed and return a Processed."""
        raise NotImplementedError

    def before_process(self, p: "Processing", *args: Any) -> None:
        """Before anything: the parameters may still change (prompt, steps, size, ...)."""

    def process(self, p: "Processing", *args: Any) -> None:
        """After all_prompts and all_seeds are set, before the first batch."""

    def before_process_batch(self, p: "Processing", *args: Any, **kwargs: Any) -> None:
        """Before a batch (kwargs: batch_number, prompts, seeds, subseeds)."""

    def process_batch(self, p: "Processing", *args: Any, **kwargs: Any) -> None:
        """Before a batch's conditioning is made: changing p.prompts changes what is drawn."""

    def postprocess_batch(self, p: "Processing", *args: Any, **kwargs: Any) -> None:
        """After a batch is decoded (kwargs: images, a float tensor [B, 3, H, W] in 0..1 that may
        be changed in place, and batch_number)."""

    def postprocess_image(self, p: "Processing", pp, *args: Any) -> None:
        """Each picture before it is saved; set pp.image to replace it."""

    def postprocess(self, p: "Processing", processed: "Processed", *args: Any) -> None:
        """After the job: `processed` holds its pictures and infotexts."""


HOOKS = ("before_process", "process", "before_process_batch", "process_batch", "postprocess_batch", "postprocess_image", "postprocess")


def script_title(script: Script) -> str:
    return str(script.title())


def shows(script: Script, img2img: bool):
    """show()'s answer, or False when show() raises (logged)."""
    try:
        return script.show(img2img)
    except Exception:
        log.exception("Extension '%s': %s.show failed", script.extension, type(script).__name__)
        return False


def _choice_values(component) -> tuple:
    out = []
    for choice in getattr(component, "choices", None) or ():
        out.append(choice[1] if isinstance(choice, (tuple, list)) and len(choice) == 2 else choice)
    return tuple(out)


def component_arg(component, index: int) -> ScriptArg:
    """A ui() component as a ScriptArg: its label, default, range and choices (A1111's script-info)."""
    kind_name = type(component).__name__
    label = getattr(component, "label", None) or f"arg{index}"
    value = getattr(component, "value", None)
    name = getattr(component, "elem_id", None) or f"arg{index}"
    choices = _choice_values(component)
    common = {"name": name, "label": label, "info": getattr(component, "info", None) or "", "visible": getattr(component, "visible", True) is not False}
    if kind_name == "Slider":
        step = getattr(component, "step", None)
        return ScriptArg(kind="slider", default=value, minimum=component.minimum, maximum=component.maximum, step=step, **common)
    if kind_name == "Checkbox":
        return ScriptArg(kind="checkbox", default=bool(value), **common)
    if kind_name in ("Dropdown", "Radio", "CheckboxGroup"):
        multiple = kind_name == "CheckboxGroup" or getattr(component, "multiselect", False)
        if multiple:
            return ScriptArg(kind="multiselect", default=list(value or []), choices=choices, **common)
        if getattr(component, "type", "value") == "index":
            default = choices.index(value) if value in choices else (value if isinstance(value, int) else 0)
            return ScriptArg(kind="index", default=default, choices=choices, **common)
        return ScriptArg(kind="choice", default=value, choices=choices, **common)
    if kind_name == "Number":
        whole = getattr(component, "precision", None) == 0
        return ScriptArg(kind="int" if whole else "number", default=value if value is not None else 0, **common)
    if kind_name == "File":
        return ScriptArg(kind="file", default=None, **common)
    if kind_name == "Textbox":
        return ScriptArg(kind="textarea" if (getattr(component, "lines", 1) or 1) > 1 else "text", default=value or "", **common)
    return ScriptArg(kind="text", default=value, **common)


def ui_components(script: Script, img2img: bool) -> list:
    """The components ui() returns, made in a page of their own that is never shown (layout
    blocks such as gr.Accordion need one); [] when it returns None. That page is detached from
    any page being built (the Script menu asks while the real page is made): a gr.Blocks made
    inside another one renders into it."""
    import gradio as gr
    from gradio.context import Context, get_render_context, set_render_context

    outer, root = get_render_context(), Context.root_block
    set_render_context(None)
    Context.root_block = None
    try:
        with gr.Blocks():
            made = script.ui(img2img)
    finally:
        set_render_context(outer)
        Context.root_block = root
    return list(made or [])


def ui_args(script: Script, img2img: bool) -> list[ScriptArg]:
    """The script's arguments as its ui() describes them, worked out once per tab."""
    cache = script.__dict__.setdefault("_ui_args", {})
    if img2img not in cache:
        cache[img2img] = [component_arg(c, i) for i, c in enumerate(ui_components(script, img2img))]
    return cache[img2img]


class SelectableScript(QueueScript):
    """A selectable A1111-style script in the Script menu and script_name: its ui() becomes the
    arguments, and its run(p, *args) runs on the script thread, each process_images(p) a job."""

    def __init__(self, script: Script, txt2img: bool, img2img: bool):
        self.script, self.extension = script, script.extension
        self.title = script_title(script)
        self.txt2img, self.img2img = txt2img, img2img

    def args(self, env: ScriptEnv, img2img: bool) -> list[ScriptArg]:
        return ui_args(self.script, img2img)  # worked out at start (LoadedExtensions.describe_scripts)

    def prepare(self, request: ScriptRequest, args: dict[str, Any], env: ScriptEnv) -> Callable[["ScriptContext"], ScriptResult]:
        values = list(args.values())

        def run(context: "ScriptContext") -> ScriptResult:
            from modules.extensions.processing import Processed, processing_for

            p = processing_for(request.params, request.init)
            p.script_args = tuple(values)
            result = ScriptResult(request.params)

            def process(p_now) -> Processed:
                params = p_now.params(request.params, env.hires_upscalers())
                init = request.init
                if p_now.init_images is not None and request.init is not None:
                    from modules.generation.runner import InitImages

                    init = InitImages(tuple(p_now.init_images), p_now.image_mask)
                job = context.run(params, init=init)
                if job is None:
                    return Processed(p_now, [], [], [])
                return Processed(p_now, list(job.images), list(job.infotexts), list(job.seeds), list(getattr(job, "subseeds", [])))

            p._run = process
            processed = self.script.run(p, *values)
            if processed is None:
                return result
            for index, image in enumerate(processed.images):
                text = processed.infotexts[index] if index < len(processed.infotexts) else ""
                seed = processed.all_seeds[index] if index < len(processed.all_seeds) else processed.seed
                result.add_picture(image, text, request.params, seed, None)
            return result

        return run
