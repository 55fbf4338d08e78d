"""Throughput of the queue on one and on two Ray CPU workers (one torch thread each), in one run.

Each round starts a real Ray cluster (one node per worker) and the server inside a network
namespace with only loopback (Ray binds 127.0.0.1 there), sends the same N txt2img jobs through
the API (/sdapi/v1/queue/txt2img, saved with their infotext as users' jobs are) and times them
from the first submission to the last finished job, after each worker has loaded the model.
Prints jobs per minute for each and the ratio (goal >= 1.8 on two cores). Needs root.

    venv/bin/python bench/ray_throughput.py [--jobs 48] [--steps 40] [--size 64]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def one_round(workers: int, jobs: int, steps: int, size: int) -> float:
    """Seconds for `jobs` jobs on `workers` CPU workers."""
    import httpx

    from tests.ray_cluster import RayCluster, launched_in_netns, netns

    data = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    try:
        with netns("sdbench") as ns, RayCluster(ns, nodes=workers, env_extra={"PYTHONPATH": str(REPO)}) as cluster:
            flags = ["--api", "--no-hashing", "--ray-address", cluster.address, "--ray-cpu-workers", "1"]
            with launched_in_netns(data, ns, *flags, env_extra={"PYTHONPATH": str(REPO)}) as server:
                with httpx.Client(base_url=server.url, timeout=120) as client:
                    deadline = time.monotonic() + 300
                    while sum(1 for w in client.get("/sdapi/v1/workers").json() if w["kind"] == "ray" and w["checkpoint"]) < workers:
                        if time.monotonic() > deadline:
                            raise SystemExit("the workers did not start")
                        time.sleep(0.5)
                    body = {"prompt": "a red circle on a blue background", "steps": steps, "width": size, "height": size,
                            "save_images": True}
                    started = time.monotonic()
                    ids = [client.post("/sdapi/v1/queue/txt2img", json={**body, "seed": i}).json()["id"] for i in range(jobs)]
                    for job_id in ids:  # polled gently: the server shares the two cores with the workers
                        while client.get(f"/sdapi/v1/queue/{job_id}").json()["status"] in ("queued", "running"):
                            time.sleep(0.25)
                    took = time.monotonic() - started
                    failed = [j for j in ids if client.get(f"/sdapi/v1/queue/{j}").json()["status"] != "done"]
                    if failed:
                        raise SystemExit(f"jobs failed: {failed}")
                    return took
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=48)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    one = one_round(1, args.jobs, args.steps, args.size)
    two = one_round(2, args.jobs, args.steps, args.size)
    ratio = one / two
    print(f"{args.jobs} jobs, {args.steps} steps, {args.size}x{args.size}, demo model, CPU workers with one torch thread each")
    print(f"1 worker : {one:6.1f} s  {60 * args.jobs / one:6.1f} jobs/min")
    print(f"2 workers: {two:6.1f} s  {60 * args.jobs / two:6.1f} jobs/min")
    print(f"throughput ratio 2/1: {ratio:.2f} (goal >= 1.8)")
    return 0 if ratio >= 1.8 else 1


if __name__ == "__main__":
    sys.exit(main())
