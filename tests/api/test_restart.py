"""Stopping the server loses no work: jobs queued when it stops run after it starts again,
under the same ids, and a client still waiting is told so at once."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.servers import data_dir_with_tiny_model, launched


def call(url: str, body: dict | None = None, method: str | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.slow  # two server starts (~50 s); tests/jobs checks the queue's record survives a restart
def test_queued_jobs_complete_after_a_restart(tmp_path, tiny_checkpoint):
    data = data_dir_with_tiny_model(tmp_path, tiny_checkpoint)
    tiny = "tiny-test-model-random"
    small = {"width": 64, "height": 64, "steps": 3, "save_images": True, "override_settings": {"sd_model_checkpoint": tiny}}
    waiter: dict = {}

    def wait_synchronously(api: str) -> None:
        try:
            waiter["answer"] = call(api + "/txt2img", {"prompt": "waiting client", "seed": 50, **small})
        except urllib.error.HTTPError as exc:
            waiter["status"], waiter["body"] = exc.code, json.loads(exc.read())

    with launched(data, "--nowebui", ready_path="/sdapi/v1/sd-models") as url:
        api = url + "/sdapi/v1"
        long = call(api + "/queue/txt2img", {"prompt": "long", "seed": 1, **small, "width": 256, "height": 256, "steps": 30, "n_iter": 50})
        queued = [call(api + "/queue/txt2img", {"prompt": f"after restart {i}", "seed": 40 + i, **small})["id"] for i in range(3)]
        client = threading.Thread(target=wait_synchronously, args=(api,))
        client.start()
        deadline = time.monotonic() + 60
        while (call(f"{api}/queue/{long['id']}")["status"] != "running" or len(call(f"{api}/queue")["waiting"]) < 4) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [call(f"{api}/queue/{i}")["status"] for i in queued] == ["queued"] * 3
        stopping = time.monotonic()
    # SIGTERM with one job running, three queued and a client waiting on a fourth: the server
    # stops at once instead of finishing the queue, and the waiting client hears why.
    assert time.monotonic() - stopping < 8
    client.join(10)
    assert waiter.get("status") == 503, waiter
    assert re.search(r"The server is stopping: task\(\d+\) stays queued and runs when the server starts again", waiter["body"]["detail"])

    with launched(data, "--nowebui", ready_path="/sdapi/v1/sd-models") as url:
        api = url + "/sdapi/v1"
        call(f"{api}/queue/{long['id']}", method="DELETE")  # the cut-off job was queued again; we no longer want it
        deadline = time.monotonic() + 120
        statuses = {}
        while time.monotonic() < deadline:
            statuses = {i: call(f"{api}/queue/{i}") for i in queued}
            if all(s["status"] == "done" for s in statuses.values()) and not call(f"{api}/queue")["waiting"]:
                break
            time.sleep(0.2)
        assert [s["status"] for s in statuses.values()] == ["done"] * 3, statuses
        for number, status in enumerate(statuses.values()):  # the result is there by id, as before the restart
            info = json.loads(status["result"]["info"])
            assert (info["all_seeds"], info["prompt"], len(status["result"]["images"])) == ([40 + number], f"after restart {number}", 1)
        while call(f"{api}/queue")["running"] is not None and time.monotonic() < deadline:
            time.sleep(0.2)
    saved = sorted((data / "outputs" / "txt2img-images").glob("*/*.png"))
    seeds = sorted(int(p.stem.split("-")[1]) for p in saved)
    assert [40, 41, 42, 50] == [s for s in seeds if s >= 40]  # each exactly once, the waiting client's job too
