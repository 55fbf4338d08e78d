"""Ray workers for the queue: one actor per GPU on every machine of a Ray cluster.

Used only with --ray-address or several --device-id; without them nothing imports Ray. The
serving machine keeps the queue (its SQLite record, the users' lanes, positions, cancel); each
`RayWorker` is a thread-side handle on one `GenerationWorker` actor (modules/jobs/ray_worker.py):
it starts a job there, polls its progress and previews into the queue's Job (so the page and
/progress see nothing new), forwards interrupt and skip, saves the pictures the actor relays
with the serving machine's writers, and reports a dead actor or machine as WorkerLost, after
which the queue runs the job again elsewhere. A watcher thread starts an actor for every GPU
(or, with --ray-cpu-workers, CPU slot) that appears in the cluster, later joiners included.

A Ray cluster runs whatever code its members send: it must only span trusted machines.
"""

from __future__ import annotations

import itertools
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from modules.generation.control import StepInfo
from modules.jobs.queue import MAX_WORKER_LOSSES, Job, WorkerLost
from modules.jobs.ray_worker import GenerationWorker, WorkerSetup
from modules.jobs.scheduling import Need, WorkerView
from modules.jobs.workers import RemoteSpec

if TYPE_CHECKING:
    from modules.jobs.generation_task import GenerationService
    from modules.jobs.queue import JobQueue
    from modules.models.manager import ModelManager

log = logging.getLogger(__name__)

REMOTE_KINDS = ("txt2img", "img2img", "load_model")
CALL_SECONDS = 60.0  # a short actor call that takes longer than this means its machine is gone
WATCH_SECONDS = 2.0  # how often the watcher looks for new GPUs and dead actors
RETRY_SECONDS = 60.0  # a slot whose actor failed to start is tried again after this long
_LORA_TAG = re.compile(r"<lora:([^:>]+)")


@dataclass(frozen=True)
class PoolOptions:
    address: str | None = None  # "auto", "host:port"; None: a local Ray on this machine's GPUs
    device_ids: tuple[int, ...] = ()  # the local GPUs to use (empty: all visible)
    cpu_workers: int = 0  # workers on each node without GPUs (CPU generation: tests, benchmarks)
    dashboard: bool = False
    setup: WorkerSetup = WorkerSetup()


def remote_spec_for(models: "ModelManager", service: "GenerationService") -> Callable[[str, Any], RemoteSpec | None]:
    """Which jobs Ray workers take, and the model each needs: txt2img and img2img jobs (and
    checkpoint loads) given with their payload. Jobs with always-on extension scripts stay on
    the serving machine, where the extensions are loaded."""

    def spec(kind: str, payload: Any) -> RemoteSpec | None:
        if kind not in REMOTE_KINDS or not isinstance(payload, dict) or payload.get("alwayson"):
            return None
        pinned = payload.get("checkpoint")
        info = models.find(pinned) if pinned else models.selected
        checkpoint = info.filename if info is not None else (str(pinned) if pinned else None)
        params = payload.get("params") or {}
        prompt = f"{params.get('prompt', '')} {params.get('hr_prompt', '')}"
        need = Need(checkpoint, payload.get("vae") or service.sd_vae, frozenset(_LORA_TAG.findall(prompt)))
        return RemoteSpec(kind, {**payload, "checkpoint": checkpoint}, need)

    return spec


class RayWorker:
    """The queue's handle on one actor. `run` blocks its queue thread while the actor works."""

    kind = "ray"

    def __init__(self, id: str, actor, node_id: str, service: "GenerationService", settings: Callable[[], dict],
                 on_change: Callable[[], None]):
        self.id, self.actor, self.node_id = id, actor, node_id
        self.service, self.settings, self.on_change = service, settings, on_change
        self.alive = True
        self.state: dict = {}  # the actor's last info(): checkpoint, vae, can_load, device, pid

    def accepts(self, job: Job) -> bool:
        return job.remote is not None

    def view(self, busy: bool) -> WorkerView:
        s = self.state
        can_load = frozenset(s["can_load"]) if "can_load" in s else None
        return WorkerView(self.id, s.get("checkpoint"), s.get("vae") or "Automatic", frozenset(s.get("loras", ())), can_load, busy)

    def describe(self) -> dict:
        s = self.state
        return {"id": self.id, "kind": self.kind, "alive": self.alive, "node": self.node_id, "host": s.get("host"), "pid": s.get("pid"),
                "device": s.get("device"), "checkpoint": s.get("checkpoint"), "vae": s.get("vae"), "loras": s.get("loras", []), "checkpoints": s.get("can_load", []),
                "model_switches": s.get("switches", 0)}

    def call(self, method: str, *args, timeout: float = CALL_SECONDS, **kwargs):
        """One actor call, its death (or silence) raised as WorkerLost."""
        import ray
        import ray.exceptions as rx

        try:
            return ray.get(getattr(self.actor, method).remote(*args, **kwargs), timeout=timeout)
        except (rx.RayActorError, rx.GetTimeoutError, rx.ObjectLostError, rx.OwnerDiedError, rx.WorkerCrashedError) as exc:
            self.alive = False
            try:  # one that is only silent must not keep its GPU while a replacement waits for it
                ray.kill(self.actor, no_restart=True)
            except Exception:
                pass
            raise WorkerLost(_reason(exc)) from None

    def update(self, info: dict) -> None:
        self.state = info
        if info.get("checkpoint") and info.get("hints") is not None:
            self.service.models.learn_hints(info["checkpoint"], info["hints"])
        self.on_change()

    def run(self, job: Job) -> Any:
        spec = job.remote
        writers = self.service.writers["img2img" if spec.kind == "img2img" else "txt2img"]
        directories = {role: str(w.settings.directory) for role, w in zip(("images", "grids"), writers) if w}
        saved = _saved_pictures(job.resumed)
        store = self.service.libraries.styles
        styles = store.styles if store is not None else []
        unrecorded: list[Path] = []  # pictures saved since the job's last record_progress
        try:
            self.call("start", job.id, spec.kind, spec.payload, job.user, job.resumed, self.settings(), directories, saved, styles)
            outcome = self._follow(job, unrecorded)
        except WorkerLost:
            if len(job.lost) + 1 < MAX_WORKER_LOSSES:  # the re-run makes this batch again, and saves it again
                for path in unrecorded:
                    path.unlink(missing_ok=True)
            raise
        except BaseException:  # a failure here (a save that raised): stop the job there too, or the worker stays busy with it
            self._abandon(job)
            raise
        try:
            self.update(self.call("info"))
        except WorkerLost as exc:  # it died just after the job: the result is here, the queue drops the worker
            log.error("Ray worker %s is gone: %s", self.id, exc)
        if outcome[0] == "result":
            return outcome[1]
        if outcome[1] == "ValueError":
            raise ValueError(outcome[2])
        raise RuntimeError(f"{outcome[1]}: {outcome[2]} (on worker {self.id})")

    def _abandon(self, job: Job) -> None:
        """Interrupt the job on the worker and let it end, refusing its saves."""
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                answer = self.call("poll", job.id, True, 0, 0, 0.0, timeout=30)
                for event in answer.get("events", ()):
                    if event[0] == "save":
                        self.call("saved", job.id, event[1], None, (5, "the job failed on the serving machine"))
                if answer.get("gone") or answer.get("done"):
                    return
        except WorkerLost:
            pass

    def _follow(self, job: Job, unrecorded: list[Path]) -> tuple:
        """Poll the running job until it ends: progress and previews into `job`, interrupt and
        skip to the worker, saves made here. Returns the actor's outcome."""
        sent_interrupt = False
        while True:
            progress = job.progress
            interrupt = job.control.interrupted and not sent_interrupt
            skips = 1 if job.control.take_skip() else 0
            wants = progress.preview_every if time.monotonic() < progress.preview_wanted_until else 0
            answer = self.call("poll", job.id, interrupt, skips, wants, max(0.0, progress.preview_wanted_until - time.monotonic()))
            sent_interrupt = sent_interrupt or interrupt
            if answer.get("gone"):
                self.alive = False
                raise WorkerLost("the worker no longer knows the job (it was restarted)")
            if answer["steps"]:
                job.control.on_step(StepInfo(answer["batch_index"], answer["batch_count"], answer["step"], answer["steps"]))
            if answer["preview"] is not None:
                progress.preview = answer["preview"]
            for event in answer["events"]:
                self._handle(job, event, unrecorded)
            if answer["done"]:
                return answer["outcome"]

    def _handle(self, job: Job, event: tuple, unrecorded: list[Path]) -> None:
        if event[0] == "record":
            job.record_progress(event[1])
            unrecorded.clear()
            return
        if event[0] != "save":
            return
        _, save_id, role, what, image, infotext, values = event
        writers = self.service.writers["img2img" if job.kind == "img2img" else "txt2img"]
        writer = writers[0] if role == "images" else writers[1]
        try:
            if writer is None:
                raise OSError(2, "no grid folder")
            path = writer.save_image(image, infotext=infotext, values=values) if what == "image" else (
                writer.save_grid(image, infotext=infotext, values=values))
        except OSError as exc:
            self.call("saved", job.id, save_id, None, (exc.errno or 5, exc.strerror or str(exc)))
            return
        except BaseException as exc:  # answer the waiting worker first; the job fails with this
            self.call("saved", job.id, save_id, None, (5, f"{type(exc).__name__}: {exc}"))
            raise
        if path is not None:
            unrecorded.append(Path(path))
        self.call("saved", job.id, save_id, str(path) if path is not None else None)


def _saved_pictures(resumed: Any) -> dict | None:
    """The pictures a resumed job saved before, read here for a worker that may be elsewhere."""
    if not isinstance(resumed, dict) or not isinstance(resumed.get("paths"), list):
        return None
    from modules.jobs.resume import read_saved

    out = {}
    for path in resumed["paths"]:
        try:
            out[str(path)] = read_saved(str(path))
        except (ValueError, OSError):
            continue
    return out


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    kind = type(exc).__name__
    return f"{kind}: {text[0][:300]}" if text else kind


class RayPool:
    """Connects to (or starts) Ray, keeps one actor per GPU (or CPU slot) in the queue."""

    def __init__(self, options: PoolOptions, queue: "JobQueue", service: "GenerationService", settings: Callable[[], dict],
                 first_checkpoint: Callable[[], str | None]):
        self.options, self.queue, self.service, self.settings = options, queue, service, settings
        self.first_checkpoint = first_checkpoint
        self._workers: dict[str, RayWorker] = {}  # by "<node>/<slot>"
        self._numbers = itertools.count(1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._starting: set[str] = set()  # slots whose actor is being started
        self._failed: dict[str, float] = {}  # slot -> when its actor last failed to start (retried after RETRY_SECONDS)
        queue.starting = lambda: bool(self._starting)  # jobs wait rather than fail while a worker may still bring their model

    def connect(self) -> None:
        import os

        if not self.options.address and "ray" not in sys.modules:
            # A Ray of our own: its services listen on every interface, so without a token anyone
            # on the network could run code through them. Ray reads this when imported; its
            # processes and workers inherit the token.
            import secrets

            os.environ["RAY_AUTH_MODE"] = "token"
            os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        import ray

        if ray.is_initialized():
            return
        opts: dict = {"include_dashboard": self.options.dashboard, "logging_level": "WARNING", "log_to_driver": True}
        if self.options.address:
            ray.init(address=self.options.address, **opts)
        else:  # a Ray of our own on this machine's GPUs
            from modules.options import REPO_DIR

            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if self.options.device_ids:  # Ray hands out the GPUs its processes see: only the listed ones
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in self.options.device_ids)
            try:
                ray.init(num_gpus=len(self.options.device_ids) or None, runtime_env={"env_vars": {"PYTHONPATH": str(REPO_DIR)}},
                         _node_ip_address="127.0.0.1", **opts)
            finally:  # this process keeps its own view of the GPUs (--device-id's first for Extras and the rest)
                if visible is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = visible
        log.info("Ray: %d node(s), %s", len([n for n in ray.nodes() if n.get("Alive")]), ray.cluster_resources())

    def start(self, on_failure: Callable[[Exception], None] | None = None) -> None:
        """In a thread of its own: connect, start the actors the cluster has room for, and keep
        watching for more. That thread lives as long as the server: a Ray started here (no
        --ray-address) dies with the thread that started it (Linux's parent-death signal)."""
        self._thread = threading.Thread(target=self._run, args=(on_failure,), name="ray-workers", daemon=True)
        self._thread.start()

    def _run(self, on_failure: Callable[[Exception], None] | None) -> None:
        try:
            self.connect()
        except Exception as exc:
            if on_failure is None:
                raise
            on_failure(exc)
            return
        if not self._slots():
            exc = RuntimeError("the Ray cluster has no GPU (start it with GPUs, or pass --ray-cpu-workers N for CPU workers)")
            if on_failure is None:
                raise exc
            on_failure(exc)
            return
        while True:
            try:
                self.scan()
            except Exception:  # a hiccup of the cluster's control service: try again next time
                log.exception("Looking for new Ray workers failed")
            if self._stop.wait(WATCH_SECONDS):
                return

    def stop(self) -> None:
        self._stop.set()

    def workers(self) -> list[RayWorker]:
        with self._lock:
            return [w for w in self._workers.values() if w.alive]

    def _slots(self) -> list[tuple[str, int, bool]]:
        """(node id, slot, is GPU) for every worker the alive nodes have room for."""
        import ray

        slots = []
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            gpus = int(node.get("Resources", {}).get("GPU", 0))
            if gpus:
                slots += [(node["NodeID"], i, True) for i in range(gpus)]
            else:
                slots += [(node["NodeID"], i, False) for i in range(self.options.cpu_workers)]
        return slots

    def scan(self) -> None:
        """Start an actor for each slot without a live one (new machines, dead actors), each in
        a thread of its own (loading a model takes a while), and check that idle ones still answer."""
        for node_id, slot, gpu in self._slots():
            key = f"{node_id}/{slot}"
            with self._lock:
                current = self._workers.get(key)
                if (current is not None and current.alive) or key in self._starting:
                    continue
                if time.monotonic() - self._failed.get(key, -RETRY_SECONDS) < RETRY_SECONDS:
                    continue
                self._starting.add(key)
            threading.Thread(target=self._start_worker, args=(key, node_id, gpu), name=f"start-{key[:8]}", daemon=True).start()
        for worker in self.workers():
            if worker.id not in {job.worker for job in self.queue.running()}:  # still there? which checkpoints has its folder now?
                try:
                    worker.update(worker.call("refresh", timeout=60))
                except WorkerLost as exc:
                    log.error("Ray worker %s is gone: %s", worker.id, exc)
                    self.queue.wake()

    def _start_worker(self, key: str, node_id: str, gpu: bool) -> None:
        """Start one actor, load the selected checkpoint on it, then let it take jobs."""
        try:
            worker = self._new_worker(node_id, gpu)
            if worker is None:
                self._failed[key] = time.monotonic()
                return
            first = self.first_checkpoint()
            if first and first in worker.state["can_load"]:
                self._warm(worker, first)
            with self._lock:
                self._workers[key] = worker
            self.queue.add_worker(worker)
        finally:
            with self._lock:
                self._starting.discard(key)

    def _new_worker(self, node_id: str, gpu: bool) -> RayWorker | None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        setup = self.options.setup
        setup = WorkerSetup(setup.flags, setup.data_dir, setup.models_dir, setup.threads if not gpu else 0, use_cpu=not gpu,
                            path_flags=setup.path_flags)
        actor_class = ray.remote(GenerationWorker)
        actor = actor_class.options(
            num_gpus=1 if gpu else 0, num_cpus=0 if gpu else 1, max_concurrency=8, max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        ).remote(setup)
        worker = RayWorker(f"ray-{next(self._numbers)}", actor, node_id, self.service, self.settings, self.queue.wake)
        try:
            worker.update(worker.call("info", timeout=300))
        except WorkerLost as exc:
            log.error("A Ray worker on node %s did not start: %s", node_id[:12], exc)
            return None
        log.info("Ray worker %s on %s (%s, pid %s): %d checkpoint(s)", worker.id, worker.state["host"], worker.state["device"],
                 worker.state["pid"], len(worker.state["can_load"]))
        return worker

    def _warm(self, worker: RayWorker, checkpoint: str) -> None:
        """Load the selected checkpoint before the first job asks for it."""
        try:
            worker.update(worker.call("load", checkpoint, timeout=600))
        except Exception as exc:  # the job that needs it will say what went wrong
            log.warning("Worker %s could not load %s ahead of time: %s", worker.id, checkpoint, exc)
