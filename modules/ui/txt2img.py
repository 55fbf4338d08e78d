"""The txt2img tab: A1111's controls, built from GenerationParams' field definitions.

Handlers only translate between widgets and the job queue: they build a GenerationParams
(readable errors become a visible gr.Error), submit a job, mirror its progress into the page,
and show the saved files with their infotext.
"""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from modules.generation import samplers
from modules.generation.params import GenerationParams
from modules.jobs.queue import FINISHED, Job, JobQueue, JobStatus
from modules.jobs.txt2img_task import Txt2ImgService

# Control order on the page and in handler signatures.
FIELDS = ("prompt", "negative_prompt", "sampler_name", "scheduler", "steps", "width", "height", "n_iter", "batch_size", "cfg_scale", "seed")


def _slider(name: str, **overrides: Any) -> gr.Slider:
    meta = GenerationParams.field_meta(name)
    return gr.Slider(
        minimum=meta.get("minimum"), maximum=meta.get("maximum"), step=meta.get("step", 1), value=meta["default"], label=meta["label"],
        elem_id=f"txt2img_{name}", **overrides,
    )


def infotext_html(text: str) -> str:
    return f"<div class='infotext'><p>{html.escape(text).replace(chr(10), '<br>')}</p></div>" if text else ""


@dataclass
class SessionJobs:
    """The unfinished jobs each browser session started, so Interrupt and Skip act on that
    session's jobs only (A1111's buttons stop whoever is running)."""

    _jobs: dict[str, list[Job]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, session: str, job: Job) -> None:
        with self._lock:
            self._prune()
            self._jobs.setdefault(session, []).append(job)

    def unfinished(self, session: str) -> list[Job]:
        with self._lock:
            self._prune()
            return list(self._jobs.get(session, []))

    def _prune(self) -> None:
        for session in list(self._jobs):
            self._jobs[session] = [j for j in self._jobs[session] if j.status not in FINISHED]
            if not self._jobs[session]:
                del self._jobs[session]


@dataclass(frozen=True)
class Txt2ImgControls:
    """The parts of the tab the page fills from the chosen model's hints."""

    guide_box: gr.Group
    guide: gr.Markdown
    examples: gr.Dataset
    by_field: dict[str, Any]  # generation parameter name -> its control


def build_txt2img_tab(queue: JobQueue, service: Txt2ImgService) -> Txt2ImgControls:
    sessions = SessionJobs()
    meta = GenerationParams.field_meta

    with gr.Row(elem_id="txt2img_toprow"):
        with gr.Column(scale=6):
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="txt2img_prompt", placeholder="Prompt\n(Press Ctrl+Enter to generate, Alt+Enter to skip, Esc to interrupt)")
            negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="txt2img_neg_prompt", placeholder="Negative prompt")
            with gr.Group(visible=False, elem_id="model_guide_box") as guide_box:
                guide = gr.Markdown(elem_id="model_guide")
                examples = gr.Dataset(components=[prompt], samples=[[""]], label="Example prompts (click to use)", elem_id="model_examples", samples_per_page=12)
        with gr.Column(scale=1, min_width=180):
            generate = gr.Button("Generate", variant="primary", elem_id="txt2img_generate")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id="txt2img_interrupt", size="sm")
                skip = gr.Button("Skip", elem_id="txt2img_skip", size="sm")

    with gr.Row():
        with gr.Column(scale=1):
            with gr.Row():
                sampler = gr.Dropdown([s.name for s in samplers.SAMPLERS], value=meta("sampler_name")["default"], label=meta("sampler_name")["label"], elem_id="txt2img_sampling")
                schedule = gr.Dropdown([s.label for s in samplers.SCHEDULES], value=meta("scheduler")["default"], label=meta("scheduler")["label"], elem_id="txt2img_scheduler")
            steps = _slider("steps")
            with gr.Row():
                with gr.Column(scale=4):
                    width = _slider("width")
                    height = _slider("height")
                swap = gr.Button("⇅", elem_id="txt2img_res_switch_btn", size="sm", scale=0, min_width=40)
                with gr.Column(scale=2):
                    n_iter = _slider("n_iter")
                    batch_size = _slider("batch_size")
            cfg = _slider("cfg_scale")
            with gr.Row():
                seed = gr.Number(label=meta("seed")["label"], value=meta("seed")["default"], precision=0, elem_id="txt2img_seed", scale=4)
                random_seed = gr.Button("🎲", elem_id="txt2img_random_seed", size="sm", scale=0, min_width=40)
                reuse_seed = gr.Button("♻️", elem_id="txt2img_reuse_seed", size="sm", scale=0, min_width=40)
        with gr.Column(scale=1):
            gallery = gr.Gallery(label="Output", columns=4, height=520, elem_id="txt2img_gallery", format="png", interactive=False)
            info = gr.HTML(elem_id="txt2img_html_info")
            status = gr.HTML(elem_id="txt2img_html_log")

    shown_seeds = gr.State([])  # per gallery entry, so ♻️ reuses the selected image's seed
    selected = gr.State(0)
    infotexts = gr.State([])
    inputs = [prompt, negative, sampler, schedule, steps, width, height, n_iter, batch_size, cfg, seed]

    def run(prompt, negative_prompt, sampler_name, scheduler, steps, width, height, n_iter, batch_size, cfg_scale, seed, request: gr.Request, progress=gr.Progress()):
        values = (prompt, negative_prompt, sampler_name, scheduler, steps, width, height, n_iter, batch_size, cfg_scale, seed)
        try:
            params = GenerationParams.create(**dict(zip(FIELDS, values)))
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        job = queue.submit("txt2img", lambda j: service.run(j, params))
        sessions.add(request.session_hash or "", job)
        while not job.wait(0.2):
            if job.status is JobStatus.QUEUED:
                progress(0, desc=f"Waiting in queue ({queue.pending_count()} job(s) queued)")
            elif job.progress.steps:
                p = job.progress
                progress(p.fraction, desc=p.text())
        if job.status is JobStatus.FAILED:
            raise gr.Error(job.error or "Generation failed")
        result = job.result
        if result is None:  # cancelled before it started
            return [], "", "Interrupted before start.", [], 0, []
        files = [str(p) for p in result.paths] if result.paths else result.images
        shown_infotexts, seeds = list(result.infotexts), list(result.seeds)
        if result.grid_path is not None:  # the grid comes first, standing for the first image
            files = [str(result.grid_path), *files]
            shown_infotexts, seeds = [result.infotexts[0], *shown_infotexts], [result.seeds[0], *seeds]
        note = "Interrupted. " if job.status is JobStatus.INTERRUPTED else ""
        log = f"<p>{note}{len(result.images)} image(s), time taken: {job.run_seconds or 0:.1f}s. Saved to {html.escape(str(result.paths[0].parent)) if result.paths else 'nowhere (saving off)'}.</p>"
        return files, infotext_html(shown_infotexts[0] if shown_infotexts else ""), log, seeds, 0, shown_infotexts

    def interrupt_own(request: gr.Request) -> None:
        """Stop this session's running job and drop its queued ones."""
        for job in sessions.unfinished(request.session_hash or ""):
            queue.interrupt(job.id)

    def skip_own(request: gr.Request) -> None:
        for job in sessions.unfinished(request.session_hash or ""):
            queue.skip(job.id)  # only the running one has a batch to skip

    def show_selected(texts: list[str], evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else 0
        return (infotext_html(texts[index]) if 0 <= index < len(texts) else ""), index

    def reuse(seeds: list[int], index: int, current):
        return seeds[index] if 0 <= index < len(seeds) else current

    outputs = [gallery, info, status, shown_seeds, selected, infotexts]
    generate.click(run, inputs, outputs, concurrency_limit=None, api_name="txt2img")
    interrupt.click(interrupt_own, None, None, queue=False, api_name=False)
    skip.click(skip_own, None, None, queue=False, api_name=False)
    swap.click(lambda w, h: (h, w), [width, height], [width, height], queue=False, api_name=False)
    random_seed.click(lambda: -1, None, seed, queue=False, api_name=False)
    reuse_seed.click(reuse, [shown_seeds, selected, seed], seed, queue=False, api_name=False)
    gallery.select(show_selected, infotexts, [info, selected], queue=False, api_name=False)
    examples.click(lambda sample: sample[0], examples, prompt, queue=False, api_name=False)
    by_field = {"sampler_name": sampler, "scheduler": schedule, "steps": steps, "width": width, "height": height, "cfg_scale": cfg}
    return Txt2ImgControls(guide_box, guide, examples, by_field)
