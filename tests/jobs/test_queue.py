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


def blocker():
    """A task that holds the worker until released, so tests can line jobs up behind it."""
    gate = threading.Event()
    started = threading.Event()

    def run(job):
        started.set()
        while not gate.wait(0.01):
            if job.control.interrupted:
                return "interrupted"
        return "released"

    return run, gate, started


def test_users_take_turns_so_a_big_batch_cannot_starve_a_single_job():
    q = JobQueue()
    hold, gate, started = blocker()
    q.submit("t", hold, user="alice")
    assert started.wait(5)
    order = []
    alice = [q.submit("t", lambda j, i=i: order.append(f"alice{i}"), user="alice") for i in range(4)]
    bob = q.submit("t", lambda j: order.append("bob"), user="bob")
    carol = q.submit("t", lambda j: order.append("carol"), user="carol")
    assert [j.user for j in q.waiting()] == ["alice", "bob", "carol", "alice", "alice", "alice"]
    assert (q.position(alice[0]), q.position(bob), q.position(carol), q.position(alice[3])) == (1, 2, 3, 6)
    assert q.interrupt(alice[1].id) and alice[1].status is JobStatus.CANCELLED
    gate.set()
    assert all(j.wait(5) for j in (*alice, bob, carol))
    assert order == ["alice0", "bob", "carol", "alice2", "alice3"]
    assert q.position(bob) is None
    q.shutdown()


def test_recorded_jobs_survive_a_restart(tmp_path):
    from modules.jobs.store import JobStore

    ran: list[str] = []

    def handler(payload):
        return lambda job: ran.append(payload["name"]) or payload["name"]

    first = JobQueue(store=JobStore(tmp_path / "q.sqlite3"))
    first.register("echo", handler)
    hold, gate, started = blocker()
    running = first.submit("echo", hold, payload={"name": "cut-off"})
    assert started.wait(5)
    waiting = [first.submit("echo", handler({"name": f"job{i}"}), user=f"u{i % 2}", payload={"name": f"job{i}"}) for i in range(3)]
    first.submit("load_model", lambda j: None)  # no payload: not recorded
    first.shutdown()  # the process ends: one job cut off, three waiting
    assert ran == []

    second = JobQueue(store=JobStore(tmp_path / "q.sqlite3"))
    second.register("echo", handler)
    restored = second.restore()
    assert [j.id for j in restored] == [running.id, *(j.id for j in waiting)]  # same ids, in submission order
    assert all(j.wait(5) for j in restored)
    assert sorted(ran) == ["cut-off", "job0", "job1", "job2"]
    assert second.stored(waiting[0].number).status == "done"
    fresh = second.submit("echo", handler({"name": "new"}), payload={"name": "new"})
    assert fresh.number > waiting[-1].number  # numbering goes on after a restart
    assert fresh.wait(5)
    second.shutdown()
    assert JobQueue(store=JobStore(tmp_path / "q.sqlite3")).restore() == []  # nothing runs twice


def test_a_job_that_crashed_the_server_twice_is_failed_with_a_reason(tmp_path):
    """A job found 'running' after a restart died with the process: it runs once more, and
    if the process dies under it again it is failed, so a job that kills the server cannot
    kill it on every start."""
    from modules.jobs.store import JobStore

    path = tmp_path / "q.sqlite3"
    store = JobStore(path)
    store.add(1, "hang", "", {})
    store.started(1)  # ...and the process died
    assert [j.number for j in JobStore(path).recover()] == [1]
    store.started(1)  # the retry died too
    q = JobQueue(store=JobStore(path))
    q.register("hang", lambda payload: lambda job: None)
    assert q.restore() == []
    record = q.stored(1)
    assert record.status == "failed" and "stopped while this job was running" in record.error
    q.shutdown()


def test_clean_stops_do_not_use_up_a_jobs_retry(tmp_path):
    path = tmp_path / "q.sqlite3"
    from modules.jobs.store import JobStore

    for attempt in range(3):
        q = JobQueue(store=JobStore(path))
        hold, gate, started = blocker()
        q.register("hang", lambda payload, hold=hold: hold)
        if attempt == 0:
            q.submit("hang", hold, payload={})
        else:
            assert len(q.restore()) == 1  # still queued after each clean stop
        assert started.wait(5)
        q.shutdown()
    assert JobStore(path).get(1).status == "queued"


def test_a_damaged_record_is_failed_and_the_rest_still_run(tmp_path):
    import sqlite3

    from modules.jobs.store import JobStore

    path = tmp_path / "q.sqlite3"
    store = JobStore(path)
    store.add(1, "echo", "", {"name": "first"})
    store.add(2, "echo", "", {"name": "second"})
    with sqlite3.connect(path) as db:
        db.execute("UPDATE jobs SET payload='{\"name\": ' WHERE number=1")
    q = JobQueue(store=JobStore(path))
    q.register("echo", lambda payload: lambda job: payload["name"])
    [restored] = q.restore()
    assert restored.wait(5) and restored.result == "second"
    assert q.stored(1).status == "failed" and "could not be read" in q.stored(1).error
    q.shutdown()


def test_a_store_that_cannot_be_written_does_not_stop_the_worker(tmp_path):
    from modules.jobs.store import JobStore

    store = JobStore(tmp_path / "q.sqlite3")
    q = JobQueue(store=store)
    first = q.submit("t", lambda job: "one", payload={})
    assert first.wait(5)
    store.close()  # every write from now on raises
    second = q.submit("t", lambda job: "two", payload={})
    third = q.submit("t", lambda job: "three", payload={})
    assert second.wait(5) and third.wait(5)
    assert (second.result, third.result, third.status) == ("two", "three", JobStatus.DONE)
    q.shutdown()


def in_fresh_loop(make_coroutine):
    """asyncio.run on a thread of its own: the browser tests' session-wide Playwright keeps
    an event loop running on the main thread."""
    import asyncio

    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(value=asyncio.run(make_coroutine())))
    thread.start()
    thread.join(10)
    return out["value"]


def test_after_stop_no_job_is_taken_and_waiters_are_told(tmp_path):
    import asyncio

    from modules.jobs.queue import QueueStopped, done_future

    q = JobQueue()
    hold, gate, started = blocker()
    running = q.submit("t", hold)
    waiting = q.submit("t", lambda job: "never")
    assert started.wait(5)

    async def stop_while_both_are_awaited():
        both = asyncio.gather(done_future(running), done_future(waiting))
        await asyncio.sleep(0.1)
        q.stop()
        return await asyncio.wait_for(both, 5)

    async def late_waiter():
        return await asyncio.wait_for(done_future(waiting), 1)

    assert in_fresh_loop(stop_while_both_are_awaited) == [running, waiting]
    assert waiting.status is JobStatus.QUEUED  # woken, not run
    assert in_fresh_loop(late_waiter) is waiting  # a waiter that comes after the stop is told at once
    try:
        q.submit("t", lambda job: "late")
        raise AssertionError("a job was taken after stop")
    except QueueStopped as exc:
        assert "stopping" in str(exc)
    q.shutdown()


def test_finished_jobs_drop_their_payload_and_old_ones_are_forgotten(tmp_path):
    """The store keeps what a finished job did, not what it needed to run (an img2img payload
    holds its images), and only the newest finished jobs, so the file stays small."""
    import sqlite3

    from modules.jobs.store import JobStore

    path = tmp_path / "q.sqlite3"
    q = JobQueue(store=JobStore(path, keep_finished=50))
    hold, gate, started = blocker()
    first = q.submit("t", hold, payload={"image": "x" * 10_000})  # holds the worker while the rest queue up
    assert started.wait(5)
    jobs = [q.submit("t", lambda job: None, payload={"image": "x" * 10_000}) for _ in range(200)]
    gate.set()
    assert all(j.wait(5) for j in jobs)
    db = sqlite3.connect(path)
    rows = db.execute("SELECT number, status, payload IS NULL FROM jobs ORDER BY number").fetchall()
    assert all(dropped for _, status, dropped in rows if status == "done")
    assert len(rows) <= 50 + 100 and rows[-1][0] == jobs[-1].number  # pruned every 100 jobs, the newest kept
    assert q.stored(jobs[-1].number).status == "done" and q.stored(jobs[0].number) is None
    assert first.status.value == "done" and q.stored(first.number) is None
    q.shutdown()
