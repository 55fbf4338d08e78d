"""The Ray actor behind each GPU: one loaded model on one device, running the generation core.

It runs in its own process, on whichever machine of the cluster holds its GPU, and is driven by
the serving machine's queue (modules/jobs/ray_pool.py) through short calls: `start` hands it a
job's payload, `poll` returns its progress, preview and events and carries interrupt, skip and
preview requests the other way, `saved` answers a save request. Pictures are saved by the
serving machine (its output folders, per-user folders and settings): the worker's writers only
relay each save there (RelayWriter) and get the file's path back, so the job's result, its
recorded progress and the extensions' callbacks see the real paths.

Nothing here imports Ray: the pool wraps this class with `ray.remote`, and the tests can drive
it directly.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modules.jobs.generation_task import GenerationService
    from modules.jobs.queue import Job

log = logging.getLogger(__name__)

SAVE_REPLY_SECONDS = 120.0  # a save the serving machine never answers (it stopped) fails as a full disk would


@dataclass(frozen=True)
class WorkerSetup:
    """How the serving machine asks a worker to start."""

    flags: tuple[str, ...] = ()  # the server's device and folder flags that apply (--no-half, --models-dir...)
    data_dir: str | None = None  # the server's data folder: used when it exists on this machine (same machine, or shared)
    models_dir: str | None = None  # --ray-models-dir: a shared folder of models every machine mounts at this path
    threads: int = 0  # torch threads (0: torch's default); CPU workers get 1 each so two fit two cores
    use_cpu: bool = False  # a CPU worker (a node without GPUs, --ray-cpu-workers)
    path_flags: tuple[tuple[str, str], ...] = ()  # --ckpt-dir, --lora-dir...: used where the path exists on the worker's machine


@dataclass
class _Running:
    """One job on this worker: its queue-side twin, its events for the next poll, pending saves."""

    job: "Job"
    events: list = field(default_factory=list)
    saves: dict[int, tuple[threading.Event, list]] = field(default_factory=dict)
    done: bool = False
    outcome: Any = None  # ("result", GenerationResult) / ("error", kind, message)
    preview_sent: Any = None
    changed: threading.Condition = field(default_factory=threading.Condition)


class RelayWriter:
    """An OutputWriter stand-in on the worker: each save goes to the serving machine as an event,
    and this waits for the path it was written to (or its OSError)."""

    def __init__(self, worker: "GenerationWorker", job_id: str, role: str, directory: str):
        from modules.outputs.saving import SaveSettings

        self._worker, self._job_id, self._role = worker, job_id, role
        self.settings = SaveSettings(Path(directory), "png", False)  # what SaveFailures names in its notes

    def save_image(self, image, infotext: str | None = None, values=None) -> Path | None:
        return self._worker._relay(self._job_id, ("save", self._role, "image", image, infotext, values))

    def save_grid(self, images, infotext: str | None = None, values=None) -> Path | None:
        return self._worker._relay(self._job_id, ("save", self._role, "grid", list(images), infotext, values))

    def save_as(self, image, name: str, infotext: str | None = None) -> Path | None:
        raise OSError(95, "a folder batch saves on the serving machine only")


class GenerationWorker:
    """Holds one model on one device and runs one job at a time (the pool never sends two)."""

    def __init__(self, setup: WorkerSetup):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if setup.threads:
            import torch

            torch.set_num_threads(setup.threads)
        self.setup = setup
        self._lock = threading.Lock()
        self._jobs: dict[str, _Running] = {}
        self._save_ids = iter(range(1, 1 << 62))
        self._values = _Values()  # the serving machine's config.json, as its jobs bring it
        self.service = self._build(setup)
        self._switches = 0  # models dropped for another: what affinity saves
        self.service.models.add_unload_listener(self._count_switch)

    def _count_switch(self) -> None:
        self._switches += 1

    # ------------------------------------------------------------------ building

    def _build(self, setup: WorkerSetup) -> "GenerationService":
        """The same generation service the serving machine has (built by the same App helpers),
        over this machine's models."""
        from modules.jobs.generation_task import GenerationService
        from modules.options import OutputSettings, Paths, parse_args
        from webui import App

        flags = [*setup.flags, "--disable-console-progressbars"]
        for flag, path in setup.path_flags:  # the server's folders, where this machine has them too
            if Path(path).exists():
                flags += [flag, path]
        if setup.data_dir and Path(setup.data_dir).is_dir():
            flags += ["--data-dir", setup.data_dir]
        if setup.models_dir and Path(setup.models_dir).is_dir():
            flags += ["--models-dir", setup.models_dir]
        elif setup.models_dir:
            log.warning("%s is not a folder on this machine: this worker reads its own models folder.", setup.models_dir)
        if setup.use_cpu:
            flags += ["--use-cpu", "all"]
        args = parse_args(flags)
        paths = Paths.from_args(args)
        models = App.models_for(args, paths)  # Ray gives the actor its GPU as device 0: no --device-id
        service = GenerationService(models, OutputSettings.from_values({}), paths.data_dir, console_progress=False,
                                    libraries=App.libraries(paths, hashes=models.hashes, args=args))
        App.add_model_addons(service, paths, args, self._values)
        return service

    # ------------------------------------------------------------------ what it holds

    def info(self) -> dict:
        """What the scheduler needs: where it runs, what it holds, which checkpoints it can load."""
        import socket

        models = self.service.models
        active = models.active
        runner = self.service.runner_loaded()
        vae = runner.vae_file.name if runner is not None and runner.vae_file is not None else None
        return {
            "pid": os.getpid(), "host": socket.gethostname(), "device": str(models.devices.device),
            "checkpoint": active.info.filename if active is not None else None, "vae": vae,
            "loras": list(runner.lora_names) if runner is not None else [],
            "can_load": sorted(c.filename for c in models.checkpoints),
            "switches": self._switches,
            "hints": ({"guide": active.hints.guide, "examples": list(active.hints.examples), "defaults": dict(active.hints.defaults),
                       "training": dict(active.hints.training)}
                      if active is not None else None),
        }

    def refresh(self) -> dict:
        """List the models folder again (a checkpoint copied in since), and say what it holds."""
        self.service.models.refresh()
        return self.info()

    def load(self, checkpoint: str | None) -> dict:
        """Load `checkpoint` (a file name in its models folder; None: the first in start-up
        order) ahead of the jobs that need it. ValueError when it has no such file."""
        models = self.service.models
        if checkpoint:
            models.ensure(str(models.require(checkpoint).path))
        else:
            models.load(None, select=False)
        return self.info()

    # ------------------------------------------------------------------ running a job

    def start(self, job_id: str, kind: str, payload: dict, user: str, resumed: Any, settings: dict, directories: dict,
              saved_images: dict | None = None, styles: list | None = None) -> dict:
        """Begin running a job in a thread of its own; `poll` follows it. `directories` are the
        serving machine's output folders for its notes; `saved_images` the pictures a resumed
        job already saved there, by path; `styles` its styles.csv, which the job applies."""
        from modules.generation.styles import StyleStore
        from modules.jobs.queue import Job

        self._finish_stale()
        self._use_settings(settings)
        self.service.libraries.styles = StyleStore.frozen(styles or [])
        job = Job(id=job_id, kind=kind, task=lambda _j: None, user=user, resumed=resumed)
        running = _Running(job)
        job._progress_writer = lambda progress: self._event(running, ("record", progress))
        with self._lock:
            self._jobs = {job_id: running}
        self.service.saved_images = (lambda path: _saved(saved_images, path)) if saved_images else None
        thread = threading.Thread(target=self._run, args=(running, kind, payload, directories), name=f"run-{job_id}", daemon=True)
        thread.start()
        return {"started": job_id}

    def _finish_stale(self, wait: float = 30.0) -> None:
        """A job the serving machine stopped following (it failed there) must not hold this
        worker: interrupt it, refuse its saves, and wait for it to end."""
        with self._lock:
            stale = [r for r in self._jobs.values() if not r.done]
        for running in stale:
            running.job.control.interrupt()
            for done, box in list(running.saves.values()):
                box.append((None, (5, "the serving machine stopped following the job")))
                done.set()
            with running.changed:
                running.changed.wait_for(lambda: running.done, timeout=wait)
            if not running.done:
                raise RuntimeError("This worker is still busy with a job that does not stop.")

    def _use_settings(self, values: dict) -> None:
        """Take the serving machine's config.json values (those that changed since the last job)."""
        changed = {k: v for k, v in values.items() if self._values.values.get(k, object()) != v}
        if not changed:
            return
        vae = changed.pop("sd_vae", None)
        self.service.use_settings(changed)
        if vae is not None:
            try:
                self.service.use_settings({"sd_vae": vae})
            except ValueError as exc:  # not on this machine: the checkpoint's own VAE, and the job's notes say so
                log.warning("%s", exc)
        self._values.update(values)

    def _run(self, running: _Running, kind: str, payload: dict, directories: dict) -> None:
        from modules.jobs.generation_task import task_from_payload

        job = running.job
        try:
            if kind == "load_model":
                self.load(payload.get("checkpoint"))
                outcome: Any = ("result", None)
            else:
                writers = (RelayWriter(self, job.id, "images", directories.get("images", "outputs")),
                           RelayWriter(self, job.id, "grids", directories.get("grids", "outputs")))
                self.service.writers = {"txt2img": writers, "img2img": writers}
                task = task_from_payload(kind, payload, self.service)
                outcome = ("result", task(job))
        except ValueError as exc:
            outcome = ("error", "ValueError", str(exc))
        except BaseException as exc:  # the job fails with the reason; the worker keeps serving
            log.error("Job %s failed on this worker:\n%s", job.id, traceback.format_exc())
            outcome = ("error", type(exc).__name__, str(exc))
        with running.changed:
            running.outcome, running.done = outcome, True
            running.changed.notify_all()

    def poll(self, job_id: str, interrupt: bool = False, skips: int = 0, preview_every: int = 0, preview_seconds: float = 0.0,
             wait: float = 0.2) -> dict:
        """The job's progress and what happened since the last poll (saves to make, progress to
        record), after at most `wait` seconds; carries the serving side's interrupt, skips and
        preview wishes to the running job."""
        running = self._jobs.get(job_id)
        if running is None:
            return {"gone": True}
        job = running.job
        if interrupt:
            job.control.interrupt()
        for _ in range(skips):
            job.control.skip()
        if preview_every:
            job.progress.want_preview(preview_every, preview_seconds)
        with running.changed:
            if not running.events and not running.done:
                running.changed.wait(wait)
            events, running.events = running.events, []
            done, outcome = running.done, running.outcome
        p = job.progress
        preview = None
        if p.preview is not None and p.preview is not running.preview_sent:
            preview = running.preview_sent = p.preview
        answer = {"step": p.step, "steps": p.steps, "batch_index": p.batch_index, "batch_count": p.batch_count, "preview": preview,
                  "events": events, "done": done}
        if done:
            answer["outcome"] = outcome
            with self._lock:
                self._jobs.pop(job_id, None)
        return answer

    def saved(self, job_id: str, save_id: int, path: str | None, error: tuple[int, str] | None = None) -> None:
        """The serving machine's answer to a save request: the path written, or (errno, reason)."""
        running = self._jobs.get(job_id)
        if running is None or save_id not in running.saves:
            return
        done, box = running.saves[save_id]
        box.append((path, error))
        done.set()

    def ping(self) -> int:
        return os.getpid()

    # ------------------------------------------------------------------ helpers

    def _event(self, running: _Running, event: tuple) -> None:
        with running.changed:
            running.events.append(event)
            running.changed.notify_all()

    def _relay(self, job_id: str, request: tuple) -> Path | None:
        """Send a save to the serving machine and wait for where it went."""
        running = self._jobs[job_id]
        save_id = next(self._save_ids)
        done, box = threading.Event(), []
        running.saves[save_id] = (done, box)
        self._event(running, (request[0], save_id, *request[1:]))
        deadline = time.monotonic() + SAVE_REPLY_SECONDS
        while not done.wait(0.5):
            if time.monotonic() > deadline:
                raise OSError(110, "the serving machine did not answer the save")
        running.saves.pop(save_id, None)
        path, error = box[0]
        if error is not None:
            raise OSError(error[0], error[1])
        return Path(path) if path else None


def _saved(pictures: dict, path: str) -> tuple:
    """A resumed job's earlier picture as the serving machine sent it; ValueError when it could
    not read it (Resumed.restore then goes on without it, as it does on one machine)."""
    if path not in pictures:
        raise ValueError(f"{path} could not be read on the serving machine")
    return pictures[path]


class _Values:
    """The little of SettingsStore that App.add_model_addons follows (values, on_change): the
    serving machine's values arrive with each job (GenerationWorker._use_settings)."""

    def __init__(self):
        self.values: dict = {}
        self._listeners: list = []

    def on_change(self, listener) -> None:
        self._listeners.append(listener)

    def update(self, values: dict) -> None:
        self.values = dict(values)
        for listener in self._listeners:
            listener(self.values)
