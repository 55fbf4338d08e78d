"""An in-process job queue with one worker thread.

The GPU (or CPU) can only do one generation at a time, so every request, from the page or
the API, becomes a Job here and waits its turn; model switches are jobs too, so a switch never
pulls the model from under a running generation. Each job has its own progress, interrupt
and skip, so one user's Interrupt button stops only their own job (A1111's is global).
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from modules.generation.control import RunControl, StepInfo

log = logging.getLogger(__name__)


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

    def __post_init__(self) -> None:
        self.control.on_step = self._on_step

    def _on_step(self, info: StepInfo) -> None:
        p = self.progress
        p.step, p.steps, p.batch_index, p.batch_count = info.step, info.steps, info.batch_index, info.batch_count

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)

    @property
    def run_seconds(self) -> float | None:
        started = self.progress.started_at
        return None if started is None or self.finished_at is None else self.finished_at - started


class JobQueue:
    """FIFO of jobs run one at a time by a daemon worker thread. Only the methods below are
    the interface; a persistent implementation can replace this one behind them."""

    def __init__(self, max_finished: int = 200):
        self._lock = threading.Condition()
        self._pending: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._finished_order: deque[str] = deque()
        self._max_finished = max_finished
        self._ids = itertools.count(1)
        self._current: Job | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="job-worker", daemon=True)
        self._thread.start()

    def submit(self, kind: str, task: Callable[[Job], Any]) -> Job:
        with self._lock:
            job = Job(id=f"task({next(self._ids)})", kind=kind, task=task)
            self._jobs[job.id] = job
            self._pending.append(job)
            self._lock.notify_all()
            return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    @property
    def current(self) -> Job | None:
        return self._current

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def interrupt(self, job_id: str | None = None) -> bool:
        """Stop a job (the running one if no id): a queued job is cancelled, a running one stops at the next step."""
        with self._lock:
            job = self._jobs.get(job_id) if job_id else self._current
            if job is None or job.status in FINISHED:
                return False
            if job.status is JobStatus.QUEUED:
                self._pending.remove(job)
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

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
            if self._current is not None:
                self._current.control.interrupt()
            self._lock.notify_all()
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                job = self._pending.popleft()
                job.status = JobStatus.RUNNING
                job.progress.started_at = time.monotonic()
                self._current = job
            status = JobStatus.DONE
            try:
                job.result = job.task(job)
                if job.control.interrupted:
                    status = JobStatus.INTERRUPTED
            except ValueError as exc:  # a readable problem with the request or the model file
                job.error = str(exc)
                status = JobStatus.FAILED
            except Exception as exc:  # keep serving whatever a job does
                log.error("Job %s failed:\n%s", job.id, traceback.format_exc())
                job.error = f"{type(exc).__name__}: {exc}"
                status = JobStatus.FAILED
            with self._lock:
                self._current = None
                self._finish(job, status)

    def _finish(self, job: Job, status: JobStatus) -> None:
        job.status = status
        job.finished_at = time.monotonic()
        job.finished.set()
        self._finished_order.append(job.id)
        while len(self._finished_order) > self._max_finished:
            self._jobs.pop(self._finished_order.popleft(), None)
