"""Which waiting job an idle worker takes: fairness between users first, then model affinity.

Pure functions over small views of the workers and the waiting jobs, so the queue, the tests
and the scheduler simulation (bench/ray_scheduler_sim.py) run the very same policy. Loading a
checkpoint costs seconds to a minute, so a worker prefers the jobs for the model it holds, and
switches only when no other worker holding the wanted model could take the job soon.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

# A worker switches to a model other workers hold only when that model's waiting jobs exceed
# this many per holder: below it, the holders clear them sooner than a switch would. In the
# simulation (bench/ray_scheduler_sim.py) 2 made two workers ping-pong between two models when
# jobs came faster than a load; 3 switched least at 128 GPUs and kept the worst user's wait lowest.
BACKLOG_PER_HOLDER = 3


@dataclass(frozen=True)
class Need:
    """What a job needs from a worker: a checkpoint (None: any), and the VAE and LoRAs it would
    rather find already loaded."""

    checkpoint: str | None = None
    vae: str | None = None
    loras: frozenset[str] = frozenset()


@dataclass(frozen=True)
class WorkerView:
    id: str
    checkpoint: str | None = None  # loaded now
    vae: str | None = None
    loras: frozenset[str] = frozenset()
    can_load: frozenset[str] | None = None  # checkpoints in its models folder; None: not known yet (any)
    busy: bool = False

    def can_run(self, need: Need) -> bool:
        return need.checkpoint is None or self.can_load is None or need.checkpoint in self.can_load

    def score(self, need: Need) -> int:
        """How much of the job's model is already in place: the checkpoint counts most."""
        if need.checkpoint is not None and need.checkpoint != self.checkpoint:
            return 0
        return 4 + 2 * (need.vae == self.vae) + len(need.loras & self.loras)


def unrunnable(need: Need, workers: Sequence[WorkerView]) -> bool:
    """No worker can load the job's checkpoint (there are workers, and all have said what they hold)."""
    return bool(workers) and not any(w.can_run(need) for w in workers)


def pick(worker: WorkerView, waiting: Sequence[Need], others: Sequence[WorkerView]) -> int | None:
    """The index in `waiting` (the fair order: users' lanes in turn) of the job `worker` takes
    now, or None to leave them all to other workers.

    1. The first job whose checkpoint it holds, unless another idle worker fits it better
       (the same checkpoint with the job's VAE or LoRAs too).
    2. Else the first job whose checkpoint no other worker holds (a switch is unavoidable).
    3. Else the first job whose checkpoint's holders are all busy with a backlog of more than
       BACKLOG_PER_HOLDER waiting jobs each: a switch then shortens the wait.
    """
    runnable = [i for i, need in enumerate(waiting) if worker.can_run(need)]
    idle_others = [w for w in others if not w.busy]
    for i in runnable:
        need = waiting[i]
        score = worker.score(need)
        if score and all(w.score(need) <= score or not w.can_run(need) for w in idle_others):
            return i
    holders: dict[str | None, list[WorkerView]] = {}
    for w in others:
        holders.setdefault(w.checkpoint, []).append(w)
    for i in runnable:
        need = waiting[i]
        if need.checkpoint is None or need.checkpoint not in holders:
            return i
    backlog = Counter(need.checkpoint for need in waiting)
    for i in runnable:
        need = waiting[i]
        held_by = holders[need.checkpoint]
        if all(w.busy for w in held_by) and backlog[need.checkpoint] > BACKLOG_PER_HOLDER * len(held_by):
            return i
    return None
