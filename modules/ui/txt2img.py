"""The txt2img tab: A1111's controls and its hires fix, built from GenerationParams' fields.

Handlers only translate between widgets and the job queue: they build a GenerationParams
(readable errors become a visible gr.Error), submit a job, mirror its progress into the page,
and show the saved files with their infotext.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr
from fastapi.concurrency import run_in_threadpool

from modules.generation import samplers
from modules.generation.params import HIRES_UPSCALERS, SAME_CHECKPOINT, SAME_SAMPLER, SAME_SCHEDULER, GenerationParams
from modules.jobs.generation_task import GenerationService, txt2img_payload
from modules.jobs.queue import JobQueue
from modules.scripts.base import ScriptRequest
from modules.ui.controlnet import build_controlnet
from modules.ui.forever import wire_forever
from modules.ui.scripts import build_script_menu
from modules.ui.alwayson import build_alwayson
from modules.ui.refiner import build_refiner
from modules.ui.flow_controls import build_flow_controls
from modules.ui.common import (
    JobRunner, PasteTarget, Quicksettings, build_output_panel, build_sampling, build_seed, build_size, build_toprow, slider, wire_paste,
)

if TYPE_CHECKING:
    from modules.extensions.loaded import LoadedExtensions
    from modules.scripts.runner import ScriptRunner

PREFIX = "txt2img"


@dataclass(frozen=True)
class Txt2ImgControls:
    """The parts of the tab the page fills from the chosen model's hints."""

    guide_box: gr.Group
    guide: gr.Markdown
    examples: gr.Dataset
    by_field: dict[str, Any]  # generation parameter name -> its control
    paste: PasteTarget  # where PNG Info's "Send to txt2img" lands
    output: Any = None  # the tab's OutputPanel, whose buttons the page wires (Send to needs every tab)


def build_hires(prefix: str = PREFIX, upscalers: tuple[str, ...] = (), checkpoints: tuple[str, ...] = ()) -> dict[str, Any]:
    """The Hires. fix accordion; returns its controls by parameter name. `upscalers`: the
    model upscalers offered after the latent modes and resamplers; `checkpoints`: the ones the
    hires pass may run on instead (A1111's Hires checkpoint, beside the hires sampler)."""
    meta = GenerationParams.field_meta
    with gr.Accordion("Hires. fix", open=False, elem_id=f"{prefix}_hr"):
        enable = gr.Checkbox(label=meta("enable_hr")["label"], value=False, elem_id=f"{prefix}_enable_hr")
        with gr.Row():
            upscaler = gr.Dropdown([*HIRES_UPSCALERS, *upscalers], value=meta("hr_upscaler")["default"], label=meta("hr_upscaler")["label"], elem_id=f"{prefix}_hr_upscaler")
            steps = slider(prefix, "hr_second_pass_steps")
            denoising = slider(prefix, "denoising_strength")
        with gr.Row():
            scale = slider(prefix, "hr_scale")
            resize_x = slider(prefix, "hr_resize_x")
            resize_y = slider(prefix, "hr_resize_y")
        with gr.Row():
            checkpoint = gr.Dropdown([SAME_CHECKPOINT, *checkpoints], value=SAME_CHECKPOINT, label=meta("hr_checkpoint_name")["label"],
                                     allow_custom_value=True, elem_id=f"{prefix}_hr_checkpoint")
            sampler = gr.Dropdown([SAME_SAMPLER, *(s.name for s in samplers.SAMPLERS)], value=SAME_SAMPLER, label=meta("hr_sampler_name")["label"], elem_id=f"{prefix}_hr_sampler")
            schedule = gr.Dropdown([SAME_SCHEDULER, *(s.label for s in samplers.SCHEDULES)], value=SAME_SCHEDULER, label=meta("hr_scheduler")["label"], elem_id=f"{prefix}_hr_scheduler")
        with gr.Row():
            prompt = gr.Textbox(label=meta("hr_prompt")["label"], lines=2, placeholder="Empty: the same prompt as the first pass", elem_id=f"{prefix}_hr_prompt")
            negative = gr.Textbox(label=meta("hr_negative_prompt")["label"], lines=2, placeholder="Empty: the same negative prompt", elem_id=f"{prefix}_hr_neg_prompt")
        target = gr.HTML(elem_id=f"{prefix}_hr_target")
    return {
        "enable_hr": enable, "hr_upscaler": upscaler, "hr_second_pass_steps": steps, "denoising_strength": denoising, "hr_scale": scale,
        "hr_resize_x": resize_x, "hr_resize_y": resize_y, "hr_sampler_name": sampler, "hr_scheduler": schedule, "hr_prompt": prompt,
        "hr_negative_prompt": negative, "hr_checkpoint_name": checkpoint, "_target": target,
    }


def build_txt2img_tab(queue: JobQueue, service: GenerationService, preview_every: Callable[[], int] = lambda: 0,
                      controlnet: Any = None, scripts: "ScriptRunner | None" = None,
                      extensions: "LoadedExtensions | None" = None, quick: "Quicksettings | None" = None) -> Txt2ImgControls:
    """`controlnet`: the app's ControlNet service, whose units get an accordion (None: no accordion);
    `scripts`: the app's scripts, offered in the Script menu (None: no menu); `extensions`: the
    loaded extensions, whose always-on scripts show under the menu and run with every job."""
    jobs = JobRunner(queue, preview_every)
    top = build_toprow(PREFIX, service, quick)  # quick: the page's checkpoint and VAE menus, which the model cards set
    with top.prompt_column:
        with gr.Group(visible=False, elem_id="model_guide_box") as guide_box:
            guide = gr.Markdown(elem_id="model_guide")
            examples = gr.Dataset(components=[top.prompt], samples=[[""]], label="Example prompts (click to use)", elem_id="model_examples", samples_per_page=12)

    with gr.Row():
        with gr.Column(scale=1):
            sampler, schedule, steps = build_sampling(PREFIX)
            top.wire_counters(service, steps)
            with gr.Row():
                restore = gr.Checkbox(label=GenerationParams.field_meta("restore_faces")["label"], value=False, elem_id=f"{PREFIX}_restore_faces")
                tiling = gr.Checkbox(label=GenerationParams.field_meta("tiling")["label"], value=False, elem_id=f"{PREFIX}_tiling")
            hires = build_hires(upscalers=service.hires_upscalers(), checkpoints=tuple(service.models.titles()))
            refiner = build_refiner(PREFIX, service.models)
            width, height, n_iter, batch_size = build_size(PREFIX)
            cfg = slider(PREFIX, "cfg_scale")
            flow = build_flow_controls(PREFIX)  # Flux dev's Distilled CFG Scale, the flow models' Shift
            seed_row = build_seed(PREFIX)
            cn = build_controlnet(PREFIX, controlnet, queue, width, height, max_pixels=lambda: service.limits.max_pixels)
            menu = build_script_menu(PREFIX, scripts)
            alwayson = build_alwayson(PREFIX, extensions)
        with gr.Column(scale=1):
            panel = build_output_panel(PREFIX)
    seed_row.wire(panel)
    top.networks.wire_output(panel.gallery, panel.selected)  # Extra networks' Replace preview: the selected output
    seed = seed_row.seed

    target = hires.pop("_target")
    fields = {
        "prompt": top.prompt, "negative_prompt": top.negative, "sampler_name": sampler, "scheduler": schedule, "steps": steps,
        "width": width, "height": height, "n_iter": n_iter, "batch_size": batch_size, "cfg_scale": cfg, **flow, "seed": seed,
        **seed_row.fields,
        **hires, **refiner, "styles": top.styles, "restore_faces": restore, "tiling": tiling,
    }
    names = list(fields)
    overrides = gr.State({})  # Clip skip and emphasis read by ↙ from a pasted infotext
    paste_target = PasteTarget(fields, overrides, upscalers=service.hires_upscalers, extras=(seed_row, cn) if cn else (seed_row,),
                               alwayson=alwayson, on_pasted=extensions.callbacks.infotext_pasted if extensions is not None else None,
                               active_model=lambda: service.models.current.title if service.models.current else "")
    wire_paste(top, paste_target)

    async def run(overrides_now: dict, request: gr.Request, progress=gr.Progress(), *values):  # gradio fills request and progress
        try:
            params = GenerationParams.create(service.hires_upscalers(), **dict(zip(names, values)), **{**service.prompt_settings(), **(overrides_now or {})})
            await run_in_threadpool(service.check_limits, params)
            units = cn.units_from(values[len(names):len(names) + len(cn.inputs)]) if cn else []
            if units:
                await run_in_threadpool(cn.check, units)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        checkpoint, vae = service.models.pin(), service.pin_vae()  # selected now, whatever others pick before the job's turn
        title, script_args = menu.args_from(values[len(values) - len(menu.inputs):]) if menu else (None, {})
        at = len(names) + (len(cn.inputs) if cn else 0)
        extension_args = alwayson.args_from(values[at:at + len(alwayson.inputs)])
        if title is not None:
            script_request = ScriptRequest("txt2img", params, checkpoint=checkpoint, vae=vae, controlnet=tuple(units), alwayson=extension_args)
            async for shown in jobs.run_script(scripts, title, script_request, script_args, request, progress):
                yield shown
            return
        task = lambda j: service.run_txt2img(j, params, checkpoint=checkpoint, vae=vae, controlnet=units, alwayson=extension_args)  # noqa: E731
        payload = txt2img_payload(params, checkpoint=checkpoint, vae=vae, controlnet=units, alwayson=extension_args)
        async for shown in jobs.run("txt2img", task, request, progress, payload=payload):
            yield shown

    def upscaled_to(enable, w, h, scale, x, y):
        """A1111's "Upscaled resolution" line under the hires controls."""
        if not enable:
            return ""
        try:
            tw, th = GenerationParams.create(width=w, height=h, hr_scale=scale, hr_resize_x=x, hr_resize_y=y).hires_size()
        except ValueError:
            return ""
        return f"<p>Upscaled resolution: {w}x{h} → <b>{tw}x{th}</b></p>"

    sizing = [hires["enable_hr"], width, height, hires["hr_scale"], hires["hr_resize_x"], hires["hr_resize_y"]]
    for control in sizing:
        control.change(upscaled_to, sizing, target, queue=False, api_name=False)
    generated = top.generate.click(run, [overrides, *fields.values(), *(cn.inputs if cn else []), *alwayson.inputs, *(menu.inputs if menu else [])],
                                   panel.outputs, concurrency_limit=None, api_name="txt2img")
    wire_forever(generated, PREFIX)
    jobs.wire_stop_buttons(top)
    examples.click(lambda sample: sample[0], examples, top.prompt, queue=False, api_name=False)
    by_field = {"sampler_name": sampler, "scheduler": schedule, "steps": steps, "width": width, "height": height, "cfg_scale": cfg}
    return Txt2ImgControls(guide_box, guide, examples, by_field, paste_target, panel)
