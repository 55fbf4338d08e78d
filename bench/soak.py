#!/usr/bin/env python
"""Soak: five users, mixed jobs for half an hour, a kill -9 and a restart; nothing lost or run
twice, and the server's memory, open files and threads stay flat.

The real server (launch.py with the page and --api, on loopback, a temporary data folder
holding the tiny test model beside the shipped demo model) gets, from 5 --api-auth users (so
5 lanes in the fair queue), a random mix for `--minutes`: txt2img and img2img through the
queue routes (POST /sdapi/v1/queue/..., polled with GET) and A1111's blocking routes, all at
64 px with few steps and saved, plus cancels of queued jobs (DELETE /sdapi/v1/queue/{id}),
skips, interrupts, checkpoint switches between the two models (POST /sdapi/v1/options) and
jobs pinned to a model by override_settings. Every job carries a tag in its prompt and its
own seeds, and each answer is checked against them (right tag, seeds and model).

At the end every user queues a few more multi-batch jobs and waits on one blocking request;
with jobs queued and one running past its first (already saved) batch, the server is killed
with SIGKILL and started again on the same data folder, and the bench waits until the queue
is empty. Then, from the queue's record (queue.sqlite3) and the saved files: every job the
server accepted has ended exactly once (none left queued, none failed, none cancelled that
was not cancelled, none run again except the one cut off by the kill), every saved picture is
one the record lists, once, with the job's prompt and seed, every file the record lists is
there, and each job with several pictures has one grid.

The server's RSS, open file descriptors and threads (psutil, every few seconds) at the end of
the run are set against the end of its first minute. Goals: RSS within 10 %, fds and threads
not above the first minute's plus a small slack; zero jobs lost, duplicated or mixed up, no
server errors. Exit status 1 when a goal is missed.

Run from the repository root:  venv/bin/python bench/soak.py [--minutes 30] [--seed 1] [--nowebui]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import argparse  # noqa: E402
import base64  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import data_dir_with_tiny_model, free_port  # noqa: E402

USERS = {f"u{n}": f"soak-pass-{n}" for n in range(1, 6)}
DEMO_FILE = "demo-shapes-64px.safetensors"
TAG = re.compile(r"soak s(\d{6}) ")
SEED_BASE = 100_000  # a job's seeds are SEED_BASE + 10 * k + i, i < n_iter * batch_size <= 6
TERMINAL = {"done", "failed", "interrupted", "cancelled"}
RSS_GOAL = 0.10  # end over first minute, at most +10 %
FD_SLACK = 8  # open fds and threads may wobble by this much (client sockets, the web server's worker threads)
THREAD_SLACK = 6
MAX_JOBS = 9_000  # the queue record keeps the newest 10,000 finished jobs: past this, users stop sending new ones
MAX_OUTSTANDING = 3  # queued jobs a user keeps waiting at once (keeps the backlog, and so the memory of it, bounded)
SERVER_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
              "HF_ENDPOINT": "http://127.0.0.1:9", "COMMANDLINE_ARGS": ""}


# ------------------------------------------------------------------------------ the server


class Server:
    """launch.py on a loopback port with `data` as its data folder, as a user starts it."""

    def __init__(self, data: Path, port: int, webui: bool):
        self.data, self.port, self.webui = data, port, webui
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> float:
        flags = ["--api"] if self.webui else ["--nowebui"]
        auth = ",".join(f"{u}:{p}" for u, p in USERS.items())
        start = time.monotonic()
        with open(self.data / "server.log", "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "launch.py"), "--skip-install", "--no-download-sd-model", "--data-dir", str(self.data),
                 "--port", str(self.port), "--disable-console-progressbars", "--api-auth", auth, *flags],
                cwd=REPO, env={**os.environ, **SERVER_ENV}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        client = Client(self.url, "u1")
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.data / 'server.log'}")
            try:
                client.call("GET", "/sdapi/v1/sd-models", timeout=5)
                return time.monotonic() - start
            except (OSError, HttpError):
                time.sleep(0.3)
        raise TimeoutError(f"the server did not answer within {timeout:.0f} s; see {self.data / 'server.log'}")

    def kill(self) -> None:
        """SIGKILL, as an out-of-memory kill or a pulled plug would end it."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class HttpError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status, self.body = status, body


class Client:
    """One user's HTTP Basic calls (urllib, a new connection per call)."""

    def __init__(self, url: str, user: str):
        self.url = url
        self.auth = "Basic " + base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 300):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", "Authorization": self.auth})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise HttpError(exc.code, exc.read().decode(errors="replace")) from None


class Sampler(threading.Thread):
    """The server process's RSS, open fds and threads every `every` seconds."""

    def __init__(self, pid: int, every: float, t0: float):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.every, self.t0 = every, t0
        self.samples: list[tuple[float, int, int, int]] = []  # (seconds since t0, rss, fds, threads)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                with self.process.oneshot():
                    self.samples.append((time.monotonic() - self.t0, self.process.memory_info().rss, self.process.num_fds(),
                                         self.process.num_threads()))
            except Exception:  # noqa: BLE001 - the process is gone (the kill)
                return
            self.halt.wait(self.every)

    def window(self, start: float, end: float) -> list[tuple[float, int, int, int]]:
        return [s for s in self.samples if start <= s[0] <= end]


# ------------------------------------------------------------------------------ the jobs


@dataclass
class Submission:
    k: int
    user: str
    kind: str  # txt2img | img2img
    route: str  # queue | blocking
    images: int  # n_iter * batch_size
    pinned: str | None  # model_name asked through override_settings
    id: str | None = None  # the queue's job id (queue route)
    cancel_sent: bool = False
    status_seen: str | None = None  # the last status the client saw
    cut_by_kill: bool = False  # a request that the kill cut off (or refused, once the server was gone)

    @property
    def seeds(self) -> set[int]:
        return {SEED_BASE + 10 * self.k + i for i in range(self.images)}


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    submissions: list[Submission] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # server errors, mix-ups: each one misses the goal
    next_k: int = 0

    def count(self, action: str) -> None:
        with self.lock:
            self.actions[action] = self.actions.get(action, 0) + 1

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)
        print(f"  PROBLEM: {text}", flush=True)

    def new(self, **kwargs) -> Submission:
        with self.lock:
            sub = Submission(k=self.next_k, **kwargs)
            self.next_k += 1
            self.submissions.append(sub)
            return sub


def init_image(rng: random.Random) -> str:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), tuple(rng.randrange(256) for _ in range(3)))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def check_answer(tally: Tally, sub: Submission, answer: dict, where: str) -> None:
    """An answer (blocking route, or a queued job's result) must be this job's: its tag, its
    seeds, its pinned model; images and infotexts one for one."""
    info = json.loads(answer.get("info") or "{}")
    seeds, texts = info.get("all_seeds") or [], info.get("infotexts") or []
    wrong = []
    if len(answer.get("images") or []) != len(texts):
        wrong.append(f"{len(answer.get('images') or [])} images for {len(texts)} infotexts")
    if not set(seeds) <= sub.seeds:
        wrong.append(f"seeds {seeds} not among {sorted(sub.seeds)}")
    if any(TAG.search(t) is None or int(TAG.search(t).group(1)) != sub.k for t in texts):
        wrong.append("an infotext with another job's prompt")
    if texts and sub.pinned and info.get("sd_model_name") != sub.pinned:
        wrong.append(f"ran on {info.get('sd_model_name')}, pinned to {sub.pinned}")
    if wrong:
        tally.problem(f"{where} s{sub.k:06d} ({sub.user}, {sub.kind}): mixed up: {'; '.join(wrong)}")


class User(threading.Thread):
    """One user's random mix of actions until `stop`, then the burst before the kill."""

    def __init__(self, name: str, server: Server, tally: Tally, models: list[str], seed: int, stop: threading.Event,
                 burst: threading.Event, burst_sent: threading.Event):
        super().__init__(name=f"user-{name}", daemon=True)
        self.name_, self.server, self.tally, self.models = name, server, tally, models
        self.rng = random.Random(seed)
        self.stop, self.burst, self.burst_sent = stop, burst, burst_sent
        self.client = Client(server.url, name)
        self.outstanding: list[Submission] = []
        self.init = init_image(self.rng)
        self.killed = threading.Event()  # set by main once the kill has happened

    # -- generation -------------------------------------------------------------------

    def body(self, sub: Submission, steps: int, n_iter: int, batch_size: int) -> dict:
        body = {"prompt": f"soak s{sub.k:06d} {sub.user} a red circle on a blue background", "negative_prompt": "",
                "seed": SEED_BASE + 10 * sub.k, "width": 64, "height": 64, "steps": steps, "n_iter": n_iter,
                "batch_size": batch_size, "sampler_name": self.rng.choice(["Euler", "Euler a", "DPM++ 2M"]), "cfg_scale": 5,
                "save_images": True}
        if sub.pinned:
            body["override_settings"] = {"sd_model_checkpoint": sub.pinned}
        if sub.kind == "img2img":
            body.update(init_images=[self.init], denoising_strength=round(self.rng.uniform(0.4, 0.9), 2))
        return body

    def generate(self, kind: str, route: str, big: bool = False) -> None:
        n_iter, batch_size = (self.rng.choice([2, 3]), 1) if big else (self.rng.choice([1, 1, 2, 3]), self.rng.choice([1, 1, 2]))
        steps = 8 if big else self.rng.randint(4, 10)
        pinned = self.rng.choice(self.models) if self.rng.random() < 0.1 else None
        sub = self.tally.new(user=self.name_, kind=kind, route=route, images=n_iter * batch_size, pinned=pinned)
        body = self.body(sub, steps, n_iter, batch_size)
        self.tally.count(f"{route} {kind}")
        if route == "queue":
            try:
                status = self.client.call("POST", f"/sdapi/v1/queue/{kind}", body, timeout=60)
            except (HttpError, OSError) as exc:
                if self.killed.is_set():
                    sub.cut_by_kill = True
                else:
                    self.tally.problem(f"POST /queue/{kind} s{sub.k:06d}: {exc}")
                return
            sub.id, sub.status_seen = status["id"], status["status"]
            self.outstanding.append(sub)
            return
        try:
            answer = self.client.call("POST", f"/sdapi/v1/{kind}", body, timeout=600)
        except (HttpError, OSError) as exc:
            if not isinstance(exc, HttpError) and (self.killed.is_set() or self.burst.is_set()):
                sub.cut_by_kill = True  # the kill cut it off: the record says whether it was accepted
                return
            self.tally.problem(f"POST /{kind} s{sub.k:06d}: {exc}")
            return
        sub.status_seen = "answered" if answer.get("images") else "answered, no picture"  # (skipped before its first step)
        check_answer(self.tally, sub, answer, f"/{kind}")

    def poll(self) -> None:
        for sub in list(self.outstanding):
            try:
                status = self.client.call("GET", f"/sdapi/v1/queue/{sub.id}", timeout=60)
            except (HttpError, OSError) as exc:
                self.tally.problem(f"GET /queue/{sub.id}: {exc}")
                self.outstanding.remove(sub)
                continue
            sub.status_seen = status["status"]
            if status["status"] in TERMINAL:
                self.outstanding.remove(sub)
                if status["status"] == "failed":
                    self.tally.problem(f"{sub.id} s{sub.k:06d} failed: {status.get('error')}")
                if "result" in status:
                    check_answer(self.tally, sub, status["result"], f"GET /queue/{sub.id}")

    # -- the other actions ----------------------------------------------------------------

    def cancel(self) -> None:
        sub = self.outstanding[-1]  # the newest: most likely still waiting
        sub.cancel_sent = True
        self.tally.count("cancel (DELETE /queue/{id})")
        try:
            status = self.client.call("DELETE", f"/sdapi/v1/queue/{sub.id}", timeout=60)
            sub.status_seen = status["status"]
        except HttpError as exc:
            if exc.status != 404:  # 404: it had ended and been forgotten already
                self.tally.problem(f"DELETE /queue/{sub.id}: {exc}")
        except OSError as exc:
            self.tally.problem(f"DELETE /queue/{sub.id}: {exc}")

    def simple(self, method: str, path: str, action: str, body: dict | None = None) -> None:
        self.tally.count(action)
        try:
            self.client.call(method, path, body, timeout=600)
        except (HttpError, OSError) as exc:
            if not self.burst.is_set():
                self.tally.problem(f"{method} {path}: {exc}")

    def run(self) -> None:
        actions = [("queue txt2img", 30), ("queue img2img", 15), ("blocking txt2img", 10), ("blocking img2img", 5),
                   ("cancel", 8), ("skip", 4), ("interrupt", 3), ("switch", 2), ("progress", 5)]
        names, weights = [a for a, _ in actions], [w for _, w in actions]
        if self.name_ == "u1":  # both models, both kinds, the biggest jobs: all inside the first minute's baseline
            for model in self.models:
                self.simple("POST", "/sdapi/v1/options", "model switch (POST /options)", {"sd_model_checkpoint": model})
                self.generate("txt2img", "blocking", big=True)
                self.generate("img2img", "blocking", big=True)
        while not self.stop.is_set():
            self.poll()
            if len(self.outstanding) >= MAX_OUTSTANDING:
                time.sleep(0.2)
                continue
            action = self.rng.choices(names, weights)[0]
            if action.startswith(("queue", "blocking")):
                if self.tally.next_k < MAX_JOBS:
                    route, kind = action.split()
                    self.generate(kind, route)
            elif action == "cancel" and self.outstanding:
                self.cancel()
            elif action == "skip":
                self.simple("POST", "/sdapi/v1/skip", "skip (POST /skip)")
            elif action == "interrupt":
                self.simple("POST", "/sdapi/v1/interrupt", "interrupt (POST /interrupt)")
            elif action == "switch":
                model = self.rng.choice(self.models)
                self.simple("POST", "/sdapi/v1/options", "model switch (POST /options)", {"sd_model_checkpoint": model})
            elif action == "progress":
                self.simple("GET", "/sdapi/v1/progress?skip_current_image=false", "GET /progress")
            time.sleep(self.rng.uniform(0.05, 0.4))
        # The burst: jobs queued and a blocking request waiting when the kill comes.
        self.burst.wait()
        if self.killed.is_set():  # still in its last blocking request when the kill came
            return
        for _ in range(2):
            self.generate(self.rng.choice(["txt2img", "img2img"]), "queue", big=True)
        self.burst_sent.set()
        self.generate(self.rng.choice(["txt2img", "img2img"]), "blocking", big=True)


# ------------------------------------------------------------------------------ the checks


def read_store(data: Path) -> dict[int, dict]:
    db = sqlite3.connect(f"file:{data / 'queue.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT number, kind, user, status, attempts, error, result FROM jobs").fetchall()
    finally:
        db.close()
    return {r[0]: {"kind": r[1], "user": r[2], "status": r[3], "attempts": r[4], "error": r[5],
                   "result": json.loads(r[6]) if r[6] else None} for r in rows}


def saved_files(data: Path) -> list[tuple[Path, int | None, int | None, bool]]:
    """Every picture under outputs/: (path, tag, seed, is a grid)."""
    from PIL import Image

    found = []
    for path in sorted((data / "outputs").rglob("*.png")):
        with Image.open(path) as image:
            text = image.info.get("parameters", "")
        tag, seed = TAG.search(text), re.search(r"Seed: (\d+)", text)
        grid = any(part.endswith("-grids") for part in path.relative_to(data / "outputs").parts)
        found.append((path, int(tag.group(1)) if tag else None, int(seed.group(1)) if seed else None, grid))
    return found


def tag_of(record: dict | None) -> int | None:
    for text in (record or {}).get("infotexts") or []:
        match = TAG.search(text)
        if match:
            return int(match.group(1))
    return None


def check_jobs(tally: Tally, data: Path, running_at_kill: set[str], interrupts: int, skips: int) -> tuple[list[str], dict]:
    """Every accepted job ended exactly once; every file is one the record lists, once."""
    misses: list[str] = []
    store = read_store(data)
    gen = {n: r for n, r in store.items() if r["kind"] in ("txt2img", "img2img")}
    by_k = {s.k: s for s in tally.submissions}
    by_id = {s.id: s for s in tally.submissions if s.id}
    # 1. every row: ended, never failed; attribute it to a submission
    row_of: dict[int, int] = {}  # k -> number
    unattributed = []
    statuses: dict[str, int] = {}
    for number, row in gen.items():
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        sub = by_id.get(f"task({number})")
        k = sub.k if sub else tag_of(row["result"])
        if k is None or k not in by_k:
            unattributed.append(number)
        elif k in row_of:
            misses.append(f"s{k:06d} is recorded twice: task({row_of[k]}) and task({number})")
        else:
            row_of[k] = number
        if row["status"] not in TERMINAL:
            misses.append(f"task({number}) still '{row['status']}' after the restart drained the queue (lost)")
        elif row["status"] == "failed":
            misses.append(f"task({number}) failed: {row['error']}")
        elif row["status"] == "cancelled" and not (sub and sub.cancel_sent):
            misses.append(f"task({number}) was cancelled, but nobody cancelled it")
        if row["attempts"] > 1 and f"task({number})" not in running_at_kill:
            misses.append(f"task({number}) ran {row['attempts']} times; only the job running at the kill may run again")
        elif row["attempts"] > 2:
            misses.append(f"task({number}) ran {row['attempts']} times")
        if row["status"] in ("done", "interrupted") and row["attempts"] < 1:
            misses.append(f"task({number}) is '{row['status']}' but never started")
    # A skip or interrupt that lands before a job's first step leaves it with no picture, so no
    # prompt in its record: such rows cannot be told apart, only counted.
    empty = [n for n, r in gen.items() if r["status"] in ("done", "interrupted") and not (r["result"] or {}).get("infotexts")]
    for number in unattributed:
        if number not in empty:
            misses.append(f"task({number}) ({gen[number]['status']}) matches no job this bench sent")
    rerun = [n for n, r in gen.items() if r["attempts"] > 1]
    interrupted = statuses.get("interrupted", 0)
    cancels = sum(1 for s in tally.submissions if s.cancel_sent)
    if interrupted > interrupts + cancels:
        misses.append(f"{interrupted} jobs ended interrupted, but only {interrupts} interrupts and {cancels} cancels were sent")
    if len(empty) > interrupts + cancels + skips:
        misses.append(f"{len(empty)} jobs ended with no picture, but only {interrupts} interrupts, {cancels} cancels and {skips} skips were sent")
    answered_empty = sum(1 for s in tally.submissions if s.status_seen == "answered, no picture")
    if answered_empty > sum(1 for n in unattributed if n in empty):
        misses.append(f"{answered_empty} blocking requests were answered with no picture, but the record has fewer such jobs")
    # 2. every submission the server took has its row
    lost = []
    for sub in tally.submissions:
        if sub.id and sub.k not in row_of:
            lost.append(f"{sub.id} (s{sub.k:06d}, {sub.user}) was accepted but has no record")
        if sub.route == "blocking" and sub.status_seen == "answered" and sub.k not in row_of:
            lost.append(f"blocking s{sub.k:06d} ({sub.user}) was answered with pictures but has no record")
        if sub.id and sub.k in row_of and sub.status_seen in ("done", "interrupted", "cancelled"):
            recorded = gen[row_of[sub.k]]["status"]
            if recorded != sub.status_seen:
                misses.append(f"{sub.id} was '{sub.status_seen}' before the kill, '{recorded}' after the restart")
    misses += lost
    # 3. the saved files against the record's paths
    files = saved_files(data)
    listed: dict[Path, int] = {}
    for k, number in row_of.items():
        for path in (gen[number]["result"] or {}).get("paths") or []:
            listed[Path(path).resolve()] = k
    on_disk = {path.resolve() for path, *_ in files}
    missing = [p for p in listed if p not in on_disk]
    orphans, mixed, grids_by_k = [], [], {}
    for path, k, seed, grid in files:
        if grid:
            grids_by_k.setdefault(k, []).append(path)
            continue
        owner = listed.get(path.resolve())
        if owner is None:
            orphans.append((path, k, seed))
        elif owner != k or seed not in by_k[k].seeds:
            mixed.append(f"{path.name}: tag s{k} seed {seed}, listed for s{owner:06d}")
    if missing:
        misses.append(f"{len(missing)} file(s) the record lists are not on disk, e.g. {missing[0]}")
    if orphans:
        def owner(k):
            number = row_of.get(k)
            if number is None:
                return "no job"
            again = ", run again after the kill" if gen[number]["attempts"] > 1 else ""
            return f"task({number}), {gen[number]['status']}{again}"

        rows = ", ".join(f"{p.relative_to(data / 'outputs')} (s{k:06d} seed {s}: {owner(k)})" for p, k, s in orphans[:4])
        misses.append(f"{len(orphans)} saved file(s) that no job's record lists, i.e. saved by a run the record forgot "
                      f"(a duplicate of the job's picture): {rows}")
    misses += mixed[:5]
    for k, paths in grids_by_k.items():
        expected = 1 if k in row_of and len((gen[row_of[k]]["result"] or {}).get("paths") or []) > 1 else 0
        if len(paths) != expected:
            misses.append(f"s{k} has {len(paths)} grid(s), its record says {expected}: {', '.join(p.name for p in paths)}")
    images_listed = len(listed)
    summary = {"rows": len(gen), "statuses": statuses, "rerun": rerun, "empty": len(empty), "files": len(files),
               "grids": sum(len(v) for v in grids_by_k.values()), "images_listed": images_listed, "orphans": len(orphans)}
    return misses, summary


# ------------------------------------------------------------------------------ main


def median(values):
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the mixed load before the kill (fractions for trials)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the users' random choices")
    parser.add_argument("--sample-every", type=float, default=2.0, help="seconds between RSS/fd/thread samples")
    parser.add_argument("--nowebui", action="store_true", help="serve only the API (default: the page and --api, as users run it)")
    parser.add_argument("--kill-moment", choices=["later-batch", "any"], default="later-batch",
                        help="when to kill: while a multi-batch job is past its first batch (the hardest case: a batch is "
                             "already saved), or as soon as any job runs")
    parser.add_argument("--keep", action="store_true", help="keep the data folder (printed) for a look afterwards")
    args = parser.parse_args(argv)

    from modules.models.tiny import FILE_NAME, write_tiny_checkpoint

    duration = args.minutes * 60
    # Baseline: the last 15 s of the first minute (of the first half, for a run under 2 minutes);
    # end: the last 15 s before the burst.
    first = min(60.0, duration / 2)
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    rng = random.Random(args.seed)
    misses: list[str] = []
    try:
        checkpoint = write_tiny_checkpoint(tmp / FILE_NAME, REPO / "configs")
        data = data_dir_with_tiny_model(tmp / "data", checkpoint)
        server = Server(data, free_port(), webui=not args.nowebui)
        ready = server.start()
        listed = Client(server.url, "u1").call("GET", "/sdapi/v1/sd-models")
        models = [m["model_name"] for m in listed if Path(m["filename"]).name in (FILE_NAME, DEMO_FILE)]
        if len(models) != 2:
            print(f"the server lists {[m['title'] for m in listed]}: expected {FILE_NAME} and {DEMO_FILE}")
            return 1
        print(f"server up in {ready:.1f} s (pid {server.proc.pid}, {'page + --api' if server.webui else '--nowebui'}, "
              f"5 users), models {', '.join(models)}; soaking {args.minutes:g} min", flush=True)

        tally = Tally()
        stop, burst = threading.Event(), threading.Event()
        t0 = time.monotonic()
        sampler = Sampler(server.proc.pid, args.sample_every, t0)
        sampler.start()
        sent = [threading.Event() for _ in USERS]
        users = [User(name, server, tally, models, rng.randrange(2**31), stop, burst, sent[i]) for i, name in enumerate(USERS)]
        for user in users:
            user.start()
        next_report = 30.0
        while time.monotonic() - t0 < duration:
            time.sleep(1)
            elapsed = time.monotonic() - t0
            if elapsed >= next_report or elapsed >= duration:
                last = sampler.samples[-1] if sampler.samples else (0, 0, 0, 0)
                print(f"  {elapsed / 60:5.1f} min: {len(tally.submissions)} jobs sent, RSS {last[1] / 2**20:.0f} MiB, "
                      f"{last[2]} fds, {last[3]} threads", flush=True)
                next_report += 30
        end_t = time.monotonic() - t0
        base_w = sampler.window(first - 15, first)
        end_w = sampler.window(end_t - 15, end_t)

        # The kill: every user stops, queues 2 multi-batch jobs and waits on a blocking one.
        stop.set()
        burst.set()
        for event in sent:  # a user still waiting on a blocking request joins in when it is answered
            event.wait(max(1.0, end_t + 300 - (time.monotonic() - t0)))
        probe = Client(server.url, "u1")
        queued_at_kill, running_at_kill = 0, set()
        deadline = time.monotonic() + 90
        while True:
            view = probe.call("GET", "/sdapi/v1/queue", timeout=30)
            running = view["running"] or {}
            batch = re.match(r"Batch (\d+)/\d+, Step (\d+)", running.get("textinfo") or "")
            generating = running.get("kind") in ("txt2img", "img2img") and running.get("progress", 0) > 0
            later_batch = batch is not None and int(batch.group(1)) >= 2 and int(batch.group(2)) >= 1
            if (generating and (args.kill_moment == "any" or later_batch or time.monotonic() > deadline)) \
                    or time.monotonic() > deadline + 60:  # nothing to catch running: kill anyway
                break
            time.sleep(0.02)
        if args.kill_moment == "any":
            time.sleep(rng.uniform(0.0, 0.3))
            view = probe.call("GET", "/sdapi/v1/queue", timeout=30)
        running_id = (view["running"] or {}).get("id")
        kill_note = f"{running_id} running ({view['running'].get('textinfo')})" if running_id else "nothing running"
        queued_at_kill = len(view["waiting"])
        if running_id:
            running_at_kill.add(running_id)
        server.kill()
        for user in users:
            user.killed.set()
        sampler.halt.set()
        after_kill = view["waiting"][0]["id"] if view["waiting"] else None  # the worker may have moved on before the signal landed
        if after_kill:
            running_at_kill.add(after_kill)
        for user in users:
            user.join(30)
        cut = sum(1 for s in tally.submissions if s.cut_by_kill)
        print(f"  killed (SIGKILL) with {kill_note}, {queued_at_kill} job(s) waiting (next: {after_kill}), "
              f"{cut} request(s) cut off", flush=True)

        # The restart, on the same data folder: wait until the queue has run dry.
        restart = server.start()
        drained_start = time.monotonic()
        while time.monotonic() - drained_start < 600:
            view = probe.call("GET", "/sdapi/v1/queue", timeout=30)
            if not view["running"] and not view["waiting"]:
                break
            time.sleep(0.5)
        else:
            misses.append("the queue did not run dry within 10 minutes of the restart")
        drained = time.monotonic() - drained_start
        for sub in tally.submissions:  # the queue routes' view after the restart
            if sub.id:
                try:
                    status = Client(server.url, sub.user).call("GET", f"/sdapi/v1/queue/{sub.id}", timeout=30)
                    if status["status"] not in TERMINAL:
                        misses.append(f"GET /queue/{sub.id} says '{status['status']}' after the queue ran dry")
                except (HttpError, OSError) as exc:
                    misses.append(f"GET /queue/{sub.id} after the restart: {exc}")
        server.stop()
        print(f"  restarted in {restart:.1f} s; the queue ran dry {drained:.1f} s later", flush=True)

        interrupts = tally.actions.get("interrupt (POST /interrupt)", 0)
        skips = tally.actions.get("skip (POST /skip)", 0)
        job_misses, summary = check_jobs(tally, data, running_at_kill, interrupts, skips)
        misses += tally.problems + job_misses
    finally:
        try:
            server.stop()
        except NameError:
            pass
        if args.keep:
            try:
                (tmp / "samples.csv").write_text("seconds,rss,fds,threads\n" + "".join(f"{t:.1f},{r},{f},{n}\n" for t, r, f, n in sampler.samples))
            except NameError:
                pass
            print(f"data folder kept: {tmp} (samples.csv: the server's RSS, fds and threads)")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)

    # -- the report ---------------------------------------------------------------------
    sent_jobs = len(tally.submissions)
    print(f"\n{sent_jobs} jobs sent by 5 users in {end_t / 60:.1f} min (64 px, 4-10 steps, batches up to 3x2, all saved), "
          f"then kill -9 and restart")
    for action, n in sorted(tally.actions.items()):
        print(f"  {action:32s} {n:6d}")
    print(f"  queue record: {summary['rows']} jobs, " + ", ".join(f"{v} {k}" for k, v in sorted(summary["statuses"].items()))
          + f" ({summary['empty']} with no picture: skipped or interrupted before their first step); "
          + f"run again after the kill: {', '.join(f'task({n})' for n in summary['rerun']) or 'none'}")
    print(f"  files: {summary['images_listed']} pictures listed by the record, {summary['files']} on disk "
          f"({summary['grids']} grids), {summary['orphans']} not listed")

    if base_w and end_w:
        b_rss, e_rss = median([s[1] for s in base_w]), median([s[1] for s in end_w])
        b_fd, e_fd = median([s[2] for s in base_w]), median([s[2] for s in end_w])
        b_th, e_th = median([s[3] for s in base_w]), median([s[3] for s in end_w])
        peak = max(s[1] for s in sampler.samples)
        rows = [("RSS (MiB)", b_rss / 2**20, e_rss / 2**20, e_rss / b_rss, f"<= {1 + RSS_GOAL:.2f}", e_rss <= b_rss * (1 + RSS_GOAL)),
                ("open fds", b_fd, e_fd, e_fd / b_fd, f"<= +{FD_SLACK}", e_fd <= b_fd + FD_SLACK),
                ("threads", b_th, e_th, e_th / b_th, f"<= +{THREAD_SLACK}", e_th <= b_th + THREAD_SLACK)]
        label = f"{first:.0f} s" if first < 60 else "1st min"
        print(f"\n  {'server process':16s} {label + ' (median)':>16s} {'end (median)':>14s} {'end/first':>10s} {'goal':>8s}")
        for name, b, e, ratio, goal, ok in rows:
            print(f"  {name:16s} {b:16.1f} {e:14.1f} {ratio:10.3f} {goal:>8s}  {'ok' if ok else 'MISSED'}")
            if not ok:
                misses.append(f"{name} grew from {b:.1f} to {e:.1f}")
        print(f"  (samples every {args.sample_every:g} s: {len(base_w)} in the first window, {len(end_w)} at the end; "
              f"peak RSS {peak / 2**20:.0f} MiB)")
    else:
        misses.append("too few resource samples: run longer")
    print()
    for line in misses[:20]:
        print(f"  MISSED: {line}")
    if len(misses) > 20:
        print(f"  ... and {len(misses) - 20} more")
    ok = not misses
    print(f"  goal: no job lost, duplicated or mixed up, no server error, RSS within {RSS_GOAL:.0%}, fds/threads flat   "
          f"{'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
