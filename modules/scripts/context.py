"""What a running script may do: queue child jobs in its user's lane and wait for them, run
a piece of work on the worker, save grids and pictures, report progress. It runs in its own
thread, never on the queue's worker, so waiting for its own jobs cannot block them."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from modules.jobs.queue import FINISHED, Job, JobStatus, login_of

if TYPE_CHECKING:
    from PIL import Image

    from modules.generation.params import GenerationParams
    from modules.generation.runner import InitImages
    from modules.jobs.generation_task import GenerationResult, GenerationService
    from modules.jobs.queue import JobQueue
    from modules.scripts.base import ScriptEnv, ScriptRequest

T = TypeVar("T")
_SAME: Any = object()  # "the request's" for submit's keyword arguments


class ScriptStopped(Exception):
    """The user interrupted the run: start nothing more and return what is finished."""


class ScriptContext:
    """One run's access to the queue and the outputs. `on_submit` sees each child job (the page
    adds them to its session so that Interrupt and Skip reach them)."""

    def __init__(self, request: "ScriptRequest", env: "ScriptEnv", queue: "JobQueue", service: "GenerationService", user: str = "",
                 on_submit: Callable[[Job], None] | None = None):
        self.request, self.env = request, env
        self.queue, self.service, self.user = queue, service, user
        self._on_submit = on_submit
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._children: list[Job] = []
        self.done, self.total, self.text = 0, 0, ""
        self.server_stopping = False  # the queue stopped under the run: its answer says so

    # ------------------------------------------------------------------ jobs

    def submit(self, params: "GenerationParams", *, init: "InitImages | None" = _SAME, checkpoint: str | None = _SAME,
               vae: str | None = _SAME, controlnet: Sequence = _SAME, grid: bool = False, save: bool | None = _SAME) -> Job:
        """Queue a child job: the very task a single txt2img (no init) or img2img (init) request
        runs. Unset keywords take the request's. A job whose pictures are saved is recorded,
        so it still makes them after a restart (the run's grid is not made then); one whose
        pictures only feed the script (save=False: SD upscale's tiles) is not. Its params are
        checked as a request's are (the limit_* settings too): ValueError when they fail."""
        if self._stop.is_set():
            raise ScriptStopped()
        from modules.jobs.generation_task import img2img_payload, txt2img_payload

        params = self.env.check_job(params)
        request, service = self.request, self.service
        init = request.init if init is _SAME else init
        checkpoint = request.checkpoint if checkpoint is _SAME else checkpoint
        vae = request.vae if vae is _SAME else vae
        units = tuple(request.controlnet if controlnet is _SAME else controlnet)
        save = request.save if save is _SAME else save
        alwayson = request.alwayson
        if init is None:
            task = lambda j: service.run_txt2img(j, params, save=save, checkpoint=checkpoint, vae=vae, controlnet=units, grid=grid,  # noqa: E731
                                                 alwayson=alwayson)
            kind, payload = "txt2img", txt2img_payload(params, save, checkpoint, vae, units, grid, alwayson)
        else:
            task = lambda j: service.run_img2img(j, params, init, save=save, checkpoint=checkpoint, vae=vae, controlnet=units,  # noqa: E731
                                                 grid=grid, alwayson=alwayson)
            kind, payload = "img2img", img2img_payload(params, init, save, checkpoint, vae, units, grid, alwayson)
        job = self.queue.submit(kind, task, user=self.user, payload=payload, record=save is not False)
        with self._lock:
            self._children.append(job)
        if self._on_submit is not None:
            self._on_submit(job)
        if self._stop.is_set():  # interrupted while it was being queued
            self.queue.interrupt(job.id)
        return job

    def wait(self, job: Job) -> "GenerationResult | None":
        """The job's result once it ends; None when it was cancelled before running. Raises
        ScriptStopped when the user interrupted (the partial result stays in job.result) and
        ValueError with the job's message when it failed."""
        self._wait(job)
        if job.status not in FINISHED:  # the server is stopping: the job stays queued for the next start
            self.server_stopping = True
            self.stop()
            raise ScriptStopped()
        if job.status is JobStatus.FAILED:
            raise ValueError(job.error or f"{job.id} failed")
        if job.status is JobStatus.INTERRUPTED or job.status is JobStatus.CANCELLED:
            self.stop()
        return job.result

    def run(self, params: "GenerationParams", **kwargs: Any) -> "GenerationResult | None":
        """Submit and wait; ScriptStopped when interrupted (see `wait`)."""
        job = self.submit(params, **kwargs)
        result = self.wait(job)
        if self.stopped:
            raise ScriptStopped()
        return result

    def run_all(self, items: Sequence[dict]) -> list["GenerationResult | None"]:
        """Queue every item ({"params": ..., and submit's keywords}) at once, back to back in the
        lane, then wait for each in order. After an interrupt the rest are cancelled and come
        back as None (the interrupted one as its partial result); check `stopped`."""
        jobs: list[Job | None] = []
        for item in items:
            if self.stopped:
                jobs.append(None)
                continue
            item = dict(item)
            jobs.append(self.submit(item.pop("params"), **item))
        results: list[GenerationResult | None] = []
        for index, job in enumerate(jobs):
            if job is None:
                results.append(None)
                continue
            self.progress(index, len(jobs))
            try:
                results.append(self.wait(job))
            except ScriptStopped:
                results.append(job.result)
            except ValueError:
                self.stop()
                raise
        self.progress(len(jobs), len(jobs))
        return results

    def on_worker(self, label: str, fn: Callable[[], T]) -> T:
        """Run `fn` as a job in the user's lane (work that needs the GPU, such as an upscaler
        model) and return what it returns; its exception comes back here."""
        if self._stop.is_set():
            raise ScriptStopped()
        box: dict[str, Any] = {}

        def task(_job: Job) -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # re-raised in the script's thread, with its message
                box["error"] = exc

        job = self.queue.submit(label, task, user=self.user)
        with self._lock:
            self._children.append(job)
        if self._on_submit is not None:
            self._on_submit(job)
        self._wait(job)
        if "error" in box:
            raise box["error"]
        if job.status is not JobStatus.DONE or "value" not in box:
            self.stop()
            raise ScriptStopped()
        return box["value"]

    @staticmethod
    def _wait(job: Job) -> None:
        """Until the job ends, or the queue stops with it unfinished (its done-callbacks run
        then, while `finished` stays unset)."""
        woken = threading.Event()
        job.add_done_callback(woken.set)
        woken.wait()

    # ------------------------------------------------------------------ control

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Interrupt: cancel the children still waiting and stop the running one."""
        self._stop.set()
        with self._lock:
            children = list(self._children)
        for job in reversed(children):  # the waiting ones first, so none of them starts meanwhile
            if job.status not in FINISHED:
                self.queue.interrupt(job.id)

    @property
    def current(self) -> Job | None:
        """The child job running now, if any."""
        with self._lock:
            children = list(self._children)
        return next((j for j in children if j.status is JobStatus.RUNNING), None)

    @property
    def children(self) -> list[Job]:
        with self._lock:
            return list(self._children)

    def progress(self, done: int, total: int, text: str = "") -> None:
        self.done, self.total, self.text = done, total, text

    # ------------------------------------------------------------------ outputs

    def _writers(self):
        return self.service.writers["img2img" if self.request.img2img else "txt2img"]

    def save_grid(self, image: "Image.Image", infotext: str, params: "GenerationParams | None" = None) -> Path | None:
        """Save a grid to the tab's grids folder when grid_save (or the API's save_images) says so."""
        settings = self.service.settings
        if not (settings.grid_save if self.request.save is None else self.request.save):
            return None
        writer = self._writers()[1]
        values = self._values(params or self.request.params, None)
        return writer.save_grid([image], infotext=infotext, rows=1, only_if_multiple=False, values=values)

    def save_image(self, image: "Image.Image", infotext: str, params: "GenerationParams", seed: int) -> Path | None:
        """Save a picture the script made itself to the tab's images folder, when samples_save
        (or the API's save_images) says so."""
        settings = self.service.settings
        if not (settings.samples_save if self.request.save is None else self.request.save):
            return None
        return self._writers()[0].save_image(image, infotext=infotext, values=self._values(params, seed))

    def _values(self, params: "GenerationParams", seed: int | None):
        from modules.outputs.naming import NameValues

        return NameValues(seed=seed if seed is not None else (params.seed if params.seed >= 0 else None), prompt=params.prompt,
                          negative_prompt=params.negative_prompt, steps=params.steps, cfg_scale=params.cfg_scale, width=params.width,
                          height=params.height, sampler=params.sampler_name, scheduler=params.scheduler, styles=tuple(params.styles),
                          user=login_of(self.user))

    def infotext(self, params: "GenerationParams", seed: int, extras: Sequence[tuple[str, Any]] = ()) -> str:
        """The infotext a picture made with `params` gets on the checkpoint in use (for pictures a
        script makes beyond its jobs, e.g. SD upscale's stitched result); `extras` come before Version."""
        active = self.service.models.active
        if active is None:
            raise ValueError("No model is loaded.")
        styled, _ = self.service.styled(params)
        return self.service.infotext(styled, seed, active, extras=list(extras))
