"""A1111's "Create embedding" and "Train" sub-tabs of the Train tab (textual inversion).

Controls, labels, defaults and elem ids are A1111's (its modules/ui.py), so users and page
tests find them where they expect. The work is modules/training/embedding_trainer.py's, run as
queue jobs in the session's lane; Interrupt stops this page's training job only. Built inside
the Train tab's `gr.Tabs()` by modules/ui/train.py.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import gradio as gr
from fastapi.concurrency import run_in_threadpool

from modules.jobs.queue import FINISHED, JobStatus, done_future
from modules.training.embedding_trainer import EmbeddingService, TrainOptions
from modules.ui.common import page_user

if TYPE_CHECKING:
    from modules.jobs.queue import Job, JobQueue

REFRESH = "\U0001F504"  # 🔄
POLL_SECONDS = 1.0


def build_embedding_tabs(app) -> None:
    """The two sub-tabs, for webui's App (its queue, models, embeddings and data folder)."""
    service = EmbeddingService.for_app(app)
    queue: "JobQueue" = app.queue
    running: dict[str, "Job"] = {}  # this page's training job per session, for Interrupt

    with gr.Tab(label="Create embedding", id="create_embedding"):
        name = gr.Textbox(label="Name", elem_id="train_new_embedding_name")
        init_text = gr.Textbox(label="Initialization text", value="*", elem_id="train_initialization_text")
        nvpt = gr.Slider(label="Number of vectors per token", minimum=1, maximum=75, step=1, value=1, elem_id="train_nvpt")
        overwrite = gr.Checkbox(value=False, label="Overwrite Old Embedding", elem_id="train_overwrite_old_embedding")
        with gr.Row():
            gr.HTML(value="")
            create = gr.Button(value="Create embedding", variant="primary", elem_id="train_create_embedding")
        create_output = gr.HTML(elem_id="train_create_embedding_output")

    with gr.Tab(label="Train", id="train_embedding_tab"):
        gr.HTML(value="<p style='margin-bottom: 0.7em'>Train an embedding; you must specify a directory with a set of "
                      "1:1 ratio images.</p>")
        with gr.Row():
            embedding = gr.Dropdown(label="Embedding", elem_id="train_embedding", choices=service.names())
            refresh = gr.Button(REFRESH, elem_id="refresh_train_embedding_name", size="sm", scale=0, min_width=40)
        learn_rate = gr.Textbox(label="Embedding Learning rate", placeholder="Embedding Learning rate", value="0.005",
                                elem_id="train_embedding_learn_rate")
        with gr.Row():
            clip_mode = gr.Dropdown(value="disabled", label="Gradient Clipping", choices=["disabled", "value", "norm"],
                                    elem_id="train_clip_grad_mode")
            clip_value = gr.Textbox(placeholder="Gradient clip value", value="0.1", show_label=False, elem_id="train_clip_grad_value")
        with gr.Row():
            batch_size = gr.Number(label="Batch size", value=1, precision=0, elem_id="train_batch_size")
            gradient_step = gr.Number(label="Gradient accumulation steps", value=1, precision=0, elem_id="train_gradient_step")
        data_root = gr.Textbox(label="Dataset directory", placeholder="Path to directory with input images", elem_id="train_dataset_directory")
        log_directory = gr.Textbox(label="Log directory", placeholder="Path to directory where to write outputs", value="textual_inversion",
                                   elem_id="train_log_directory")
        with gr.Row():
            templates = list(service.templates())
            template = gr.Dropdown(label="Prompt template", value="style_filewords.txt" if "style_filewords.txt" in templates else None,
                                   choices=templates, elem_id="train_template_file")
            template_refresh = gr.Button(REFRESH, elem_id="refrsh_train_template_file", size="sm", scale=0, min_width=40)
        width = gr.Slider(minimum=64, maximum=2048, step=8, label="Width", value=512, elem_id="train_training_width")
        height = gr.Slider(minimum=64, maximum=2048, step=8, label="Height", value=512, elem_id="train_training_height")
        varsize = gr.Checkbox(label="Do not resize images", value=False, elem_id="train_varsize")
        steps = gr.Number(label="Max steps", value=100000, precision=0, elem_id="train_steps")
        with gr.Row():
            image_every = gr.Number(label="Save an image to log directory every N steps, 0 to disable", value=500, precision=0,
                                    elem_id="train_create_image_every")
            save_every = gr.Number(label="Save a copy of embedding to log directory every N steps, 0 to disable", value=500,
                                   precision=0, elem_id="train_save_embedding_every")
        shuffle = gr.Checkbox(label="Shuffle tags by ',' when creating prompts.", value=False, elem_id="train_shuffle_tags")
        drop_out = gr.Slider(minimum=0, maximum=1, step=0.1, label="Drop out tags when creating prompts.", value=0,
                             elem_id="train_tag_drop_out")
        sampling = gr.Radio(label="Choose latent sampling method", value="once", choices=["once", "deterministic", "random"],
                            elem_id="train_latent_sampling_method")
        with gr.Row():
            train = gr.Button(value="Train Embedding", variant="primary", elem_id="train_train_embedding")
            interrupt = gr.Button(value="Interrupt", elem_id="train_interrupt_training")
        progress_text = gr.HTML(elem_id="ti_progress")
        preview = gr.Image(label="Preview", interactive=False, elem_id="ti_preview", type="pil")
        outcome = gr.HTML(elem_id="ti_error")

    async def on_create(name_value, init_value, count, overwrite_value, request: gr.Request):
        return await create_clicked(service, queue, name_value, init_value, count, overwrite_value, page_user(request))

    async def on_train(embedding_name, learn_rate_value, clip_grad_mode, clip_grad_value, batch, accumulation, folder, log_folder,
                       template_filename, training_width, training_height, own_size, max_steps, create_image_every,
                       save_embedding_every, shuffle_tags, tag_drop_out, latent_sampling_method, request: gr.Request):
        values = {"embedding_name": embedding_name, "learn_rate": learn_rate_value, "clip_grad_mode": clip_grad_mode,
                  "clip_grad_value": clip_grad_value, "batch_size": batch, "gradient_step": accumulation, "data_root": folder,
                  "log_directory": log_folder, "template_filename": template_filename, "training_width": training_width,
                  "training_height": training_height, "varsize": own_size, "steps": max_steps,
                  "create_image_every": create_image_every, "save_embedding_every": save_embedding_every,
                  "shuffle_tags": shuffle_tags, "tag_drop_out": tag_drop_out, "latent_sampling_method": latent_sampling_method}
        async for update in train_updates(service, queue, values, page_user(request), running):
            yield update

    def on_interrupt(request: gr.Request) -> None:
        job = running.get(page_user(request))
        if job is not None:
            queue.interrupt(job.id)

    create.click(on_create, inputs=[name, init_text, nvpt, overwrite], outputs=[embedding, create_output])
    refresh.click(lambda: gr.update(choices=service.names()), outputs=[embedding])
    template_refresh.click(lambda: gr.update(choices=list(service.templates())), outputs=[template])
    train.click(on_train, inputs=[embedding, learn_rate, clip_mode, clip_value, batch_size, gradient_step, data_root, log_directory,
                                  template, width, height, varsize, steps, image_every, save_every, shuffle, drop_out, sampling],
                outputs=[progress_text, preview, outcome])
    interrupt.click(on_interrupt)


async def create_clicked(service: EmbeddingService, queue: "JobQueue", name: str | None, init_text: str | None, count,
                         overwrite: bool, user: str) -> tuple[dict, str]:
    """Create embedding: (the Embedding menu's update, the message shown under the button)."""
    try:
        job = service.submit_create(queue, name or "", int(count or 1), bool(overwrite), init_text or "", user=user)
    except ValueError as exc:
        return gr.update(), _message(str(exc), error=True)
    await done_future(job)
    if job.status is not JobStatus.DONE:
        return gr.update(), _message(job.error or "The embedding was not created.", error=True)
    return gr.update(choices=service.names(), value=job.result.stem), _message(f"Created: {job.result}")


async def train_updates(service: EmbeddingService, queue: "JobQueue", values: dict, user: str,
                        running: dict[str, "Job"]) -> AsyncIterator[tuple[str, object, str]]:
    """Train Embedding: (progress text, latest preview, outcome) while the job waits and runs,
    then its outcome. `running` keeps the session's job for Interrupt."""
    try:
        options = TrainOptions.from_request({k: v for k, v in values.items() if v is not None})
        job = await run_in_threadpool(service.submit, queue, options, user)
    except ValueError as exc:
        yield "", None, _message(str(exc), error=True)
        return
    running[user] = job
    future = done_future(job)
    try:
        while not future.done():
            yield _progress(queue, job), job.progress.preview, ""
            await asyncio.wait({future}, timeout=POLL_SECONDS)
    finally:
        running.pop(user, None)
    if job.status not in FINISHED:
        yield "", None, _message("The server is stopping: training goes on after the restart.", error=True)
    elif job.status is JobStatus.FAILED or job.result is None:
        yield "", None, _message(job.error or "Training stopped before it began.", error=True)
    else:
        result = job.result
        said = "interrupted" if result.interrupted else "finished"
        yield "", _last_preview(result), _message(f"Training {said} at step {result.step}. Embedding saved to {result.filename}")


def _last_preview(result):
    """The last preview saved to the log folder (the queue lets go of the live one at the end)."""
    if result.last_image is None or not result.last_image.is_file():
        return None
    from PIL import Image

    with Image.open(result.last_image) as image:
        return image.copy()


def _progress(queue: "JobQueue", job: "Job") -> str:
    position = queue.position(job)
    if job.status is JobStatus.QUEUED:
        return f"<p>In queue{f' (position {position})' if position else ''}…</p>"
    return f"<p>Training: {html.escape(job.progress.text())}</p>"


def _message(text: str, error: bool = False) -> str:
    style = " style='color: var(--error-text-color, #c00)'" if error else ""
    return f"<p{style}>{html.escape(text)}</p>"

