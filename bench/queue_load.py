#!/usr/bin/env python
"""Many API clients against one server: nothing lost, nothing mixed up, little overhead.

N client threads each send M txt2img jobs of the tiny model (64 px) to the real server
(launch.py --nowebui on loopback) at the same time. It prints jobs completed and lost (a lost
job is an error, a missing image, or an answer carrying another job's seed or prompt), the
p50/p95 latency a client saw, and the throughput ratio against running the very same jobs
back to back in one process through the generation core (goal: ratio >= 0.95, zero lost).
The VM's speed drifts by tens of percent within minutes, so each server round is compared
with the back-to-back rounds just before and after it, and the median ratio is reported.

Run from the repository root:  venv/bin/python bench/queue_load.py [--clients 4] [--jobs 3] [--rounds 7]
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


def serve_round(api: str, clients: int, jobs: int) -> tuple[float, list[float], list[str]]:
    """All clients at once, each sending its jobs one after another: (seconds, latencies, lost)."""
    latencies: list[float] = []
    lost: list[str] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        for index in range(jobs):
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

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies, lost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=3, help="jobs per client, per round")
    parser.add_argument("--rounds", type=int, default=7, help="server rounds, each between two back-to-back rounds (the VM's speed drifts)")
    args = parser.parse_args(argv)

    from modules.models.tiny import FILE_NAME, write_tiny_checkpoint

    total = args.clients * args.jobs
    ratios: list[float] = []
    latencies: list[float] = []
    lost: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_tiny_checkpoint(Path(tmp) / FILE_NAME, REPO / "configs")
        bodies = [job_body(c, i) for c in range(args.clients) for i in range(args.jobs)]
        timed = back_to_back(checkpoint, bodies)
        data = data_dir_with_tiny_model(Path(tmp) / "data", checkpoint)
        served_model = data / "models" / "Stable-diffusion" / FILE_NAME
        with launched(data, "--nowebui", "--disable-console-progressbars", "--ckpt", str(served_model), ready_path="/sdapi/v1/sd-models") as url:
            api = url + "/sdapi/v1/txt2img"
            for body in bodies[:2]:  # warm-up: the first model load and first runs
                post(api, body)
            before = timed()
            for number in range(args.rounds):
                served, seen, missing = serve_round(api, args.clients, args.jobs)
                after = timed()
                ratios.append(((before + after) / 2) / served)  # jobs/s served over jobs/s back to back
                latencies += seen
                lost += missing
                print(f"  round {number + 1}: server {total / served:.2f} jobs/s, back to back {2 * total / (before + after):.2f} jobs/s, "
                      f"ratio {ratios[-1]:.3f}", flush=True)
                before = after

    ratio = statistics.median(ratios)
    latencies.sort()
    p95 = latencies[max(0, int(round(0.95 * len(latencies))) - 1)]
    print(f"{args.clients} clients x {args.jobs} jobs x {args.rounds} rounds of the tiny model (64 px, {JOB['steps']} steps) through POST /sdapi/v1/txt2img")
    print(f"  completed {total * args.rounds - len(lost)} of {total * args.rounds}, lost {len(lost)}")
    for line in lost[:5]:
        print("   ", line)
    print(f"  latency per job seen by a client: p50 {statistics.median(latencies):.2f} s, p95 {p95:.2f} s")
    print(f"  throughput ratio, server over back to back in one process: median {ratio:.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)})")
    print(f"  goal: ratio >= 0.95 and nothing lost   {'ok' if ratio >= 0.95 and not lost else 'MISSED'}")
    return 0 if ratio >= 0.95 and not lost else 1


if __name__ == "__main__":
    sys.exit(main())
