#!/usr/bin/env python
"""A discrete-event simulation of the studio's queue on many GPUs, driven by the scheduling
policy the queue itself uses (modules/jobs/scheduling.py), to see what checkpoint affinity buys
and what it costs fairness before a cluster exists. Standard library only: no torch, no Ray.

Workers hold one checkpoint each; loading another costs seconds to a minute (by family), a VAE
or LoRA change a little. Users submit jobs at different rates (one heavy user, many light ones)
at about 95 % of the workers' generating capacity for a simulated hour, so queues form. The
waiting jobs are kept as the queue keeps them: one lane per user, lanes taking turns.

Three policies run on the very same jobs:
  ideal     the head of the fair order, and switches cost nothing: the fair share each user is
            measured against (no real scheduler can beat its throughput).
  no-aff.   the head of the fair order, paying every switch (no affinity).
  affinity  scheduling.pick, paying every switch.

Idle workers are offered the waiting jobs (longest idle first) at every arrival and completion;
a worker that pick leaves without a job tries again at the next one. Workers start empty.

It prints, for 8, 32 and 128 GPUs:
  busy      the fraction of worker-time spent generating out of the time that was not "idle
            with nothing to take": generating / (generating + loading + idle while jobs wait).
            The ideal scheduler scores 1.00; goal >= 0.90 with affinity (exit status 1 if not).
            Below full load it is pessimistic: a switch made by a worker that had nothing
            else to do counts as lost time though it delays no one.
  ckpt, v+l, idle  the rest of that time: loading checkpoints, loading VAEs and LoRAs, idle
            while jobs wait (pick declined them all).
  sw/h      checkpoint switches per hour (a worker replacing one checkpoint by another; the
            first load of an empty worker is not a switch, though its time is paid), all GPUs.
  wait      mean wait (submission to start) over all jobs.
  worst     the user whose mean wait exceeds their fair share (their mean wait under "ideal")
            by the most: mean and p95 wait, and that fair share.
  end       when the last job finished (arrivals stop after --minutes).

Run from the repository root:  venv/bin/python bench/ray_scheduler_sim.py [--quick] [--seed N]
[--gpus 8,32,128] [--minutes 60] [--load 0.95] [--checkpoints 8] [--sd15-switch 20]
[--sdxl-switch 40] [--vae-switch 1] [--lora-load 1]. --quick: 20 minutes, 8 and 32 GPUs.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modules.jobs.scheduling import Need, WorkerView, pick, unrunnable  # noqa: E402

POLICIES = ("ideal", "no-aff.", "affinity")
GOAL = 0.9


@dataclass(frozen=True)
class Checkpoint:
    name: str
    switch_s: float  # loading it onto a worker that holds another (or none)
    job_s: tuple[float, float]  # a single job's generating time, uniform in this range


@dataclass(frozen=True)
class SimJob:
    number: int
    user: str
    arrival: float
    length: float  # seconds generating, once the model is in place
    need: Need


@dataclass(frozen=True)
class Costs:
    """Seconds a worker spends before generating: a checkpoint's own load cost, then a VAE
    change, then each LoRA it did not have (a job without LoRAs just unloads them)."""

    switch_s: dict[str, float]
    vae_s: float = 1.0
    lora_s: float = 1.0
    free: bool = False  # the ideal scheduler: nothing costs anything


@dataclass
class Result:
    policy: str
    workers: int
    waits: dict[int, float] = field(default_factory=dict)  # job number -> seconds from arrival to start
    users: dict[int, str] = field(default_factory=dict)
    switches: list[tuple[float, int, str, str]] = field(default_factory=list)  # (time, worker, from, to)
    loads: int = 0  # every checkpoint load, the first ones included
    generating_s: float = 0.0
    loading_s: float = 0.0  # all loads: checkpoints, VAEs and LoRAs
    checkpoint_s: float = 0.0  # the checkpoints' part of it
    idle_waiting_s: float = 0.0  # worker-seconds idle while a job it could run was waiting
    makespan: float = 0.0
    unrunnable: list[int] = field(default_factory=list)  # jobs failed at submission: no worker can load their checkpoint

    def share(self, seconds: float) -> float:
        """`seconds` as a fraction of the worker-time that was not idle with nothing to take."""
        spent = self.generating_s + self.loading_s + self.idle_waiting_s
        return seconds / spent if spent else 0.0

    @property
    def busy(self) -> float:
        return self.share(self.generating_s) if self.generating_s else 1.0

    def switches_per_hour(self) -> float:
        return len(self.switches) * 3600.0 / self.makespan if self.makespan else 0.0

    def user_waits(self) -> dict[str, list[float]]:
        by_user: dict[str, list[float]] = {}
        for number, wait in self.waits.items():
            by_user.setdefault(self.users[number], []).append(wait)
        return by_user


def default_checkpoints(count: int, sd15_switch: float = 20.0, sdxl_switch: float = 40.0) -> list[Checkpoint]:
    """`count` checkpoints, about a third of them SDXL (slower to load and to run), listed from
    the most to the least popular with the two families interleaved."""
    out = []
    for rank in range(count):
        if rank % 3 == 1:
            out.append(Checkpoint(f"sdxl-{rank}", sdxl_switch, (8.0, 30.0)))
        else:
            out.append(Checkpoint(f"sd15-{rank}", sd15_switch, (3.0, 12.0)))
    return out


def _job_shape(rng: random.Random, checkpoint: Checkpoint) -> tuple[float, Need]:
    length = rng.uniform(*checkpoint.job_s)
    if rng.random() < 0.1:  # a batch: several pictures in one job
        length *= rng.randint(3, 6)
    vae = rng.choice(("vae-ft-mse", "vae-alt")) if rng.random() < 0.25 else None
    loras = frozenset(rng.sample([f"lora-{i}" for i in range(6)], rng.randint(1, 2))) if rng.random() < 0.3 else frozenset()
    return length, Need(checkpoint=checkpoint.name, vae=vae, loras=loras)


def make_workload(workers: int, *, seed: int, minutes: float = 60.0, load: float = 0.95,
                  checkpoints: list[Checkpoint], heavy_share: float = 0.3) -> list[SimJob]:
    """Poisson arrivals for one heavy user (`heavy_share` of the jobs) and max(8, workers/2)
    light users at different rates, over `minutes`, at `load` times the workers' generating
    capacity. Each user keeps to a favourite checkpoint 60 % of the time, else follows the
    studio's skewed popularity (weight 1/rank^1.2)."""
    rng = random.Random(seed)
    popularity = [1.0 / (rank + 1) ** 1.2 for rank in range(len(checkpoints))]
    light = max(8, workers // 2)
    weights = [rng.uniform(0.3, 2.0) for _ in range(light)]
    shares = {"heavy": heavy_share} | {f"user{i:02d}": (1 - heavy_share) * w / sum(weights) for i, w in enumerate(weights)}
    favourite = {user: rng.choices(checkpoints, popularity)[0] for user in shares}

    def draw(user: str) -> tuple[float, Need]:
        checkpoint = favourite[user] if rng.random() < 0.6 else rng.choices(checkpoints, popularity)[0]
        return _job_shape(rng, checkpoint)

    users = list(shares)
    mean_length = statistics.fmean(draw(rng.choices(users, list(shares.values()))[0])[0] for _ in range(20000))
    rate = load * workers / mean_length  # jobs per second, all users together
    horizon = minutes * 60.0
    jobs = []
    for user in users:
        t = rng.expovariate(rate * shares[user])
        while t < horizon:
            length, need = draw(user)
            jobs.append((t, user, length, need))
            t += rng.expovariate(rate * shares[user])
    jobs.sort(key=lambda j: (j[0], j[1]))
    return [SimJob(number, user, t, length, need) for number, (t, user, length, need) in enumerate(jobs)]


class _FairLanes:
    """The queue's waiting jobs as modules/jobs/queue.py keeps them: a lane per user and a turn
    order of users. Taking the first job of the lane whose turn it is sends that lane to the
    back (JobQueue._take). A job taken out of turn (pick chose a later one, for a model some
    worker holds) leaves the turns as they are, as JobQueue._take does; with
    `out_of_turn_to_back` its user goes to the back instead, as if the turn had been spent."""

    def __init__(self, out_of_turn_to_back: bool = False):
        self.lanes: dict[str, deque[SimJob]] = {}
        self.turns: deque[str] = deque()
        self.count = 0
        self.out_of_turn_to_back = out_of_turn_to_back

    def add(self, job: SimJob) -> None:
        lane = self.lanes.setdefault(job.user, deque())
        if not lane:
            self.turns.append(job.user)
        lane.append(job)
        self.count += 1

    def order(self) -> list[SimJob]:
        """JobQueue.waiting(): the first job of each lane in turn, repeatedly."""
        lanes = [iter(self.lanes[user]) for user in self.turns]
        out = []
        while lanes:
            still = []
            for lane in lanes:
                job = next(lane, None)
                if job is not None:
                    out.append(job)
                    still.append(lane)
            lanes = still
        return out

    def head(self) -> SimJob:
        return self.lanes[self.turns[0]][0]

    def take(self, job: SimJob) -> None:
        lane = self.lanes[job.user]
        at_turn = self.turns[0] == job.user and lane[0] is job
        lane.remove(job)
        self.count -= 1
        if not lane:
            del self.lanes[job.user]
            self.turns.remove(job.user)
        elif at_turn:
            self.turns.rotate(-1)
        elif self.out_of_turn_to_back:
            self.turns.remove(job.user)
            self.turns.append(job.user)


class _Worker:
    __slots__ = ("index", "checkpoint", "vae", "loras", "can_load", "busy", "view")

    def __init__(self, index: int, can_load: frozenset[str] | None):
        self.index = index
        self.checkpoint: str | None = None
        self.vae: str | None = None
        self.loras: frozenset[str] = frozenset()
        self.can_load = can_load
        self.busy = False
        self.refresh()

    def refresh(self) -> None:
        self.view = WorkerView(id=f"gpu{self.index}", checkpoint=self.checkpoint, vae=self.vae, loras=self.loras,
                               can_load=self.can_load, busy=self.busy)


def simulate(jobs: list[SimJob], policy: str, costs: Costs, workers: int = 0,
             can_load: list[frozenset[str] | None] | None = None, out_of_turn_to_back: bool = False) -> Result:
    """Run `jobs` (sorted by arrival) on `workers` empty workers (or one per `can_load` entry,
    each limited to those checkpoints) under `policy`; every job runs to the end."""
    can_load = can_load if can_load is not None else [None] * workers
    pool = [_Worker(i, c) for i, c in enumerate(can_load)]
    views = [w.view for w in pool]
    result = Result(policy, len(pool))
    lanes = _FairLanes(out_of_turn_to_back)
    idle: list[_Worker] = list(pool)  # longest idle first
    events: list[tuple[float, int, int]] = []  # (time, worker index, job number) completions
    arrivals = iter(jobs)
    upcoming = next(arrivals, None)
    now = 0.0

    def start(worker: _Worker, job: SimJob) -> None:
        need = job.need
        cost = 0.0
        if need.checkpoint is not None and need.checkpoint != worker.checkpoint:
            if worker.checkpoint is not None:
                result.switches.append((now, worker.index, worker.checkpoint, need.checkpoint))
            result.loads += 1
            cost += costs.switch_s[need.checkpoint]
            if not costs.free:
                result.checkpoint_s += costs.switch_s[need.checkpoint]
            worker.checkpoint, worker.vae, worker.loras = need.checkpoint, None, frozenset()
        if need.vae != worker.vae:
            cost += costs.vae_s
        cost += costs.lora_s * len(need.loras - worker.loras)
        if costs.free:
            cost = 0.0
        worker.vae, worker.loras, worker.busy = need.vae, need.loras, True
        worker.refresh()
        views[worker.index] = worker.view
        result.loading_s += cost
        result.generating_s += job.length
        result.waits[job.number] = now - job.arrival
        result.users[job.number] = job.user
        heapq.heappush(events, (now + cost + job.length, worker.index, job.number))

    def dispatch() -> None:
        """Offer the waiting jobs to the idle workers until none takes one."""
        taken = True
        while taken and idle and lanes.count:
            taken = False
            order = None
            refused: set[tuple] = set()  # workers alike in all pick reads get the same answer
            for worker in list(idle):
                if not lanes.count:
                    return
                if policy == "affinity":
                    alike = (worker.checkpoint, worker.vae, worker.loras, worker.can_load)
                    if alike in refused:
                        continue
                    order = order or lanes.order()
                    others = views[:worker.index] + views[worker.index + 1:]
                    index = pick(worker.view, [j.need for j in order], others)
                    if index is None:
                        refused.add(alike)
                        continue
                    job = order[index]
                    order = None
                    refused.clear()
                else:
                    job = lanes.head()
                lanes.take(job)
                idle.remove(worker)
                start(worker, job)
                taken = True

    while upcoming is not None or events:
        next_time = min(upcoming.arrival if upcoming is not None else float("inf"), events[0][0] if events else float("inf"))
        if lanes.count and idle:
            result.idle_waiting_s += (next_time - now) * len(idle)
        now = next_time
        while events and events[0][0] == now:
            _, index, _ = heapq.heappop(events)
            worker = pool[index]
            worker.busy = False
            worker.refresh()
            views[index] = worker.view
            idle.append(worker)
        while upcoming is not None and upcoming.arrival == now:
            if unrunnable(upcoming.need, views):
                result.unrunnable.append(upcoming.number)  # the queue fails it with a message
            else:
                lanes.add(upcoming)
            upcoming = next(arrivals, None)
        dispatch()
    result.makespan = now
    return result


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def worst_user(result: Result, ideal: Result) -> tuple[str, float, float, float]:
    """(user, mean wait, p95 wait, fair share): the user whose mean wait exceeds their mean wait
    under the ideal fair scheduler by the most."""
    fair = {u: statistics.fmean(w) for u, w in ideal.user_waits().items()}
    rows = [(statistics.fmean(w) - fair[u], u, statistics.fmean(w), _p95(w)) for u, w in result.user_waits().items()]
    _, user, mean, p95 = max(rows)
    return user, mean, p95, fair[user]


def run_size(gpus: int, args: argparse.Namespace) -> list[tuple[str, Result, tuple]]:
    """The three policies on one workload for `gpus` workers, each with its worst user."""
    checkpoints = default_checkpoints(args.checkpoints, args.sd15_switch, args.sdxl_switch)
    jobs = make_workload(gpus, seed=args.seed * 1000 + gpus, minutes=args.minutes, load=args.load, checkpoints=checkpoints)
    switch_s = {c.name: c.switch_s for c in checkpoints}
    results = {p: simulate(jobs, p, Costs(switch_s, args.vae_switch, args.lora_load, free=(p == "ideal")), workers=gpus,
                           out_of_turn_to_back=args.out_of_turn_to_back) for p in POLICIES}
    return [(p, r, worst_user(r, results["ideal"])) for p, r in results.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 simulated minutes, 8 and 32 GPUs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gpus", default=None, help="comma-separated worker counts (default 8,32,128)")
    parser.add_argument("--minutes", type=float, default=None, help="simulated minutes of arrivals (default 60)")
    parser.add_argument("--load", type=float, default=0.95, help="offered work over the workers' generating capacity")
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--sd15-switch", type=float, default=20.0, help="seconds to load an SD1.5 checkpoint")
    parser.add_argument("--sdxl-switch", type=float, default=40.0, help="seconds to load an SDXL checkpoint")
    parser.add_argument("--vae-switch", type=float, default=1.0, help="seconds to change the VAE")
    parser.add_argument("--lora-load", type=float, default=1.0, help="seconds to load one LoRA")
    parser.add_argument("--out-of-turn-to-back", action="store_true",
                        help="a job taken out of turn sends its user to the back of the turns (JobQueue leaves them)")
    args = parser.parse_args(argv)
    args.minutes = args.minutes or (20.0 if args.quick else 60.0)
    sizes = [int(g) for g in (args.gpus or ("8,32" if args.quick else "8,32,128")).split(",")]

    began = time.perf_counter()
    print(f"seed {args.seed}: {args.minutes:g} min of arrivals at {args.load:g} of the generating capacity, "
          f"{args.checkpoints} checkpoints; loads: SD1.5 {args.sd15_switch:g} s, SDXL {args.sdxl_switch:g} s, "
          f"VAE {args.vae_switch:g} s, LoRA {args.lora_load:g} s each")
    print(f"{'GPUs':>4} {'policy':<8} {'jobs':>6} {'busy':>5} {'ckpt':>5} {'v+l':>5} {'idle':>5} {'sw/h':>6} {'wait':>6} "
          f"{'worst user':>10} {'mean':>6} {'p95':>6} {'fair':>6} {'end':>6}")
    failed = []
    for gpus in sizes:
        for policy, result, (user, mean, p95, fair) in run_size(gpus, args):
            extra = result.loading_s - result.checkpoint_s
            print(f"{gpus:>4} {policy:<8} {len(result.waits):>6} {result.busy:>5.2f} {result.share(result.checkpoint_s):>5.2f} "
                  f"{result.share(extra):>5.2f} {result.share(result.idle_waiting_s):>5.2f} {result.switches_per_hour():>6.0f} "
                  f"{statistics.fmean(result.waits.values()):>5.0f}s {user:>10} {mean:>5.0f}s {p95:>5.0f}s {fair:>5.0f}s "
                  f"{result.makespan / 60:>5.1f}m")
            if policy == "affinity" and result.busy < GOAL:
                failed.append(f"{gpus} GPUs: affinity busy {result.busy:.2f} < {GOAL}")
    print("busy = generating / (generating + loading + idle while a job waits), goal >= 0.9 with affinity; ckpt, v+l, idle:\n"
          "  the rest of that time spent loading checkpoints, loading VAEs and LoRAs, idle while jobs wait. sw/h: checkpoint\n"
          "  switches per hour, all GPUs (free under ideal). wait: mean seconds from submission to start, all jobs. worst\n"
          "  user: whose mean wait most exceeds their fair share, i.e. their mean wait under ideal (fair order, loads free).\n"
          f"  end: last job done (arrivals stop at {args.minutes:g} min). {time.perf_counter() - began:.1f} s")
    for line in failed:
        print("GOAL MISSED:", line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
