#!/usr/bin/env python
"""Many API clients against one server: nothing lost, nothing mixed up, little overhead.

N client threads each send M txt2img jobs of the tiny model (64 px) to the real server
(launch.py --nowebui on loopback) at the same time. It prints jobs completed and lost (a lost
job is an error, a missing image, or an answer carrying another job's seed or prompt), the
p50/p95 latency a client saw, and the throughput ratio against running the very same jobs
back to back in one process through the generation core (goal: ratio >= 0.95, zero lost).

Run from the repository root:  venv/bin/python bench/queue_load.py [--clients 4] [--jobs 5]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import data_dir_with_tiny_model, launched  # noqa: E402

JOB = {"width": 64, "height": 64, "steps": 8, "sampler_name": "Euler", "cfg_scale": 7}


def job_body(client: int, index: int) -> dict:
    seed = 1000 * client + index
    return {"prompt": f"client {client} job {index}", "seed": seed, **JOB}


def back_to_back(checkpoint: Path, bodies: list[dict]):
    """A function timing the same jobs run one after another in this process, through the core."""
    import torch

    from modules.api.models import Txt2ImgRequest
    from modules.generation.devices import apply_attention, device_settings
    from modules.generation.runner import Runner
    from modules.models.loader import load_checkpoint

    model = load_checkpoint(checkpoint, configs_dir=REPO / "configs", device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)
    apply_attention(model.unet, device_settings(use_cpu=True))  # as the server's model manager does
    runner = Runner(model)
    for body in bodies[:2]:  # warm-up
        list(runner.txt2img(Txt2ImgRequest(**body).params(), body["seed"]))

    def timed() -> float:
        start = time.perf_counter()
        for body in bodies:
            list(runner.txt2img(Txt2ImgRequest(**body).params(), body["seed"]))
        return time.perf_counter() - start

    return timed


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=5, help="jobs per client")
    args = parser.parse_args(argv)

    from modules.models.tiny import FILE_NAME, write_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_tiny_checkpoint(Path(tmp) / FILE_NAME, REPO / "configs")
        bodies = [job_body(c, i) for c in range(args.clients) for i in range(args.jobs)]
        timed = back_to_back(checkpoint, bodies)
        before = timed()  # timed again after the server run: the VM's speed drifts
        data = data_dir_with_tiny_model(Path(tmp) / "data", checkpoint)
        latencies: list[float] = []
        lost: list[str] = []
        lock = threading.Lock()
        served_model = data / "models" / "Stable-diffusion" / FILE_NAME
        with launched(data, "--nowebui", "--disable-console-progressbars", "--ckpt", str(served_model), ready_path="/sdapi/v1/sd-models") as url:
            api = url + "/sdapi/v1/txt2img"
            for body in bodies[:2]:  # warm-up: the first model load and first runs
                post(api, body)

            def client(number: int) -> None:
                for index in range(args.jobs):
                    body = job_body(number, index)
                    start = time.perf_counter()
                    try:
                        answer = post(api, body)
                        info = json.loads(answer["info"])
                        ok = (len(answer["images"]) == 1 and info["seed"] == body["seed"] and info["prompt"] == body["prompt"]
                              and info["sd_model_name"] == "tiny-test-model-random")
                    except Exception as exc:  # noqa: BLE001 - counted as lost
                        ok, answer = False, {"error": str(exc)}
                    with lock:
                        latencies.append(time.perf_counter() - start)
                        if not ok:
                            lost.append(f"client {number} job {index}: {str(answer)[:200]}")

            threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            served = time.perf_counter() - start
        baseline = (before + timed()) / 2

    total = len(bodies)
    ratio = (total / served) / (total / baseline)
    latencies.sort()
    p95 = latencies[max(0, int(round(0.95 * len(latencies))) - 1)]
    print(f"{args.clients} clients x {args.jobs} jobs of the tiny model (64 px, {JOB['steps']} steps) through POST /sdapi/v1/txt2img")
    print(f"  completed {total - len(lost)} of {total}, lost {len(lost)}")
    for line in lost[:5]:
        print("   ", line)
    print(f"  latency per job seen by a client: p50 {statistics.median(latencies):.2f} s, p95 {p95:.2f} s")
    print(f"  throughput: server {total / served:.2f} jobs/s, back to back in one process {total / baseline:.2f} jobs/s")
    print(f"  ratio {ratio:.3f}   goal >= 0.95   {'ok' if ratio >= 0.95 and not lost else 'MISSED'}")
    return 0 if ratio >= 0.95 and not lost else 1


if __name__ == "__main__":
    sys.exit(main())
