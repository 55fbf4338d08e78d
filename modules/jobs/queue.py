"""The job queue: one worker thread, fair between users, recorded on disk.

The GPU (or CPU) can only do one generation at a time, so every request, from the page or
the API, becomes a Job here and waits its turn; model switches are jobs too, so a switch never
pulls the model from under a running generation. Each job has its own progress, interrupt
and skip, so one user's Interrupt button stops only their own job (A1111's is global).

Jobs wait in one lane per user and the worker takes lanes in turn, so one user's hundred
jobs cannot starve another's one. Jobs submitted with a payload are recorded in a JobStore
and rebuilt from it after a restart by the handler registered for their kind.
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

if TYPE_CHECKING:
    from modules.jobs.store import JobStore

# Builds a job's task from its recorded payload (after a restart).
Handler = Callable[[Any], Callable[["Job"], Any]]

log = logging.getLogger(__name__)


class QueueStopped(RuntimeError):
    """The server is stopping: no new jobs."""


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
    """Jobs run one at a time by a daemon worker thread, taking users' lanes in turn. Only the
    methods below are the interface."""

    def __init__(self, max_finished: int = 64, store: "JobStore | None" = None):
        """The newest `max_finished` finished jobs stay in memory with their results (images);
        older ones are answered from the store's record."""
        self._lock = threading.Condition()
        self._lanes: dict[str, deque[Job]] = {}
        self._turns: deque[str] = deque()  # users with waiting jobs, next turn first
        self._jobs: dict[str, Job] = {}
        self._finished_order: deque[str] = deque()
        self._max_finished = max_finished
        self._store = store
        self._handlers: dict[str, Handler] = {}
        self._ids = itertools.count(store.next_number() if store else 1)
        self._current: Job | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="job-worker", daemon=True)
        self._thread.start()

    def register(self, kind: str, handler: Handler) -> None:
        """How to rebuild a recorded job of this kind from its payload."""
        self._handlers[kind] = handler

    def submit(self, kind: str, task: Callable[[Job], Any], *, user: str = "", payload: Any = None) -> Job:
        """Queue a job. With a payload (JSON-able) and a store, it is recorded and survives a
        restart, rebuilt by the handler registered for `kind`."""
        with self._lock:
            if self._stopping:
                raise QueueStopped("The server is stopping and takes no new jobs; try again once it has started.")
            number = next(self._ids)
            job = Job(id=f"task({number})", kind=kind, task=task, user=user, number=number)
            if self._store is not None and payload is not None:
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
            except Exception as exc:  # a record this version cannot read: fail it, keep the rest
                self._store.finished(stored.number, JobStatus.FAILED.value, f"Could not rebuild the job: {exc}")
                continue
            with self._lock:
                job = Job(id=f"task({stored.number})", kind=stored.kind, task=task, user=stored.user, number=stored.number,
                          submitted_at=stored.submitted_at, recorded=True, resumed=stored.progress,
                          _progress_writer=self._progress_writer(stored.number))
                self._enqueue(job)
            restored.append(job)
        if restored:
            log.info("Restored %d queued job(s) from %s", len(restored), self._store.path)
        return restored

    def _enqueue(self, job: Job) -> None:
        self._jobs[job.id] = job
        lane = self._lanes.setdefault(job.user, deque())
        if not lane and job.user not in self._turns:
            self._turns.append(job.user)
        lane.append(job)
        self._lock.notify_all()

    def _take(self) -> Job:
        """The next job: the first of the lane whose turn it is; that lane goes to the back."""
        user = self._turns.popleft()
        lane = self._lanes[user]
        job = lane.popleft()
        if lane:
            self._turns.append(user)
        else:
            del self._lanes[user]
        return job

    def waiting(self) -> list[Job]:
        """Queued jobs in the order they will run."""
        with self._lock:
            lanes = {u: list(q) for u, q in self._lanes.items()}
            turns = deque(self._turns)
        order = []
        while turns:
            user = turns.popleft()
            order.append(lanes[user].pop(0))
            if lanes[user]:
                turns.append(user)
        return order

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

    @property
    def current(self) -> Job | None:
        return self._current

    def pending_count(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._lanes.values())

    def interrupt(self, job_id: str | None = None) -> bool:
        """Stop a job (the running one if no id): a queued job is cancelled, a running one stops at the next step."""
        with self._lock:
            job = self._jobs.get(job_id) if job_id else self._current
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
            job = self._jobs.get(job_id) if job_id else self._current
            if job is None or job.status is not JobStatus.RUNNING:
                return False
            job.control.skip()
            return True

    def stop(self) -> None:
        """Start no more jobs and cut off the running one, without waiting (safe in a signal
        handler). Recorded jobs, the cut-off one included, stay queued in the store for the
        next start; whoever awaits a waiting job is woken to say so (see done_future)."""
        with self._lock:
            self._stopping = True
            if self._current is not None:
                self._current.control.interrupt()
            waiting = [job for lane in self._lanes.values() for job in lane]
            self._lock.notify_all()
        for job in waiting:
            job._release_waiters()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop (see `stop`) and wait for the worker to let go of the running job."""
        self.stop()
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._turns and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                job = self._take()
                job.status = JobStatus.RUNNING
                job.progress.started_at = time.monotonic()
                self._current = job
            if job.recorded:
                self._record(self._store.started, job.number)
            status = JobStatus.DONE
            try:
                job.result = job.task(job)
                if job.control.interrupted:
                    status = JobStatus.INTERRUPTED
            except ValueError as exc:  # a readable problem with the request or the model file
                job.error = str(exc)
                status = JobStatus.FAILED
            except (Exception, SystemExit) as exc:  # keep serving whatever a job does (sys.exit() in add-on code too)
                log.error("Job %s failed:\n%s", job.id, traceback.format_exc())
                job.error = f"{type(exc).__name__}: {exc}"
                status = JobStatus.FAILED
            with self._lock:
                if self._stopping and status is JobStatus.INTERRUPTED and job.recorded:
                    self._current = None  # cut off by the shutdown: queued again in the store, for the next start
                    self._record(self._store.requeue, job.number)
                    job._set_finished()
                    return
                self._current = None
                self._finish(job, status)

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
