"""The job queue: fair between users, recorded on disk, run by one or more workers.

A GPU can only do one generation at a time, so every request, from the page or the API,
becomes a Job here and waits its turn; model switches are jobs too, so a switch never pulls
the model from under a running generation. Each job has its own progress, interrupt and
skip, so one user's Interrupt button stops only their own job (A1111's is global).

Jobs wait in one lane per user and workers take lanes in turn, so one user's hundred jobs
cannot starve another's one. Jobs submitted with a payload are recorded in a JobStore and
rebuilt from it after a restart by the handler registered for their kind.

Who runs a job is a `Worker` (modules/jobs/workers.py): the in-process worker by default, and
with --ray-address or several --device-id a Ray actor per device too (modules/jobs/ray_pool.py);
each worker has its own thread here and takes the job modules/jobs/scheduling.py picks for it.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from modules.generation.control import RunControl, StepInfo
from modules.jobs import scheduling

if TYPE_CHECKING:
    from modules.jobs.store import JobStore
    from modules.jobs.workers import RemoteSpec, Worker

# Builds a job's task from its recorded payload (after a restart).
Handler = Callable[[Any], Callable[["Job"], Any]]

log = logging.getLogger(__name__)


class QueueStopped(RuntimeError):
    """The server is stopping: no new jobs."""


class WorkerLost(RuntimeError):
    """The worker running a job died (its process, or its whole machine): the job goes back to
    the queue once; a job that a second worker dies on is failed with both reasons."""


MAX_WORKER_LOSSES = 2


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"


FINISHED = {JobStatus.DONE, JobStatus.FAILED, JobStatus.INTERRUPTED, JobStatus.CANCELLED}


@dataclass
class Progress:
    step: int = 0
    steps: int = 0
    batch_index: int = 0
    batch_count: int = 1
    started_at: float | None = None
    preview: Any = None  # a PIL image of the picture so far, while someone watches (see want_preview)
    preview_every: int = 0  # steps between previews; 0 while nobody asks for them
    preview_wanted_until: float = 0.0  # time.monotonic(); previews stop when polling stops

    def want_preview(self, every: int, for_seconds: float = 5.0) -> None:
        """Ask for a preview every `every` steps for a while: decoding costs time, so the
        worker makes them only while a client keeps polling for them."""
        self.preview_every = max(1, int(every))
        self.preview_wanted_until = time.monotonic() + for_seconds

    def preview_due(self, step: int) -> bool:
        return self.preview_every > 0 and step % self.preview_every == 0 and time.monotonic() < self.preview_wanted_until

    @property
    def fraction(self) -> float:
        if not self.steps:
            return 0.0
        return min(1.0, (self.batch_index + self.step / self.steps) / max(1, self.batch_count))

    def eta_seconds(self, now: float | None = None) -> float | None:
        frac = self.fraction
        if self.started_at is None or frac <= 0:
            return None
        elapsed = (now or time.monotonic()) - self.started_at
        return max(0.0, elapsed / frac - elapsed)

    def text(self) -> str:
        if not self.steps:
            return "Starting…"
        eta = self.eta_seconds()
        batch = f"Batch {self.batch_index + 1}/{self.batch_count}, " if self.batch_count > 1 else ""
        return f"{batch}Step {self.step}/{self.steps}" + (f", ETA {eta:.0f}s" if eta is not None else "")


def login_of(user: str) -> str | None:
    """The log-in name behind a lane key (a --gradio-auth / --api-auth user), or None for an
    anonymous lane ("ip:<address>" or "")."""
    return user if user and not user.startswith("ip:") else None


@dataclass
class Job:
    id: str
    kind: str
    task: Callable[["Job"], Any]
    status: JobStatus = JobStatus.QUEUED
    progress: Progress = field(default_factory=Progress)
    result: Any = None
    error: str | None = None
    submitted_at: float = field(default_factory=time.time)
    finished_at: float | None = None  # time.monotonic(), like progress.started_at
    finished: threading.Event = field(default_factory=threading.Event)
    control: RunControl = field(default_factory=RunControl)
    user: str = ""  # whose lane it waits in: the page's log-in or the API's auth user
    number: int = 0
    recorded: bool = False  # in the JobStore, so it survives a restart
    resumed: Any = None  # restored after a crash: the progress its cut-off run recorded
    _progress_writer: Callable[[Any], None] | None = None
    _callbacks: list[Callable[[], None]] = field(default_factory=list)
    _callbacks_lock: threading.Lock = field(default_factory=threading.Lock)
    _released: bool = False  # the queue stopped: waiters are told at once
    remote: "RemoteSpec | None" = None  # how a Ray worker runs it (payload and needs); None: in this process only
    lost: list[str] = field(default_factory=list)  # why each worker that ran it died
    last_record: Any = None  # the newest record_progress: a re-run after a worker died resumes from it
    worker: str | None = None  # the worker that runs (or ran) it

    def __post_init__(self) -> None:
        self.control.on_step = self._on_step

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the worker thread) once the job has ended; at once if it has.
        Lets an asyncio server await a job without holding a thread for it."""
        with self._callbacks_lock:
            if not self.finished.is_set() and not self._released:
                self._callbacks.append(callback)
                return
        callback()

    def _set_finished(self) -> None:
        with self._callbacks_lock:
            self.finished.set()
        self._release_waiters()

    def _release_waiters(self) -> None:
        """Run the done-callbacks now, and any added later at once. Also used without
        finishing the job, when the server stops: its waiters answer that it stays queued
        for the next start."""
        with self._callbacks_lock:
            self._released = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a waiter that went away must not stop the worker
                log.exception("A done-callback of job %s failed", self.id)

    def _on_step(self, info: StepInfo) -> None:
        p = self.progress
        p.step, p.steps, p.batch_index, p.batch_count = info.step, info.steps, info.batch_index, info.batch_count

    def record_progress(self, progress: Any) -> None:
        """Keep what the job has finished (JSON-able) with its record, for a run after a crash;
        nothing for a job that is not recorded."""
        self.last_record = progress
        if self._progress_writer is not None:
            self._progress_writer(progress)

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)

    @property
    def run_seconds(self) -> float | None:
        started = self.progress.started_at
        return None if started is None or self.finished_at is None else self.finished_at - started


def done_future(job: Job) -> asyncio.Future:
    """A future of the running event loop that completes when `job` ends, or when the queue
    stops with the job still unfinished (check `job.status`). Servers await it
    instead of blocking a thread in `job.wait()`: FastAPI and gradio run blocking handlers
    on one shared pool of 40 threads, so 40 waiting clients would leave none free for
    /progress, /interrupt or the page."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle() -> None:
        if not future.done():
            future.set_result(job)

    def wake() -> None:
        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    job.add_done_callback(wake)
    return future


class JobQueue:
    """Jobs run by workers, each on its own daemon thread, taking users' lanes in turn. Only the
    methods below are the interface."""

    def __init__(self, max_finished: int = 64, store: "JobStore | None" = None, local_worker: bool = True):
        """The newest `max_finished` finished jobs stay in memory with their results (images);
        older ones are answered from the store's record. `local_worker` starts the in-process
        worker (every queue has one; tests may add their own workers instead)."""
        self._lock = threading.Condition()
        self._lanes: dict[str, deque[Job]] = {}
        self._turns: deque[str] = deque()  # users with waiting jobs, next turn first
        self._jobs: dict[str, Job] = {}
        self._finished_order: deque[str] = deque()
        self._max_finished = max_finished
        self._store = store
        self._handlers: dict[str, Handler] = {}
        self._ids = itertools.count(store.next_number() if store else 1)
        self._running: dict[str, Job] = {}  # worker id -> its job
        self._workers: dict[str, "Worker"] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.remote_spec: Callable[[str, Any], "RemoteSpec | None"] | None = None  # set with Ray workers: which jobs they take
        self.starting: Callable[[], bool] = lambda: False  # whether more workers are on their way (then no job is unrunnable yet)
        if local_worker:
            from modules.jobs.workers import LocalWorker

            self.add_worker(LocalWorker())

    def add_worker(self, worker: "Worker") -> None:
        """Start taking jobs on `worker` (a Ray actor that joined later, too)."""
        with self._lock:
            if worker.id in self._workers:
                raise ValueError(f"A worker named {worker.id} is already taking jobs.")
            self._workers[worker.id] = worker
            thread = threading.Thread(target=self._work, args=(worker,), name=f"job-worker-{worker.id}", daemon=True)
            self._threads.append(thread)
            self._lock.notify_all()
        thread.start()

    def send_generation(self, remote_spec: Callable[[str, Any], "RemoteSpec | None"] | None) -> None:
        """From now on the jobs `remote_spec` describes go to the Ray workers and the in-process
        worker keeps the rest; None: everything runs in this process again."""
        with self._lock:
            self.remote_spec = remote_spec
            for worker in self._workers.values():
                if hasattr(worker, "takes_remote"):
                    worker.takes_remote = remote_spec is None
            self._lock.notify_all()

    def workers(self) -> list["Worker"]:
        with self._lock:
            return list(self._workers.values())

    def register(self, kind: str, handler: Handler) -> None:
        """How to rebuild a recorded job of this kind from its payload."""
        self._handlers[kind] = handler

    def submit(self, kind: str, task: Callable[[Job], Any], *, user: str = "", payload: Any = None, record: bool = True) -> Job:
        """Queue a job. With a payload (JSON-able) and a store, it is recorded and survives a
        restart, rebuilt by the handler registered for `kind` (not with `record` False: the
        payload then only lets a Ray worker run it)."""
        remote = self.remote_spec(kind, payload) if self.remote_spec is not None and payload is not None else None
        with self._lock:
            if self._stopping:
                raise QueueStopped("The server is stopping and takes no new jobs; try again once it has started.")
            number = next(self._ids)
            job = Job(id=f"task({number})", kind=kind, task=task, user=user, number=number, remote=remote)
            if self._store is not None and payload is not None and record:
                try:
                    self._store.add(number, kind, user, payload, job.submitted_at)
                    job.recorded = True
                    job._progress_writer = self._progress_writer(number)
                except Exception:  # a full disk must not stop generating: the job runs, unrecorded
                    log.exception("Could not record %s in %s; it will not survive a restart", job.id, self._store.path)
            self._enqueue(job)
            return job

    def restore(self) -> list[Job]:
        """Queue again what the store says was waiting (or cut off) when the process ended."""
        if self._store is None:
            return []
        restored = []
        for stored in self._store.recover():
            handler = self._handlers.get(stored.kind)
            if handler is None:
                self._store.finished(stored.number, JobStatus.FAILED.value, f"No handler for '{stored.kind}' jobs after the restart.")
                continue
            try:
                task = handler(stored.payload)
                remote = self.remote_spec(stored.kind, stored.payload) if self.remote_spec is not None else None
            except Exception as exc:  # a record this version cannot read: fail it, keep the rest
                self._store.finished(stored.number, JobStatus.FAILED.value, f"Could not rebuild the job: {exc}")
                continue
            with self._lock:
                job = Job(id=f"task({stored.number})", kind=stored.kind, task=task, user=stored.user, number=stored.number,
                          submitted_at=stored.submitted_at, recorded=True, resumed=stored.progress,
                          _progress_writer=self._progress_writer(stored.number), remote=remote)
                self._enqueue(job)
            restored.append(job)
        if restored:
            log.info("Restored %d queued job(s) from %s", len(restored), self._store.path)
        return restored

    def _enqueue(self, job: Job, first: bool = False) -> None:
        """Into its user's lane: at the back, or `first` (a job whose worker died goes next)."""
        self._jobs[job.id] = job
        lane = self._lanes.setdefault(job.user, deque())
        if first:
            if job.user in self._turns:
                self._turns.remove(job.user)
            self._turns.appendleft(job.user)
            lane.appendleft(job)
        else:
            if not lane and job.user not in self._turns:
                self._turns.append(job.user)
            lane.append(job)
        self._lock.notify_all()

    def _take(self, job: Job) -> None:
        """Take `job` out of its lane. Taking the first job of the lane whose turn it is sends
        that lane to the back, as the round-robin wants; a job further along (a worker that
        holds its model took it early) leaves the turns as they are."""
        user = job.user
        lane = self._lanes[user]
        at_turn = bool(self._turns) and self._turns[0] == user and lane[0] is job
        lane.remove(job)
        if not lane:
            del self._lanes[user]
            self._turns.remove(user)
        elif at_turn:
            self._turns.rotate(-1)

    def _ordered(self) -> list[Job]:
        """Queued jobs in the fair order: the first of each lane in turn (call under the lock)."""
        lanes = {u: list(q) for u, q in self._lanes.items()}
        turns = deque(self._turns)
        order = []
        while turns:
            user = turns.popleft()
            order.append(lanes[user].pop(0))
            if lanes[user]:
                turns.append(user)
        return order

    def waiting(self) -> list[Job]:
        """Queued jobs in the order they will run (with several workers, model affinity may
        let a later job start first)."""
        with self._lock:
            return self._ordered()

    def _next_for(self, worker: "Worker") -> Job | None:
        """The job `worker` should run now (call under the lock). Jobs no worker could run
        (a checkpoint none of them has) fail here with a message."""
        mine = [job for job in self._ordered() if worker.accepts(job)]
        if not mine:
            return None
        others = [w for w in self._workers.values() if w is not worker and w.kind == worker.kind]
        views = {w.id: w.view(busy=w.id in self._running) for w in others}
        for job in [j for j in mine if j.remote is not None and not self.starting()]:
            if scheduling.unrunnable(job.remote.need, [worker.view(busy=False), *views.values()]):
                mine.remove(job)
                self._take(job)
                job.error = (f"No worker can load the checkpoint '{job.remote.need.checkpoint}': "
                             f"put it in each worker's models/Stable-diffusion folder (or the shared folder named by --ray-models-dir).")
                self._finish(job, JobStatus.FAILED)
        needs = [job.remote.need if job.remote is not None else scheduling.Need() for job in mine]
        index = scheduling.pick(worker.view(busy=False), needs, list(views.values()))
        return mine[index] if index is not None else None

    def position(self, job: Job) -> int | None:
        """1 for the next job to run; None once it is no longer waiting."""
        for index, waiting in enumerate(self.waiting(), start=1):
            if waiting is job:
                return index
        return None

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def stored(self, number: int):
        """A job's record in the store (also one from before a restart), or None."""
        return self._store.get(number) if self._store is not None else None

    def list(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def running(self) -> list[Job]:
        """The jobs running now, the earliest started first."""
        with self._lock:
            jobs = list(self._running.values())
        return sorted(jobs, key=lambda j: j.progress.started_at or 0.0)

    @property
    def current(self) -> Job | None:
        """The running job (the earliest started, when several workers run jobs)."""
        running = self.running()
        return running[0] if running else None

    def current_for(self, user: str) -> Job | None:
        """`user`'s own running job if they have one, else the earliest started one."""
        running = self.running()
        return next((j for j in running if j.user == user), running[0] if running else None)

    def pending_count(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._lanes.values())

    def interrupt(self, job_id: str | None = None) -> bool:
        """Stop a job (the running one if no id): a queued job is cancelled, a running one stops at the next step."""
        with self._lock:
            job = self._jobs.get(job_id) if job_id else self._first_running()
            if job is None or job.status in FINISHED:
                return False
            if job.status is JobStatus.QUEUED:
                lane = self._lanes.get(job.user)
                if lane is not None and job in lane:
                    lane.remove(job)
                    if not lane:
                        del self._lanes[job.user]
                        self._turns.remove(job.user)
                self._finish(job, JobStatus.CANCELLED)
            else:
                job.control.interrupt()
            return True

    def skip(self, job_id: str | None = None) -> bool:
        with self._lock:
            job = self._jobs.get(job_id) if job_id else self._first_running()
            if job is None or job.status is not JobStatus.RUNNING:
                return False
            job.control.skip()
            return True

    def _first_running(self) -> Job | None:
        jobs = sorted(self._running.values(), key=lambda j: j.progress.started_at or 0.0)
        return jobs[0] if jobs else None

    def stop(self) -> None:
        """Start no more jobs and cut off the running ones, without waiting (safe in a signal
        handler). Recorded jobs, the cut-off ones included, stay queued in the store for the
        next start; whoever awaits a waiting job is woken to say so (see done_future)."""
        with self._lock:
            self._stopping = True
            for job in self._running.values():
                job.control.interrupt()
            waiting = [job for lane in self._lanes.values() for job in lane]
            self._lock.notify_all()
        for job in waiting:
            job._release_waiters()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop (see `stop`) and wait for the workers to let go of their running jobs."""
        self.stop()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def wake(self) -> None:
        """Look at the waiting jobs again (a worker's model or list of checkpoints changed)."""
        with self._lock:
            self._lock.notify_all()

    def _work(self, worker: "Worker") -> None:
        while True:
            with self._lock:
                job = None
                while not self._stopping and worker.alive:
                    job = self._next_for(worker) if self._turns else None
                    if job is not None:
                        break
                    self._lock.wait(1.0 if self._turns else None)  # a worker's model may change meanwhile (see wake)
                if self._stopping or not worker.alive:
                    self._workers.pop(worker.id, None)
                    return
                self._take(job)
                job.status = JobStatus.RUNNING
                job.progress.started_at = time.monotonic()
                job.worker = worker.id
                self._running[worker.id] = job
            if job.recorded:
                self._record(self._store.started, job.number)
            status = JobStatus.DONE
            try:
                job.result = worker.run(job)
                if job.control.interrupted:
                    status = JobStatus.INTERRUPTED
            except WorkerLost as exc:
                self._lost(worker, job, str(exc))
                return
            except ValueError as exc:  # a readable problem with the request or the model file
                job.error = str(exc)
                status = JobStatus.FAILED
            except (Exception, SystemExit) as exc:  # keep serving whatever a job does (sys.exit() in add-on code too)
                log.error("Job %s failed:\n%s", job.id, traceback.format_exc())
                job.error = f"{type(exc).__name__}: {exc}"
                status = JobStatus.FAILED
            with self._lock:
                self._running.pop(worker.id, None)
                if self._stopping and status is JobStatus.INTERRUPTED and job.recorded:
                    # cut off by the shutdown: queued again in the store, for the next start
                    self._record(self._store.requeue, job.number)
                    job._set_finished()
                    return
                self._finish(job, status)
                self._lock.notify_all()

    def _lost(self, worker: "Worker", job: Job, reason: str) -> None:
        """`worker` died running `job`: drop the worker; run the job again first in its lane,
        from its last saved batch, unless this is the second worker it outlived."""
        log.error("Worker %s was lost running %s: %s", worker.id, job.id, reason)
        with self._lock:
            self._running.pop(worker.id, None)
            self._workers.pop(worker.id, None)
            job.lost.append(f"{worker.id}: {reason}")
            if self._stopping and job.recorded:  # as a job cut off by the shutdown: queued again for the next start
                self._record(self._store.requeue, job.number)
                job._set_finished()
            elif job.control.interrupted:  # its user had stopped it anyway
                self._finish(job, JobStatus.INTERRUPTED)
            elif len(job.lost) >= MAX_WORKER_LOSSES or self._stopping:
                job.error = "The job was stopped by the loss of its workers: " + "; ".join(job.lost)
                self._finish(job, JobStatus.FAILED)
            else:
                job.status = JobStatus.QUEUED
                job.resumed = job.last_record if job.last_record is not None else job.resumed
                job.progress.step = job.progress.batch_index = 0
                job.progress.started_at = None
                job.progress.preview = None
                if job.recorded:
                    self._record(self._store.requeue, job.number)
                self._enqueue(job, first=True)
            self._lock.notify_all()

    def _finish(self, job: Job, status: JobStatus) -> None:
        job.status = status
        job.finished_at = time.monotonic()
        if job.recorded:
            record = getattr(job.result, "record", None)
            self._record(self._store.finished, job.number, status.value, job.error, record() if callable(record) else None)
        job.task = _done  # let go of what the task held (init images) and of the last preview
        job.progress.preview = None
        job._set_finished()
        self._finished_order.append(job.id)
        while len(self._finished_order) > self._max_finished:
            self._jobs.pop(self._finished_order.popleft(), None)

    def _progress_writer(self, number: int) -> Callable[[Any], None]:
        return lambda progress: self._record(self._store.progress, number, progress)

    def _record(self, write: Callable[..., None], *args: Any) -> None:
        """Write to the store; a failed write (disk full, locked file) is logged, and the
        worker and the job's waiters carry on."""
        try:
            write(*args)
        except Exception:
            log.exception("Could not update the queue file %s", self._store.path if self._store else "")


def _done(job: Job) -> None:
    """What a finished job's task becomes."""
