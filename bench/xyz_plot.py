#!/usr/bin/env python
"""What X/Y/Z plot costs over the same jobs queued by hand.

Loads the shipped demo model (CPU, fp32, 64x64) into a real JobQueue and GenerationService,
then alternates, round after round:
  A. a 3x3 X/Y plot (Steps 10,15,20 x CFG Scale 5,7,9) through the ScriptRunner: nine
     queued cell jobs, the labelled grid, its infotext;
  B. the same nine jobs submitted back to back to the same queue and waited for.
Prints the median seconds of each and the median of the per-round A/B ratios (goal <= 1.05),
and checks that every cell picture equals its back-to-back job's pixel for pixel. Nothing is
saved on either side. Exit status 1 when the goal or the check fails.

Run from the repository root:  venv/bin/python bench/xyz_plot.py [--rounds N] [--threads N]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RATIO_GOAL = 1.05
STEPS = (10, 15, 20)
CFGS = (5.0, 7.0, 9.0)


def log(text: str = "") -> None:
    print(text, flush=True)


def build(data: Path):
    from modules.demo.embedded import EMBEDDED_PATH
    from modules.generation.devices import device_settings
    from modules.jobs.generation_task import GenerationService
    from modules.jobs.queue import JobQueue
    from modules.models.catalog import HashCache
    from modules.models.manager import ModelManager
    from modules.options import OutputSettings
    from modules.scripts.runner import ScriptRunner

    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    shutil.copyfile(EMBEDDED_PATH, ckpts / EMBEDDED_PATH.name)
    models = ModelManager((ckpts,), REPO / "configs", lambda: device_settings(use_cpu=True), HashCache(data / "cache.json"))
    models.load(EMBEDDED_PATH.name)
    service = GenerationService(models, OutputSettings(), data, console_progress=False)
    queue = JobQueue()
    runner = ScriptRunner.for_app(queue, service, {"script_max_jobs": 100})
    return models, service, queue, runner


def plot_round(runner, models, params):
    from modules.scripts.base import ScriptRequest

    plot = runner.registry.find("X/Y/Z plot", "txt2img")
    labels = list(plot.args(runner.env, False)[0].choices)  # x_type's choices: the tab's axis types
    args = [labels.index("Steps"), ",".join(map(str, STEPS)), [], labels.index("CFG Scale"), ",".join(map(str, CFGS)), [],
            0, "", [], True, True]  # draw legend, include the cells (to compare them)
    request = ScriptRequest("txt2img", params, None, models.pin(), None, (), False)
    start = time.perf_counter()
    run = runner.start("X/Y/Z plot", request, args)
    asyncio.run(run.wait())
    elapsed = time.perf_counter() - start
    if run.error:
        raise SystemExit(f"X/Y/Z plot failed: {run.error}")
    return elapsed, run.result.images[run.result.grids:]


def jobs_round(queue, service, models, params):
    checkpoint = models.pin()
    cells = [params.model_copy(update={"steps": s, "cfg_scale": c}) for c in CFGS for s in STEPS]
    start = time.perf_counter()
    jobs = [queue.submit("txt2img", lambda j, p=p: service.run_txt2img(j, p, save=False, checkpoint=checkpoint, grid=False))
            for p in cells]
    for job in jobs:
        job.wait()
    elapsed = time.perf_counter() - start
    return elapsed, [job.result.images[0] for job in jobs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    opts = parser.parse_args()

    import numpy as np
    import torch

    from modules.generation.params import GenerationParams

    if opts.threads:
        torch.set_num_threads(opts.threads)
    data = Path(tempfile.mkdtemp(prefix="bench-xyz-"))
    try:
        models, service, queue, runner = build(data)
        params = GenerationParams.create(prompt="a red circle on a blue background", width=64, height=64, seed=1234,
                                         sampler_name="DPM++ 2M")
        log(f"3x3 X/Y plot (Steps {STEPS} x CFG {CFGS}) vs 9 jobs back to back; demo model, CPU, 64x64, "
            f"{torch.get_num_threads()} torch threads, {opts.rounds} rounds after a warm-up")
        plot_round(runner, models, params)
        jobs_round(queue, service, models, params)
        plots, backs, ratios, worst = [], [], [], 0
        for index in range(opts.rounds):
            first_plot = index % 2 == 0  # alternate which side goes first
            if first_plot:
                a, cells = plot_round(runner, models, params)
                b, singles = jobs_round(queue, service, models, params)
            else:
                b, singles = jobs_round(queue, service, models, params)
                a, cells = plot_round(runner, models, params)
            plots.append(a)
            backs.append(b)
            ratios.append(a / b)
            for cell, single in zip(cells, singles):
                diff = np.abs(np.asarray(cell, dtype=np.int16) - np.asarray(single, dtype=np.int16)).max()
                worst = max(worst, int(diff))
            log(f"  round {index + 1}: plot {a:.3f} s, back to back {b:.3f} s, ratio {a / b:.3f}")
        ratio = statistics.median(ratios)
        log(f"median: plot {statistics.median(plots):.3f} s, back to back {statistics.median(backs):.3f} s")
        log(f"plot/back-to-back ratio (median of rounds): {ratio:.3f} (goal <= {RATIO_GOAL})")
        log(f"max px diff, cells vs their jobs: {worst} (0 expected)")
        queue.shutdown()
        return 0 if ratio <= RATIO_GOAL and worst == 0 else 1
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
