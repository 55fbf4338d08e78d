"""The Extras tab: A1111's single image, batch upload and batch-from-folder upscaling, with
"Scale by" / "Scale to", two upscalers and the GFPGAN / CodeFormer face restoration sliders. The handler turns the widgets into an ExtrasParams
and queues an "extras" job, so upscaling takes its turn with generation on the one worker."""

from __future__ import annotations

import asyncio
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr
from fastapi.concurrency import run_in_threadpool

from modules.generation.image_input import read_image
from modules.generation.upscaling import ExtrasParams, target_size
from modules.jobs.extras_task import KIND, ExtrasResult, ExtrasService
from modules.jobs.queue import FINISHED, Job, JobQueue, JobStatus, done_future
from modules.network import ServerAccess
from modules.outputs.infotext import read_infotext
from modules.ui.common import UPLOAD_SOURCES, OutputPanel, page_user
from modules.ui.output_buttons import build_output_buttons
from modules.ui.img2img import guard_upload

PREFIX = "extras"
MODES = ("Single Image", "Batch Process", "Batch from Directory")
FOLDER_FEATURE = "Extras \"Batch from Directory\" (folders on the server)"


@dataclass(frozen=True)
class ExtrasControls:
    image: gr.Image  # the single image: "Send to extras" from other tabs fills it
    gallery: gr.Gallery
    info: gr.HTML
    log: gr.HTML
    generate: gr.Button
    inputs: list  # the handler's inputs, in order
    run: Callable[..., Any]  # the Generate handler: run(request, progress, *values of `inputs`)
    output: Any = None  # the result's OutputPanel (📂, Save, Copy infotext, Send to img2img / inpaint), wired by the page


def prepare(service: ExtrasService, mode: int, resize_tab: int, image, files, input_dir: str, output_dir: str, show_results: bool,
            resize, width, height, crop, upscaler_1, upscaler_2, visibility, gfpgan_visibility=0.0, codeformer_visibility=0.0,
            codeformer_weight=0.0, access: ServerAccess | None = None, max_pixels: int | None = None) -> tuple[Callable[[Job], ExtrasResult], list[str]]:
    """The job's task for the chosen sub-tab, and notes on uploads that were skipped; a readable
    ValueError when something is missing or out of range, or when `access` refuses the folder batch."""
    params = service.params(
        resize_mode=resize_tab, upscaling_resize=resize, upscaling_resize_w=_whole(width), upscaling_resize_h=_whole(height),
        upscaling_crop=crop, upscaler_1=upscaler_1, upscaler_2=upscaler_2, extras_upscaler_2_visibility=visibility,
        gfpgan_visibility=gfpgan_visibility, codeformer_visibility=codeformer_visibility, codeformer_weight=codeformer_weight,
    )
    notes: list[str] = []
    if mode == 2:
        if access:
            access.require_server_folders(FOLDER_FEATURE)
        if not (input_dir or "").strip():
            raise ValueError("Enter the input directory of the batch.")
        return (lambda j: service.run_folder(j, input_dir, output_dir, params, show_results=bool(show_results))), notes
    if mode == 1:
        if not files:
            raise ValueError("Upload images to the Batch Process tab first.")
        entries = []
        for item in files:
            path = Path(getattr(item, "name", item))
            try:
                entries.append((read_image(str(path), path.name, max_pixels), path.name))
            except ValueError as exc:  # not an image, or one over the pixel limit (the message says which limit)
                notes.append(f"Skipped {path.name}: " + ("not an image." if "not an image that can be read" in str(exc) else str(exc)))
        if not entries:
            raise ValueError("None of the uploaded files is an image that can be read.")
    else:
        if image is None:
            raise ValueError("Upload an image to the Single Image tab first (or paste or drop one).")
        entries = [(image, None)]
    for picture, _ in entries:
        target_size(picture.size, params)  # refused now rather than after waiting in the queue
    return (lambda j: service.run(j, entries, params)), notes


def _whole(value) -> int | None:
    return None if value is None else int(round(float(value)))


def build_extras_tab(queue: JobQueue, service: ExtrasService | Callable[[], ExtrasService], access: ServerAccess | None = None,
                     max_pixels: Callable[[], int | None] = lambda: None) -> ExtrasControls:
    """Build the tab inside the current Blocks. `service` may be a getter, so the page can hand
    over the app's current service (the Settings tab may reconfigure it). `access` decides
    whether "Batch from Directory" may use folders on the server (None: it may); `max_pixels`
    gives the largest upload accepted (the limit_image_megapixels setting)."""
    current: Callable[[], ExtrasService] = service if callable(service) else (lambda: service)  # type: ignore[assignment]
    names = list(current().upscalers.names)
    meta = ExtrasParams.field_meta
    mode = gr.State(0)
    resize_tab = gr.State(0)  # 0: Scale by, 1: Scale to

    with gr.Row():
        with gr.Column(scale=1):
            with gr.Tabs(elem_id="mode_extras"):
                with gr.Tab(MODES[0], elem_id="extras_single_tab") as single_tab:
                    image = gr.Image(label="Source", type="pil", format="png", sources=UPLOAD_SOURCES, image_mode="RGBA", height=400, elem_id="extras_image")
                with gr.Tab(MODES[1], elem_id="extras_batch_process_tab") as batch_tab:
                    files = gr.File(label="Batch Process", file_count="multiple", elem_id="extras_image_batch")
                with gr.Tab(MODES[2], elem_id="extras_batch_directory_tab") as folder_tab:
                    refusal = access.refusal(FOLDER_FEATURE) if access else None
                    if refusal:
                        gr.Markdown(f"**{refusal}**", elem_id="extras_batch_directory_refused")
                    input_dir = gr.Textbox(label="Input directory", placeholder="A directory on the same machine where the server is running.",
                                           elem_id="extras_batch_input_dir")
                    output_dir = gr.Textbox(label="Output directory", placeholder="Leave blank to save images to the default path.",
                                            elem_id="extras_batch_output_dir")
                    show_results = gr.Checkbox(label="Show result images", value=True, elem_id="extras_show_extras_results")
            generate = gr.Button("Generate", variant="primary", elem_id="extras_generate")
            with gr.Tabs(elem_id="extras_resize_mode"):
                with gr.Tab("Scale by", elem_id="extras_scale_by_tab") as by_tab:
                    scale = meta("upscaling_resize")
                    resize = gr.Slider(scale["minimum"], scale["maximum"], value=4, step=scale["step"], label=scale["label"],  # A1111's UI default is 4
                                       elem_id="extras_upscaling_resize")
                with gr.Tab("Scale to", elem_id="extras_scale_to_tab") as to_tab:
                    with gr.Row():
                        with gr.Column(scale=4):
                            width = gr.Number(label="Width", value=meta("upscaling_resize_w")["default"], precision=0,
                                              elem_id="extras_upscaling_resize_w")
                            height = gr.Number(label="Height", value=meta("upscaling_resize_h")["default"], precision=0,
                                               elem_id="extras_upscaling_resize_h")
                        swap = gr.Button("⇅", elem_id="extras_upscaling_res_switch_btn", size="sm", scale=0, min_width=40)
                        crop = gr.Checkbox(label="Crop to fit", value=True, elem_id="extras_upscaling_crop")
            with gr.Row():
                upscaler_1 = gr.Dropdown(names, value=names[0], label="Upscaler 1", elem_id="extras_upscaler_1")
            with gr.Row():
                upscaler_2 = gr.Dropdown(names, value=names[0], label="Upscaler 2", elem_id="extras_upscaler_2")
                visibility = gr.Slider(0.0, 1.0, value=0.0, step=meta("extras_upscaler_2_visibility")["step"], label="Upscaler 2 visibility",
                                       elem_id="extras_upscaler_2_visibility")
            faces = _face_sliders(meta)
        with gr.Column(scale=1):
            gallery = gr.Gallery(label="Result", columns=4, height=520, elem_id="extras_gallery", format="png", interactive=False)
            buttons = build_output_buttons(PREFIX, gallery, targets=("img2img", "inpaint"))
            info = gr.HTML(elem_id="extras_html_info")
            log = gr.HTML(elem_id="extras_html_log")
    panel = OutputPanel(gallery, info, log, gr.State([]), gr.State(0), gr.State([]), gr.State([]), buttons)

    guard_upload(image, "Source", max_pixels)
    inputs = [mode, resize_tab, image, files, input_dir, output_dir, show_results, resize, width, height, crop, upscaler_1, upscaler_2, visibility,
              *faces]

    async def run(request: gr.Request, progress=gr.Progress(), *values):  # gradio fills request and progress
        svc = current()
        try:
            task, notes = await run_in_threadpool(prepare, svc, *values, access=access, max_pixels=max_pixels())
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        job = await run_in_threadpool(queue.submit, KIND, task, user=page_user(request))
        done = done_future(job)
        while not done.done():
            if job.status is JobStatus.QUEUED:
                position = queue.position(job)
                progress(0, desc=f"In queue: {position} of {queue.pending_count()}" if position else "Starting…")
            elif job.progress.batch_count > 1:
                p = job.progress
                progress(p.fraction, desc=f"Image {p.batch_index + 1}/{p.batch_count}")
            await asyncio.wait([done], timeout=0.2)
        if job.status not in FINISHED:
            raise gr.Error("The server is stopping: your job was not run.")
        if job.status is JobStatus.FAILED:
            raise gr.Error(job.error or "Extras failed")
        shown = _outputs(job, svc, notes)
        job.result = None  # shown: the queue keeps its last finished jobs, it need not keep their pictures
        return shown

    for index, tab in enumerate((single_tab, batch_tab, folder_tab)):
        tab.select(lambda i=index: i, None, mode, queue=False, api_name=False)
    by_tab.select(lambda: 0, None, resize_tab, queue=False, api_name=False)
    to_tab.select(lambda: 1, None, resize_tab, queue=False, api_name=False)
    swap.click(lambda w, h: (h, w), [width, height], [width, height], queue=False, api_name=False)
    async def run_for_panel(request: gr.Request, progress=gr.Progress(), *values):  # gradio fills request and progress
        """`run`, plus what the buttons under the result need: each entry's file and the
        generation parameters it carries (those of its source), for Send to and Save."""
        shown, info_html, log_html = await run(request, progress, *values)
        files = [entry if isinstance(entry, str) else None for entry in shown]
        texts = [await run_in_threadpool(read_infotext, entry) or "" for entry in shown]
        return shown, info_html, log_html, texts, files

    generate.click(run_for_panel, inputs, [gallery, info, log, panel.infotexts, panel.files], concurrency_limit=None, api_name=False)
    return ExtrasControls(image, gallery, info, log, generate, inputs, run, panel)


def _face_sliders(meta: Callable[[str], dict]) -> list:
    """A1111's GFPGAN and CodeFormer sections: a visibility each (0 = off) and CodeFormer's weight."""
    sliders = []
    with gr.Accordion("GFPGAN", open=False, elem_id="extras_gfpgan"):
        sliders.append(gr.Slider(0.0, 1.0, value=0.0, step=meta("gfpgan_visibility")["step"], label="Visibility", elem_id="extras_gfpgan_visibility"))
    with gr.Accordion("CodeFormer", open=False, elem_id="extras_codeformer"):
        gr.Markdown("Needs the optional spandrel-extra-arches package; CodeFormer's weights are for non-commercial use only (S-Lab licence).")
        sliders.append(gr.Slider(0.0, 1.0, value=0.0, step=meta("codeformer_visibility")["step"], label="Visibility",
                                 elem_id="extras_codeformer_visibility"))
        sliders.append(gr.Slider(0.0, 1.0, value=0.0, step=meta("codeformer_weight")["step"], label="Weight (0 = maximum effect, 1 = minimum effect)",
                                 elem_id="extras_codeformer_weight"))
    return sliders


def _outputs(job: Job, service: ExtrasService, notes: list[str]) -> tuple[list, str, str]:
    """Gallery entries (the saved files where the page may serve them, else the images), the
    last image's postprocessing text, and a log line saying where the files went."""
    result: ExtrasResult | None = job.result
    if result is None:  # cancelled before it started
        return [], "", "<p>Interrupted before start.</p>"
    home = service.settings.directory.resolve()
    shown: list = []
    for index, image in enumerate(result.images):
        path = result.paths[index] if index < len(result.paths) else None
        shown.append(str(path) if path is not None and path.resolve().is_relative_to(home) else image)
    info = f"<div class='infotext notranslate'><p>{html.escape(result.infotexts[-1])}</p></div>" if result.infotexts else ""
    where = html.escape(str(result.paths[0].parent)) if result.paths else "nowhere"
    stopped = "Interrupted. " if job.status is JobStatus.INTERRUPTED else ""
    lines = "".join(f"<br>{html.escape(n)}" for n in [*notes, *result.notes])
    log = f"<p>{stopped}{result.count} image(s), time taken: {job.run_seconds or 0:.1f}s. Saved to {where}.{lines}</p>"
    return shown, info, log
