"""The small interface between the queue and whoever runs its jobs.

The queue keeps the record, the lanes and the fairness; a worker only runs what it is handed.
`LocalWorker` runs a job's task in this process (the only worker without Ray); a Ray actor per
device is another (modules/jobs/ray_pool.py), taking the jobs that carry a `RemoteSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from modules.jobs.scheduling import Need, WorkerView

if TYPE_CHECKING:
    from modules.jobs.queue import Job


@dataclass(frozen=True)
class RemoteSpec:
    """What a Ray worker needs to run a job: its kind, its payload (the same JSON a recorded job
    is rebuilt from after a restart) and the model it needs, for the scheduler's affinity."""

    kind: str
    payload: Any
    need: Need


class Worker(Protocol):
    id: str
    kind: str  # workers of one kind compete for the same jobs ("local", "ray")
    alive: bool

    def accepts(self, job: "Job") -> bool:
        """Whether this worker can run `job` at all."""

    def view(self, busy: bool) -> WorkerView:
        """What it holds now, for the scheduler (cheap: no remote calls)."""

    def run(self, job: "Job") -> Any:
        """Run `job` and return its result; raises WorkerLost when the worker dies under it."""

    def describe(self) -> dict:
        """What GET /sdapi/v1/workers shows of it."""


class LocalWorker:
    """Runs jobs in this process, on the queue's thread. With Ray workers present it keeps the
    jobs they cannot take (Extras, Interrogate, scripts' own work, always-on extension scripts)."""

    kind = "local"
    alive = True

    def __init__(self, id: str = "local"):
        self.id = id
        self.takes_remote = True  # False once Ray workers take the jobs that carry a RemoteSpec

    def accepts(self, job: "Job") -> bool:
        return self.takes_remote or job.remote is None

    def view(self, busy: bool) -> WorkerView:
        return WorkerView(self.id, busy=busy)

    def run(self, job: "Job") -> Any:
        return job.task(job)

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "takes_generation": self.takes_remote}
