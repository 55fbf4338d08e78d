"""Jobs queued when the server stops run after it starts again, under the same ids."""

from __future__ import annotations

import json
import time
import urllib.request

from tests.servers import data_dir_with_tiny_model, launched


def call(url: str, body: dict | None = None, method: str | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_queued_jobs_complete_after_a_restart(tmp_path, tiny_checkpoint):
    data = data_dir_with_tiny_model(tmp_path, tiny_checkpoint)
    tiny = "tiny-test-model-random"
    small = {"width": 64, "height": 64, "steps": 3, "save_images": True, "override_settings": {"sd_model_checkpoint": tiny}}
    with launched(data, "--nowebui", ready_path="/sdapi/v1/sd-models") as url:
        api = url + "/sdapi/v1"
        long = call(api + "/queue/txt2img", {"prompt": "long", "seed": 1, **small, "width": 256, "height": 256, "steps": 30, "n_iter": 50})
        queued = [call(api + "/queue/txt2img", {"prompt": f"after restart {i}", "seed": 40 + i, **small})["id"] for i in range(3)]
        deadline = time.monotonic() + 60
        while call(f"{api}/queue/{long['id']}")["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [call(f"{api}/queue/{i}")["status"] for i in queued] == ["queued"] * 3
    # Stopped with one job running and three waiting; nothing was lost on disk.
    with launched(data, "--nowebui", ready_path="/sdapi/v1/sd-models") as url:
        api = url + "/sdapi/v1"
        call(f"{api}/queue/{long['id']}", method="DELETE")  # the cut-off job was queued again; we no longer want it
        deadline = time.monotonic() + 120
        statuses = {}
        while time.monotonic() < deadline:
            statuses = {i: call(f"{api}/queue/{i}") for i in queued}
            if all(s["status"] == "done" for s in statuses.values()):
                break
            time.sleep(0.2)
        assert [s["status"] for s in statuses.values()] == ["done"] * 3, statuses
    saved = sorted((data / "outputs" / "txt2img-images").glob("*/*.png"))
    seeds = sorted(int(p.stem.split("-")[1]) for p in saved)
    assert [40, 41, 42] == [s for s in seeds if s >= 40]  # each exactly once
