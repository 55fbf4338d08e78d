"""The job queue's record on disk (SQLite in the data folder), so jobs outlive the process.

A job is written when it is submitted, with what it needs to run again (its kind and a JSON
payload), and updated when it starts and ends. After a restart the queue reads back what
was still queued, and what was running when the process died: that is queued once more, and
marked failed with the reason if it was already a retry (a job that kills the server must not
kill it on every start).

A finished job keeps its status, error and result summary but not its payload (an img2img
payload carries its images), and only the newest `keep_finished` finished jobs are kept, so
the file does not grow with every job a studio ever ran.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    number INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    user TEXT NOT NULL DEFAULT '',
    payload TEXT,
    status TEXT NOT NULL,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    submitted_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, number);
"""
# Columns added since the first release, for queue files written by an older version.
LATER_COLUMNS = {"progress": "TEXT"}  # what a running job has finished so far (see JobStore.progress)


@dataclass(frozen=True)
class StoredJob:
    number: int
    kind: str
    user: str
    payload: Any
    status: str
    attempts: int
    submitted_at: float
    error: str | None = None
    result: Any = None
    progress: Any = None


class JobStore:
    """One SQLite file, written from any thread (one connection, a lock, WAL journal)."""

    def __init__(self, path: Path, keep_finished: int = 10_000):
        self.path = Path(path)
        self.keep_finished = keep_finished
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, kind in LATER_COLUMNS.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def next_number(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(number), 0) FROM jobs").fetchone()
        return int(row[0]) + 1

    def add(self, number: int, kind: str, user: str, payload: Any, submitted_at: float | None = None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (number, kind, user, payload, status, submitted_at) VALUES (?, ?, ?, ?, 'queued', ?)",
                (number, kind, user, json.dumps(payload), submitted_at or time.time()),
            )

    def started(self, number: int) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET status='running', started_at=?, attempts=attempts+1 WHERE number=?", (time.time(), number))

    def progress(self, number: int, progress: Any) -> None:
        """What a running job has finished (for a generation job: the batches it saved), so a
        run cut off by a crash goes on from there instead of saving its first images again."""
        with self._lock:
            self._db.execute("UPDATE jobs SET progress=? WHERE number=?", (json.dumps(progress), number))

    def finished(self, number: int, status: str, error: str | None = None, result: Any = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status=?, error=?, finished_at=?, result=?, payload=NULL, progress=NULL WHERE number=?",
                (status, error, time.time(), None if result is None else json.dumps(result), number),
            )
            if number % 100 == 0:  # now and then, forget the oldest finished jobs
                self._db.execute(
                    "DELETE FROM jobs WHERE status NOT IN ('queued', 'running') AND number <= ?", (number - self.keep_finished,)
                )

    def get(self, number: int) -> StoredJob | None:
        with self._lock:
            row = self._db.execute(
                "SELECT number, kind, user, payload, status, attempts, submitted_at, error, result, progress FROM jobs WHERE number=?", (number,)
            ).fetchone()
        return _stored(row) if row else None

    def requeue(self, number: int) -> None:
        """A job cut off by a clean stop: queued again without counting the attempt (the
        attempts only count runs that ended with the process dying)."""
        with self._lock:
            self._db.execute("UPDATE jobs SET status='queued', attempts=MAX(attempts-1, 0) WHERE number=?", (number,))

    def recover(self, max_attempts: int = 1) -> list[StoredJob]:
        """Jobs to run again after a restart, oldest first. A job found running was cut off by
        the process ending: queued again unless it had used its attempts, then failed. A
        record that cannot be read is failed with the reason; the rest still run."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status='failed', finished_at=?, error='The server stopped while this job was running (it was already retried once).' "
                "WHERE status='running' AND attempts>=?",
                (time.time(), max_attempts + 1),
            )
            self._db.execute("UPDATE jobs SET status='queued' WHERE status='running'")
            rows = self._db.execute(
                "SELECT number, kind, user, payload, status, attempts, submitted_at, error, result, progress FROM jobs WHERE status='queued' ORDER BY number"
            ).fetchall()
            jobs = []
            for row in rows:
                stored = _stored(row)
                if row[3] is not None and stored.payload is None:
                    self._db.execute("UPDATE jobs SET status='failed', finished_at=?, error=? WHERE number=?",
                                     (time.time(), "Its record in the queue file could not be read after the restart.", row[0]))
                else:
                    jobs.append(stored)
        return jobs

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _stored(row) -> StoredJob:
    number, kind, user, payload, status, attempts, submitted_at, error, result, progress = row
    return StoredJob(number, kind, user, _json(payload), status, attempts, submitted_at, error, _json(result), _json(progress))


def _json(text: str | None) -> Any:
    """A stored JSON value, or None when there is none or it cannot be read (a damaged
    record must not stop the server from starting or answering)."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
