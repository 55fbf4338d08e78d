"""The scheduler simulation (bench/ray_scheduler_sim.py) driving modules/jobs/scheduling.py:
affinity saves model switches, every user's jobs finish, warm workers keep their checkpoints,
and a job no worker can load is failed at once instead of waiting forever."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from modules.jobs.scheduling import Need, WorkerView, unrunnable

SIM_PATH = Path(__file__).resolve().parents[2] / "bench" / "ray_scheduler_sim.py"


@pytest.fixture(scope="module")
def sim():
    spec = importlib.util.spec_from_file_location("ray_scheduler_sim", SIM_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def quick_run(sim, gpus=8, minutes=10.0, seed=7):
    checkpoints = sim.default_checkpoints(8)
    jobs = sim.make_workload(gpus, seed=seed, minutes=minutes, load=0.95, checkpoints=checkpoints)
    switch_s = {c.name: c.switch_s for c in checkpoints}
    return jobs, {p: sim.simulate(jobs, p, sim.Costs(switch_s, free=(p == "ideal")), workers=gpus) for p in sim.POLICIES}


def test_affinity_switches_far_less_and_every_users_jobs_finish(sim):
    jobs, results = quick_run(sim)
    assert len(jobs) > 200 and len({j.user for j in jobs}) >= 9
    affinity, baseline = results["affinity"], results["no-aff."]
    assert len(affinity.switches) * 3 < len(baseline.switches)
    assert affinity.busy > baseline.busy + 0.2
    for result in results.values():  # nobody starves: each user's every job ran
        assert sorted(result.waits) == [j.number for j in jobs]
        assert {result.users[j.number] for j in jobs} == {j.user for j in jobs}
        assert not result.unrunnable


def test_same_seed_same_run(sim):
    first_jobs, first = quick_run(sim, minutes=5.0, seed=3)
    again_jobs, again = quick_run(sim, minutes=5.0, seed=3)
    assert first_jobs == again_jobs
    assert first["affinity"].waits == again["affinity"].waits
    assert first["affinity"].switches == again["affinity"].switches
    other_jobs, _ = quick_run(sim, minutes=5.0, seed=4)
    assert other_jobs != first_jobs


def alternating_jobs(sim, count=80, every=10.0):
    """Checkpoints A and B by turns, one job every `every` seconds from two users, of uneven
    lengths (3-11 s) so the two workers finish out of step."""
    return [sim.SimJob(i, f"user{i % 3 % 2}", i * every, 3.0 + (7 * i) % 9, Need(checkpoint="AB"[i % 2]))
            for i in range(count)]


def test_two_warm_workers_keep_their_checkpoints(sim):
    jobs = alternating_jobs(sim)
    costs = sim.Costs({"A": 20.0, "B": 40.0})
    affinity = sim.simulate(jobs, "affinity", costs, workers=2)
    assert affinity.loads == 2  # each worker loaded one checkpoint once
    assert affinity.switches == []
    assert sorted(affinity.waits) == [j.number for j in jobs]
    baseline = sim.simulate(jobs, "no-aff.", costs, workers=2)
    assert len(baseline.switches) >= 5  # without affinity the same jobs do switch


def test_job_no_worker_can_load_is_reported_unrunnable(sim):
    workers = [WorkerView("gpu0", can_load=frozenset({"A"})), WorkerView("gpu1", can_load=frozenset({"A", "B"}))]
    assert unrunnable(Need(checkpoint="Z"), workers)
    assert not unrunnable(Need(checkpoint="B"), workers)
    assert not unrunnable(Need(checkpoint="Z"), workers + [WorkerView("gpu2")])  # gpu2 has not said what it holds
    jobs = [sim.SimJob(i, "u", float(i), 5.0, Need(checkpoint=c)) for i, c in enumerate("AZBA")]
    result = sim.simulate(jobs, "affinity", sim.Costs({"A": 20.0, "B": 20.0}),
                          can_load=[frozenset({"A"}), frozenset({"A", "B"})])
    assert result.unrunnable == [1]
    assert sorted(result.waits) == [0, 2, 3]


def test_lanes_take_turns_as_the_queue_does(sim):
    lanes = sim._FairLanes()
    jobs = [sim.SimJob(i, user, float(i), 5.0, Need(checkpoint=c)) for i, (user, c) in enumerate(
        [("a", "A"), ("a", "B"), ("b", "B"), ("c", "A")])]
    for job in jobs:
        lanes.add(job)
    assert [j.number for j in lanes.order()] == [0, 2, 3, 1]  # JobQueue.waiting(): lanes in turn
    lanes.take(jobs[2])  # b's job, taken out of turn by a worker holding B: a and c keep their turns
    assert [j.number for j in lanes.order()] == [0, 3, 1]
    lanes.take(jobs[0])  # a's turn: a goes behind c
    assert [j.number for j in lanes.order()] == [3, 1]
    spent = sim._FairLanes(out_of_turn_to_back=True)
    for job in jobs:
        spent.add(job)
    spent.take(jobs[1])  # a's second job out of turn: here a's turn is spent, a goes behind b and c
    assert [j.number for j in spent.order()] == [2, 3, 0]
