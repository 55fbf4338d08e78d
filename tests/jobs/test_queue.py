import threading
import time

from modules.jobs.queue import JobQueue, JobStatus


def test_jobs_run_one_at_a_time_in_order():
    q = JobQueue()
    running, order, overlap = [], [], []
    lock = threading.Lock()

    def task(name):
        def run(job):
            with lock:
                running.append(name)
                if len(running) > 1:
                    overlap.append(name)
            time.sleep(0.02)
            with lock:
                running.remove(name)
                order.append(name)
            return name
        return run

    jobs = [q.submit("t", task(i)) for i in range(5)]
    for j in jobs:
        assert j.wait(5)
    assert order == list(range(5)) and not overlap
    assert [j.result for j in jobs] == list(range(5)) and all(j.status is JobStatus.DONE for j in jobs)
    q.shutdown()


def test_a_failing_job_reports_its_error_and_the_worker_keeps_serving():
    q = JobQueue()
    bad = q.submit("t", lambda job: (_ for _ in ()).throw(ValueError("Width: must be a multiple of 8")))
    crash = q.submit("t", lambda job: 1 / 0)
    good = q.submit("t", lambda job: "ok")
    assert good.wait(5)
    assert bad.status is JobStatus.FAILED and bad.error == "Width: must be a multiple of 8"
    assert crash.status is JobStatus.FAILED and "ZeroDivisionError" in crash.error
    assert good.result == "ok"
    q.shutdown()


def test_interrupt_cancels_a_queued_job_and_stops_a_running_one():
    q = JobQueue()
    started = threading.Event()

    def long(job):
        started.set()
        while not job.control.interrupted:
            time.sleep(0.01)
        return "stopped"

    first = q.submit("t", long)
    second = q.submit("t", lambda job: "never")
    assert started.wait(5)
    assert q.interrupt(second.id)
    assert second.status is JobStatus.CANCELLED
    assert q.interrupt(first.id)
    assert first.wait(5) and first.status is JobStatus.INTERRUPTED and first.result == "stopped"
    assert not q.interrupt(first.id)  # already finished
    q.shutdown()
