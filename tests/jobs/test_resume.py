"""A generation job cut off by a crash goes on from its first unsaved batch when the server
starts again: no picture is saved twice, and the seeds are the ones the first run drew."""

from __future__ import annotations

import pytest
from PIL import ImageChops

from modules.generation.params import GenerationParams
from modules.jobs.queue import Job
from modules.jobs.store import JobStore
from tests.jobs.test_generation_task import service  # noqa: F401  (the module's fixture)


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


def saved(svc) -> list:
    return sorted((svc.data_dir / "outputs" / "txt2img-images").rglob("*.png"))


def test_a_job_cut_off_after_two_batches_saves_only_the_third_when_run_again(service):  # noqa: F811
    params = GenerationParams.create(prompt="resume me", seed=-1, n_iter=3, steps=2, width=64, height=64)
    before = set(saved(service))
    progress = []
    first = Job(id="task(1)", kind="txt2img", task=lambda j: None, _progress_writer=progress.append)

    def die_in_third_batch(info):
        if info.batch_index == 2:
            raise Crash

    first.control.on_step = die_in_third_batch
    with pytest.raises(Crash):
        service.run_txt2img(first, params, save=True)
    files = sorted(set(saved(service)) - before)
    assert len(files) == 2 and progress[-1]["batches"] == 2
    assert [str(p) for p in files] == sorted(progress[-1]["paths"])

    again = Job(id="task(1)", kind="txt2img", task=lambda j: None, resumed=progress[-1], _progress_writer=progress.append)
    result = service.run_txt2img(again, params, save=True)
    new = sorted(set(saved(service)) - before)
    assert len(new) == 3, "the first two pictures were saved again"
    first_seed = progress[0]["first_seed"]
    assert result.seeds == [first_seed, first_seed + 1, first_seed + 2]
    assert len(result.images) == 3 and any("Resumed after a restart" in n for n in result.notes)
    # The third picture is the one an uninterrupted run with the first run's seed makes.
    whole = service.run_txt2img(Job(id="task(2)", kind="txt2img", task=lambda j: None),
                                params.model_copy(update={"seed": first_seed}), save=False)
    assert ImageChops.difference(whole.images[2].convert("RGB"), result.images[2].convert("RGB")).getbbox() is None
    assert f"Seed: {first_seed + 2}," in result.infotexts[2]


def test_progress_is_kept_with_the_record_and_read_back_after_a_restart(tmp_path):
    store = JobStore(tmp_path / "queue.sqlite")
    store.add(1, "txt2img", "u", {"params": {}})
    store.started(1)
    store.progress(1, {"first_seed": 5, "batches": 1, "paths": ["a.png"]})
    store.close()
    [job] = JobStore(tmp_path / "queue.sqlite").recover()
    assert job.progress == {"first_seed": 5, "batches": 1, "paths": ["a.png"]}


def test_a_queue_file_from_an_older_version_gains_the_progress_column(tmp_path):
    import sqlite3

    path = tmp_path / "queue.sqlite"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE jobs (number INTEGER PRIMARY KEY, kind TEXT NOT NULL, user TEXT NOT NULL DEFAULT '', payload TEXT, "
                     "status TEXT NOT NULL, error TEXT, attempts INTEGER NOT NULL DEFAULT 0, submitted_at REAL NOT NULL, started_at REAL, "
                     "finished_at REAL, result TEXT);"
                     "INSERT INTO jobs (number, kind, payload, status, submitted_at) VALUES (1, 'txt2img', '{}', 'queued', 0);")
    db.commit()
    db.close()
    [job] = JobStore(path).recover()
    assert job.number == 1 and job.progress is None
