"""img2img's "📎 Interrogate CLIP" and "📦 Interrogate DeepBooru" buttons (A1111's): the picture in
the chosen img2img tab is interrogated as a queue job (modules/jobs/interrogate_task.py) and the
text replaces the prompt. Missing weights, no picture or a failure: a visible message, and the
prompt stays as it was."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gradio as gr
from fastapi.concurrency import run_in_threadpool
from PIL import Image

from modules.jobs.queue import FINISHED, JobStatus, done_future
from modules.ui.common import page_user

if TYPE_CHECKING:
    from modules.jobs.interrogate_task import InterrogateService
    from modules.jobs.queue import JobQueue


@dataclass(frozen=True)
class InterrogateButtons:
    clip: gr.Button
    deepbooru: gr.Button


def build_interrogate_buttons(prefix: str) -> InterrogateButtons:
    with gr.Row(elem_id=f"{prefix}_interrogate_row"):
        clip = gr.Button("📎 Interrogate CLIP", size="sm", elem_id="interrogate")
        deepbooru = gr.Button("📦 Interrogate DeepBooru", size="sm", elem_id="deepbooru")
    return InterrogateButtons(clip, deepbooru)


async def interrogate_to_prompt(queue: "JobQueue", service: "InterrogateService", model: str, picture: Callable[[], Image.Image],
                                user: str = "") -> str:
    """The interrogation text of `picture()`, run as a job; gr.Error with the reason otherwise."""
    try:
        image = await run_in_threadpool(picture)
        job = await run_in_threadpool(service.submit, queue, image, model, user)
    except ValueError as exc:  # no picture, missing weights (naming the download), over the pixel limit
        raise gr.Error(str(exc)) from None
    done = done_future(job)
    while not done.done():
        await asyncio.wait([done], timeout=0.2)
    if job.status not in FINISHED:
        raise gr.Error("The server is stopping: the interrogation was not run.")
    if job.status is JobStatus.FAILED:
        raise gr.Error(job.error or "Interrogation failed.")
    if job.result is None:
        raise gr.Error("The interrogation was interrupted.")
    return job.result


def wire_interrogate(buttons: InterrogateButtons, queue: "JobQueue", service: "InterrogateService", inputs: list,
                     picture_of: Callable[..., Image.Image], prompt: gr.Textbox) -> None:
    """Each button turns the values of `inputs` into a picture with `picture_of(*values)` (a
    ValueError with a sentence when there is none) and puts the result into `prompt`."""
    def handler(model: str):
        async def ask(request: gr.Request, *values):  # gradio fills request
            return await interrogate_to_prompt(queue, service, model, lambda: picture_of(*values), page_user(request))

        return ask

    buttons.clip.click(handler("clip"), inputs, prompt, concurrency_limit=None, api_name=False)
    buttons.deepbooru.click(handler("deepdanbooru"), inputs, prompt, concurrency_limit=None, api_name=False)
