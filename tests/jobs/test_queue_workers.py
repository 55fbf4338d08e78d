"""The queue with several workers (what Ray workers are to it), without Ray: jobs from several
users run at once and each result reaches its requester; model affinity avoids switches; a
worker that dies re-queues its job once, and a second death fails it with both reasons; a job
no worker can load fails with a message; the in-process worker keeps the jobs Ray cannot take."""

from __future__ import annotations

import threading
import time

from modules.jobs.queue import JobQueue, JobStatus, WorkerLost
from modules.jobs.scheduling import Need, WorkerView
from modules.jobs.workers import LocalWorker, RemoteSpec


class FakeGpu:
    """A worker that holds one checkpoint, switches when a job needs another (counted), and
    takes `seconds` per job. `die_on` names jobs it dies under (once each)."""

    kind = "ray"

    def __init__(self, id: str, checkpoint: str | None = None, can_load=("a.safetensors", "b.safetensors"), seconds: float = 0.05,
                 die_on=()):
        self.id, self.checkpoint, self.can_load, self.seconds = id, checkpoint, frozenset(can_load), seconds
        self.alive, self.switches, self.ran, self.die_on = True, 0, [], set(die_on)
        self.lock = threading.Lock()

    def accepts(self, job):
        return job.remote is not None

    def view(self, busy):
        return WorkerView(self.id, self.checkpoint, None, frozenset(), self.can_load, busy)

    def describe(self):
        return {"id": self.id}

    def run(self, job):
        need = job.remote.need
        tag = job.remote.payload["tag"]
        if tag in self.die_on:
            self.alive = False
            raise WorkerLost(f"{self.id} was killed")
        if need.checkpoint and need.checkpoint != self.checkpoint:
            self.switches += 1
            self.checkpoint = need.checkpoint
        started = time.monotonic()
        time.sleep(self.seconds)
        self.ran.append((job.id, started, time.monotonic()))
        return f"{tag} by {job.user} on {self.id}"


def remote(kind, payload):
    return RemoteSpec(kind, payload, Need(payload["checkpoint"]))


def make_queue(*workers):
    queue = JobQueue(local_worker=True)
    queue.send_generation(remote)
    for w in workers:
        queue.add_worker(w)
    return queue


def submit(queue, tag, checkpoint="a.safetensors", user=""):
    return queue.submit("txt2img", lambda j: "ran locally", user=user, payload={"checkpoint": checkpoint, "tag": tag})


def test_jobs_from_several_users_run_on_both_workers_at_once_and_each_result_reaches_its_requester():
    one, two = FakeGpu("gpu-1", "a.safetensors", seconds=0.3), FakeGpu("gpu-2", "a.safetensors", seconds=0.3)
    queue = make_queue(one, two)
    try:
        jobs = [submit(queue, f"job{i}", user=user) for i in range(3) for user in ("ann", "bob")]
        assert all(job.wait(10) for job in jobs)
        assert all(job.status is JobStatus.DONE for job in jobs)
        for job in jobs:
            assert job.result.startswith(f"{job.remote.payload['tag']} by {job.user} on {job.worker}")
        assert {job.worker for job in jobs} == {"gpu-1", "gpu-2"}
        # the two workers overlapped in time: both were generating at once
        spans = sorted(one.ran + two.ran, key=lambda r: r[1])
        assert any(b[1] < a[2] for a, b in zip(spans, spans[1:]))
    finally:
        queue.shutdown()


def test_fair_order_between_users_holds_with_several_workers():
    gpu = FakeGpu("gpu-1", "a.safetensors", seconds=0.02)
    queue = make_queue()
    try:
        heavy = [submit(queue, f"heavy{i}", user="heavy") for i in range(6)]
        light = submit(queue, "light", user="light")
        assert queue.position(light) == 2  # after the heavy user's first, not after all six
        queue.add_worker(gpu)
        assert light.wait(10) and all(j.wait(10) for j in heavy)
        order = [job_id for job_id, _, _ in gpu.ran]
        assert order.index(light.id) == 1
    finally:
        queue.shutdown()


def test_affinity_jobs_for_two_checkpoints_cause_no_switches_after_warm_up():
    one, two = FakeGpu("gpu-1", "a.safetensors"), FakeGpu("gpu-2", "b.safetensors")
    queue = make_queue(one, two)
    try:
        jobs = [submit(queue, f"{ck}{i}", checkpoint=f"{ck}.safetensors", user=user)
                for i in range(6) for ck, user in (("a", "ann"), ("b", "bob"))]
        assert all(job.wait(10) for job in jobs)
        assert one.switches == 0 and two.switches == 0
        assert {j.worker for j in jobs if j.remote.payload['tag'].startswith("a")} == {"gpu-1"}
        assert {j.worker for j in jobs if j.remote.payload['tag'].startswith("b")} == {"gpu-2"}
    finally:
        queue.shutdown()


def test_a_job_whose_worker_dies_runs_again_elsewhere_once_resuming_from_its_last_record():
    doomed, healthy = FakeGpu("gpu-1", "a.safetensors", die_on={"victim"}), FakeGpu("gpu-2", "b.safetensors")
    queue = make_queue(doomed)
    try:
        job = submit(queue, "victim")
        job.last_record = {"first_seed": 5, "batches": 1, "paths": ["x.png"]}
        deadline = time.monotonic() + 5
        while not job.lost and time.monotonic() < deadline:
            time.sleep(0.01)
        assert job.status is JobStatus.QUEUED and job.lost == ["gpu-1: gpu-1 was killed"]
        assert job.resumed == {"first_seed": 5, "batches": 1, "paths": ["x.png"]}
        assert [w.id for w in queue.workers()] == ["local"]  # the dead worker takes no more jobs
        queue.add_worker(healthy)  # a worker that joins later takes it
        assert job.wait(10) and job.status is JobStatus.DONE and job.worker == "gpu-2"
        assert healthy.switches == 1 and len(healthy.ran) == 1
    finally:
        queue.shutdown()


def test_a_job_that_kills_two_workers_fails_with_both_reasons():
    one = FakeGpu("gpu-1", "a.safetensors", die_on={"poison"})
    two = FakeGpu("gpu-2", "a.safetensors", die_on={"poison"})
    queue = make_queue(one, two)
    try:
        job = submit(queue, "poison")
        assert job.wait(10)
        assert job.status is JobStatus.FAILED
        assert "gpu-1 was killed" in job.error and "gpu-2 was killed" in job.error and "loss of its workers" in job.error
    finally:
        queue.shutdown()


def test_a_checkpoint_no_worker_has_fails_with_a_message_and_the_rest_run():
    gpu = FakeGpu("gpu-1", "a.safetensors", can_load=("a.safetensors",))
    queue = make_queue(gpu)
    try:
        missing = submit(queue, "missing", checkpoint="c.safetensors")
        fine = submit(queue, "fine")
        assert missing.wait(10) and fine.wait(10)
        assert missing.status is JobStatus.FAILED and "No worker can load the checkpoint 'c.safetensors'" in missing.error
        assert fine.status is JobStatus.DONE
    finally:
        queue.shutdown()


def test_the_in_process_worker_keeps_the_jobs_ray_workers_cannot_take():
    gpu = FakeGpu("gpu-1", "a.safetensors")
    queue = make_queue(gpu)
    try:
        extras = queue.submit("extras", lambda j: "upscaled here")
        generation = submit(queue, "gen")
        assert extras.wait(10) and generation.wait(10)
        assert (extras.worker, extras.result) == ("local", "upscaled here")
        assert generation.worker == "gpu-1"
    finally:
        queue.shutdown()


def test_a_lone_in_process_worker_runs_everything_in_submission_order():
    queue = JobQueue()
    try:
        order = []
        jobs = [queue.submit("txt2img", lambda j, i=i: order.append(i), payload={"checkpoint": None}) for i in range(5)]
        assert all(j.wait(5) for j in jobs)
        assert order == [0, 1, 2, 3, 4] and {j.worker for j in jobs} == {"local"}
        assert isinstance(queue.workers()[0], LocalWorker)
    finally:
        queue.shutdown()


def test_without_ray_flags_the_server_does_not_import_ray(tmp_path):
    """Ray costs start-up time and memory: only --ray-address or several --device-id bring it in."""
    import subprocess
    import sys

    from tests.servers import REPO

    code = ("import sys, webui; from modules.options import parse_args; "
            "app = webui.App.create(parse_args(['--data-dir', sys.argv[1], '--device-id', '0'])); "
            "print(app.ray is None, 'ray' in sys.modules, [w.kind for w in app.queue.workers()]); app.queue.shutdown()")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "True False ['local']", out.stderr[-2000:]


def test_no_job_is_called_unrunnable_while_workers_are_still_starting():
    gpu = FakeGpu("gpu-1", "a.safetensors", can_load=("a.safetensors",))
    queue = make_queue(gpu)
    starting = [True]
    queue.starting = lambda: starting[0]
    try:
        job = submit(queue, "for-b", checkpoint="b.safetensors")
        time.sleep(1.5)
        assert job.status is JobStatus.QUEUED  # the worker that has b may still be on its way
        queue.add_worker(FakeGpu("gpu-2", "b.safetensors", can_load=("b.safetensors",)))
        assert job.wait(10) and job.status is JobStatus.DONE and job.worker == "gpu-2"
        starting[0] = False
        missing = submit(queue, "for-c", checkpoint="c.safetensors")
        assert missing.wait(10) and missing.status is JobStatus.FAILED
    finally:
        queue.shutdown()


def test_an_interrupted_job_whose_worker_dies_ends_interrupted_rather_than_running_again():
    class Dies(FakeGpu):
        def run(self, job):
            job.control.interrupt()  # the user pressed Interrupt, then the worker died
            raise WorkerLost("gone")

    queue = make_queue(Dies("gpu-1", "a.safetensors"), FakeGpu("gpu-2", "b.safetensors", seconds=0.01))
    try:
        job = submit(queue, "stopped")
        assert job.wait(10) and job.status is JobStatus.INTERRUPTED and job.worker == "gpu-1"
    finally:
        queue.shutdown()
