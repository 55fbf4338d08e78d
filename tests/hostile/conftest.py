"""One server for the whole hostile suite: the tiny model with `--api --nowebui`, in-process,
with `raise_server_exceptions=False` so a 500 is seen as a client would see it.

The data folder sits inside a `root` folder that also holds decoys (a checkpoint, a LoRA, a
VAE-looking file and a secret) which no name sent to the API may reach; `outside_files()`
lists what is in `root` outside the data folder, so a case can prove nothing was written there.
"""

from __future__ import annotations

import shutil
import time

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

import webui
from modules.options import parse_args
from tests.hostile.harness import API, IMG2IMG, SMALL, trimmed_rss
from tests.hostile.images import png_b64
from tests.servers import data_dir_with_tiny_model, in_process_app

RSS_BOUND = 600 * 2**20  # what a group may leave behind over the warmed-up baseline


class Hostile:
    def __init__(self, app, client: TestClient, data, root, tiny_name: str):
        self.app, self.client, self.data, self.root, self.tiny_name = app, client, data, root, tiny_name
        self.baseline_rss = 0
        self.outside_before = self.outside_files()
        self.options = dict(app.settings.values)

    def restore_options(self) -> None:
        """Put the settings back as they were before the suite: known ones through the API,
        and the unknown keys a case stored (the API keeps any key, as A1111's) dropped."""
        settings = self.app.settings
        changed = {k: v for k, v in self.options.items() if k != "sd_model_checkpoint" and settings.values.get(k) != v}
        if changed:
            r = self.client.post(f"{API}/options", json=changed)
            assert r.status_code == 200, f"the settings could not be put back: {r.text[:300]}"
        stray = [k for k in settings.values if k not in self.options]
        if stray:
            with settings._lock:
                for key in stray:
                    del settings.values[key]
            settings.save()

    def outside_files(self) -> set:
        return {p for p in self.root.rglob("*") if self.data not in p.parents and p != self.data}

    def assert_nothing_written_outside(self) -> None:
        new = self.outside_files() - self.outside_before
        assert not new, f"files appeared outside the data folder: {sorted(map(str, new))[:5]}"

    def assert_alive(self) -> None:
        start = time.perf_counter()
        r = self.client.get(f"{API}/progress")
        elapsed = time.perf_counter() - start
        assert r.status_code == 200, f"/progress answered {r.status_code}: {r.text[:300]}"
        assert elapsed < 1.0, f"/progress took {elapsed:.2f} s"

    def wait_idle(self, what: str, cancel: bool = False, timeout: float = 60.0) -> None:
        """Wait for the queue to empty; with `cancel`, jobs still there after a few seconds
        are cancelled (and the case fails: a hostile request should not have queued work)."""
        deadline = time.monotonic() + timeout
        cancelled = []
        while True:
            queue = self.client.get(f"{API}/queue").json()
            jobs = ([queue["running"]] if queue.get("running") else []) + list(queue.get("waiting") or [])
            if not jobs:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the worker is still busy {timeout:.0f} s {what}: {jobs}")
            if cancel and time.monotonic() > deadline - timeout + 15:
                for job in jobs:
                    if job["id"] not in cancelled:
                        self.client.delete(f"{API}/queue/{job['id']}")
                        cancelled.append(job["id"])
            time.sleep(0.05)
        assert not cancelled, f"jobs left running {what} had to be cancelled: {cancelled}"

    def rss_growth(self) -> int:
        return trimmed_rss() - self.baseline_rss


@pytest.fixture(scope="module")
def group_rss(hostile):
    """Resident memory when a group (a test module) starts: what it holds afterwards is
    compared with this, so one group's leftovers do not count against the next."""
    return {"start": trimmed_rss()}


@pytest.fixture(scope="module")
def memory_check(hostile, group_rss):
    def check(group: str) -> None:
        growth = trimmed_rss() - group_rss["start"]
        assert growth < RSS_BOUND, (f"after the {group} cases RSS is {growth / 2**20:.0f} MiB over what it was before them "
                                    f"(bound {RSS_BOUND / 2**20:.0f} MiB)")
    return check


@pytest.fixture(scope="session")
def hostile(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("hostile")
    data = data_dir_with_tiny_model(root / "data", tiny_checkpoint)
    models = data / "models"
    for sub in ("Lora", "embeddings", "VAE"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    (models / "Lora" / "glow.safetensors").write_bytes(b"")  # listed, unloadable: a warning, never a crash
    save_file({"emb_params": torch.randn(3, 32)}, str(models / "embeddings" / "tinystyle.safetensors"))
    (data / "styles.csv").write_text('name,prompt,negative_prompt\ncinema,"{prompt}, film grain",cartoon\n', encoding="utf-8")
    # Decoys next to the data folder: a name that reaches any of these has escaped it.
    shutil.copy(tiny_checkpoint, root / "outside.safetensors")
    (root / "secret.txt").write_text("secret\n")
    (root / "evil").mkdir()

    with in_process_app(data, "--api", "--nowebui", "--disable-console-progressbars", checkpoint=models / "Stable-diffusion" / tiny_checkpoint.name,
                        raise_server_exceptions=False) as (app, client):
        h = Hostile(app, client, data, root, tiny_checkpoint.name)
        # Warm up every path the cases take, so the baseline holds what a served request keeps.
        image = png_b64()
        for _ in range(2):
            assert client.post(f"{API}/txt2img", json={"prompt": "warm up", **SMALL}).status_code == 200
            assert client.post(f"{API}/img2img", json={"init_images": [image], "mask": png_b64(kind="mask"), **IMG2IMG}).status_code == 200
            assert client.post(f"{API}/extra-single-image", json={"image": image, "upscaling_resize": 2, "upscaler_1": "Lanczos"}).status_code == 200
            assert client.post(f"{API}/png-info", json={"image": image}).status_code == 200
        h.baseline_rss = trimmed_rss()
        yield h


@pytest.fixture(scope="session")
def shared_hostile(tmp_path_factory):
    """The API on a server shared on the network (--listen), no model: the settings that
    name folders must stay inside its data folder."""
    root = tmp_path_factory.mktemp("hostile-shared")
    data = root / "data"
    data.mkdir()
    args = parse_args(["--data-dir", str(data), "--api", "--nowebui", "--listen", "--disable-console-progressbars"])
    app = webui.App.create(args)
    with TestClient(app.build_asgi(args), raise_server_exceptions=False) as client:
        h = Hostile(app, client, data, root, "")
        h.baseline_rss = trimmed_rss()
        yield h
    app.queue.shutdown()
