"""The studio on a real Ray cluster: two Ray nodes (two "machines", one CPU worker each, one
torch thread) and the server inside a network namespace with only loopback, reached from here
through a loopback bridge. Jobs of several users run on both workers at once and each result
goes to its requester; jobs for two checkpoints cause no model switches after warm-up; a worker
process killed mid-job, and a whole node removed mid-job, lose nothing (the job completes
elsewhere, its files written once) and a node that joins later takes jobs; a server restarted
with jobs queued runs them; the page works unchanged in Chromium.

Marked `ray` (root, network namespaces, minutes): `pytest -m ray` runs them."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from PIL import Image

from modules.outputs.infotext import parse_infotext
from tests.ray_cluster import RayCluster, launched_in_netns, netns, run_in_netns
from tests.servers import REPO, data_dir_with_tiny_model

pytestmark = pytest.mark.ray

USERS = {"ann": "ann-pw", "bob": "bob-pw"}
A, B = "tiny-test-model-random.safetensors", "tiny-b.safetensors"
TOKEN = "0123456789abcdef" * 4  # the token the server's own Ray is given in the --device-id test


class Studio:
    """The cluster, the server's data folder, and the server (restartable)."""

    def __init__(self, ns: str, cluster: RayCluster, data: Path):
        self.ns, self.cluster, self.data = ns, cluster, data
        self._server: ExitStack | None = None
        self.url = ""

    def start(self) -> None:
        stack = ExitStack()
        flags = ["--api", "--api-auth", ",".join(f"{u}:{p}" for u, p in USERS.items()), "--no-hashing",
                 "--ray-address", self.cluster.address, "--ray-cpu-workers", "1"]
        server = stack.enter_context(launched_in_netns(self.data, self.ns, *flags, env_extra={"PYTHONPATH": str(REPO)}))
        self._server, self.url = stack, server.url
        self.wait_workers(2)

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def client(self, user: str = "ann") -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=(user, USERS[user]), timeout=120)

    def workers(self) -> list[dict]:
        return ray_workers(self.url, ("ann", USERS["ann"]))

    def wait_workers(self, count: int) -> list[dict]:
        return wait_workers(self.url, count, self.data, ("ann", USERS["ann"]))


def ray_workers(url: str, auth=None) -> list[dict]:
    with httpx.Client(base_url=url, auth=auth, timeout=60) as c:
        return [w for w in c.get("/sdapi/v1/workers").json() if w["kind"] == "ray"]


def wait_workers(url: str, count: int, data: Path, auth=None, timeout: float = 300) -> list[dict]:
    """The Ray workers, once `count` of them are alive with a model loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = [w for w in ray_workers(url, auth) if w["alive"] and w["checkpoint"]]
        except httpx.HTTPError:
            found = []
        if len(found) >= count:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{count} Ray workers did not come up\n{(data / 'server.log').read_text()[-3000:]}")


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_checkpoint):
    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("ray-studio"), tiny_checkpoint)
    shutil.copy(tiny_checkpoint, data / "models" / "Stable-diffusion" / B)  # a second checkpoint (the same weights, another file)
    with netns() as ns, RayCluster(ns, nodes=2, env_extra={"PYTHONPATH": str(REPO)}) as cluster:
        studio = Studio(ns, cluster, data)
        studio.start()
        try:
            yield studio
        finally:
            studio.stop()


def queue(client: httpx.Client, prompt: str, checkpoint: str = A, **fields) -> str:
    body = {"prompt": prompt, "steps": 6, "width": 64, "height": 64, "seed": 1000, "save_images": True,
            "override_settings": {"sd_model_checkpoint": checkpoint}, "override_settings_restore_afterwards": True, **fields}
    r = client.post("/sdapi/v1/queue/txt2img", json=body)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def wait_done(client: httpx.Client, job_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/sdapi/v1/queue/{job_id}").json()
        if state.get("status") not in ("queued", "running"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"{job_id} did not finish: {state}")


def wait_running(client: httpx.Client, job_id: str, progress: float = 0.2, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/sdapi/v1/queue/{job_id}").json()
        if state["status"] == "running" and state["progress"] >= progress:
            return state
        assert state["status"] in ("queued", "running"), state
        time.sleep(0.05)
    raise AssertionError(f"{job_id} did not get going: {state}")


def saved(data: Path, user: str, seed: int | None = None) -> list[Path]:
    files = sorted((data / "outputs" / "txt2img-images").glob(f"*/{user}/*.png")) + sorted(
        (data / "outputs" / "txt2img-images").glob(f"{user}/*/*.png"))
    return [f for f in files if seed is None or f.stem.endswith(f"-{seed}")]


def test_several_users_run_on_both_workers_at_once_and_each_gets_their_own_pictures(studio):
    with studio.client("ann") as ann, studio.client("bob") as bob:
        jobs = {queue(ann, f"a red circle {i}", seed=10 + i): ("ann", ann, 10 + i) for i in range(3)}
        jobs.update({queue(bob, f"a blue square {i}", seed=20 + i): ("bob", bob, 20 + i) for i in range(3)})
        assert bob.get(f"/sdapi/v1/queue/{next(iter(jobs))}").status_code == 403  # ann's job is not bob's to see
        workers = set()
        for job_id, (user, client, seed) in jobs.items():
            state = wait_done(client, job_id)
            assert state["status"] == "done", state
            workers.add(state["worker"])
            info = json.loads(state["result"]["info"])
            assert info["all_seeds"] == [seed] and info["prompt"].startswith("a red circle" if user == "ann" else "a blue square")
            image = Image.open(__import__("io").BytesIO(base64.b64decode(state["result"]["images"][0])))
            assert image.size == (64, 64)
            files = saved(studio.data, user, seed)
            assert len(files) == 1, files  # the serving machine saved it, in the user's own folder
            assert parse_infotext(Image.open(files[0]).info["parameters"])["Seed"] == str(seed)
        assert len(workers) == 2  # both workers took jobs


def test_jobs_for_two_checkpoints_cause_no_model_switches_after_warm_up(studio):
    with studio.client("ann") as ann, studio.client("bob") as bob:
        for job_id, client in [(queue(ann, "warm a", A), ann), (queue(bob, "warm b", B), bob)]:
            assert wait_done(client, job_id)["status"] == "done"
        before = {w["id"]: w["model_switches"] for w in studio.workers()}
        holding = {w["checkpoint"]: w["id"] for w in studio.workers()}
        assert set(holding) == {A, B}, studio.workers()
        jobs = [(queue(ann, f"a {i}", A, seed=i), ann, A) for i in range(3)] + [(queue(bob, f"b {i}", B, seed=i), bob, B) for i in range(3)]
        for job_id, client, checkpoint in jobs:
            state = wait_done(client, job_id)
            assert state["status"] == "done" and state["worker"] == holding[checkpoint], state
        after = {w["id"]: w["model_switches"] for w in studio.workers()}
        assert after == before


def test_a_worker_process_killed_mid_job_loses_nothing(studio):
    with studio.client("ann") as ann:
        job_id = queue(ann, "a green star", seed=500, steps=40, n_iter=3)
        state = wait_running(ann, job_id, 0.4)  # its first batch is saved by now
        victim = next(w for w in studio.workers() if w["job"] == job_id)
        os.kill(victim["pid"], signal.SIGKILL)
        state = wait_done(ann, job_id)
        assert state["status"] == "done" and state["worker"] != victim["id"], state
        files = [f for seed in (500, 501, 502) for f in saved(studio.data, "ann", seed)]
        assert len(files) == 3  # each picture written exactly once
        assert json.loads(state["result"]["info"])["all_seeds"] == [500, 501, 502]
        # a new worker replaces the dead one, on the same node, and takes jobs
        workers = studio.wait_workers(2)
        assert victim["id"] not in {w["id"] for w in workers}


def test_a_node_removed_mid_job_loses_nothing_and_a_node_that_joins_takes_jobs(studio):
    cluster = studio.cluster
    other = next(n for n in cluster.nodes if not n.head)
    with studio.client("ann") as ann, studio.client("bob") as bob:
        first, second = queue(ann, "a white moon", seed=700, steps=150, n_iter=2), queue(bob, "a black cat", seed=800, steps=150, n_iter=2)
        wait_running(ann, first, 0.1)
        wait_running(bob, second, 0.1)
        on_other = next(w for w in studio.workers() if w["node"] == other.node_id)
        cluster.kill_node(other)
        for job_id, client in ((first, ann), (second, bob)):
            state = wait_done(client, job_id)
            assert state["status"] == "done", state
            assert state["worker"] != on_other["id"]
        assert len(saved(studio.data, "ann", 700)) + len(saved(studio.data, "ann", 701)) == 2
        assert len(saved(studio.data, "bob", 800)) + len(saved(studio.data, "bob", 801)) == 2
        joined = cluster.add_node()
        workers = studio.wait_workers(2)
        newcomer = next(w for w in workers if w["node"] == joined.node_id)
        jobs = [queue(ann, f"a late {i}", newcomer["checkpoint"], seed=900 + i, steps=20) for i in range(4)]  # what it holds
        ran_on = {wait_done(ann, j)["worker"] for j in jobs}
        assert newcomer["id"] in ran_on


def test_a_restarted_server_runs_the_jobs_it_had_queued(studio):
    with studio.client("bob") as bob:
        jobs = [queue(bob, f"a yellow triangle {i}", seed=300 + i, steps=30) for i in range(4)]
        wait_running(bob, jobs[0], 0.1)
    studio.stop()
    studio.start()
    with studio.client("bob") as bob:
        for i, job_id in enumerate(jobs):
            state = wait_done(bob, job_id)
            assert state["status"] == "done", state
            assert len(saved(studio.data, "bob", 300 + i)) == 1


def test_the_page_works_unchanged_against_two_workers(studio, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.goto(studio.url + "/")
        page.wait_for_selector("#txt2img_prompt textarea", timeout=60000)
        page.fill("#txt2img_prompt textarea", "a purple heart on a grey background")
        box = page.locator("#txt2img_steps input[type=number]")
        box.fill("4")
        box.press("Enter")
        before = set((studio.data / "outputs" / "txt2img-images").rglob("*.png"))
        page.click("#txt2img_generate")
        page.locator("#txt2img_html_info", has_text="Steps: 4").wait_for(timeout=120000)
        page.screenshot(path=str(tmp_path / "ray-page.png"))
        made = sorted(set((studio.data / "outputs" / "txt2img-images").rglob("*.png")) - before)
        assert len(made) == 1
        info = parse_infotext(Image.open(made[0]).info["parameters"])
        assert info["Prompt"] == "a purple heart on a grey background" and info["Steps"] == "4"
        assert page.locator("#txt2img_gallery img").count() >= 1
    finally:
        context.close()


def test_device_ids_start_a_ray_of_the_servers_own_that_stops_with_it(tmp_path, tiny_checkpoint):
    """--device-id 0,1: one worker per listed GPU on a Ray the server starts itself (here the two
    'GPUs' are Ray resources over the CPU); when the server stops, its Ray stops too."""
    from tests.ray_cluster import pids_in_netns

    data = data_dir_with_tiny_model(tmp_path / "data", tiny_checkpoint)
    with netns() as ns:
        with launched_in_netns(data, ns, "--api", "--no-hashing", "--device-id", "0,1", env_extra={"RAY_AUTH_TOKEN": TOKEN}) as server:
            workers = wait_workers(server.url, 2, data)
            assert len({w["pid"] for w in workers}) == 2
            with httpx.Client(base_url=server.url, timeout=120) as client:
                r = client.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "steps": 4, "width": 64, "height": 64, "seed": 9})
                assert r.status_code == 200 and json.loads(r.json()["info"])["all_seeds"] == [9]
            # Its Ray wants the server's token: with it a client joins; a stranger on the machine (or
            # the network) without it is refused (an error, or kept retrying until it gives up).
            join = [sys.executable, "-c", "import ray; ray.init(address='auto'); print('JOINED', len(ray.nodes()))"]
            plain = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
            friend = run_in_netns(ns, join, timeout=120, env={**plain, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN})
            assert "JOINED 1" in friend.stdout, friend.stderr[-2000:]
            try:
                stranger = run_in_netns(ns, join, timeout=40, env=plain)
                assert stranger.returncode != 0 and "JOINED" not in stranger.stdout, stranger.stdout[-2000:]
            except subprocess.TimeoutExpired as refused:
                assert "JOINED" not in (refused.stdout or b"").decode()
            server_pid = server.proc.pid
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and pids_in_netns(ns):
            time.sleep(0.5)
        left = pids_in_netns(ns)
        assert not left, [(p, Path(f"/proc/{p}/cmdline").read_bytes()[:80]) for p in left if Path(f"/proc/{p}").exists()]
        assert server_pid not in left
