#!/usr/bin/env python
"""How far each sampler's picture is from its reference, measured in one run on the tiny
test model (CPU, fp32, 64x64, seed 4321, batch of 2, CFG 6.5):

1. for every sampler diffusers also has (each with its own default schedule, plus the ones
   listed below): the max pixel difference between our picture and diffusers' scheduler on
   the same noise. Both of our engines are shown: the one the sampler normally runs on, and
   our own sigma-space sampler forced onto the same pair (the arithmetic check for the code
   that runs every other pair);
2. for every sampler: the max pixel difference against the pictures recorded in
   bench/sampler_reference.json (our reference, made by this script with --record), so any
   change to a sampler's pixels shows up here.

A1111 itself is not run here (it does not install beside this project); its schedules are
checked value by value in tests/generation/test_schedules.py.
Run from the repository root:  venv/bin/python bench/sampler_fidelity.py [--steps N] [--record]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
REFERENCE = REPO / "bench" / "sampler_reference.json"
EXTRA_PAIRS = [("Euler", "Karras"), ("Euler", "Exponential"), ("Heun", "Karras"), ("LMS", "Karras"), ("Euler", "Beta")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--record", action="store_true", help="write the current pictures as the reference")
    args = parser.parse_args()

    import numpy as np
    import torch

    from modules.generation import samplers
    from modules.generation.params import GenerationParams
    from modules.generation.runner import Runner
    from modules.models.loader import load_checkpoint
    from modules.models.tiny import FILE_NAME, write_tiny_checkpoint

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_tiny_checkpoint(Path(tmp) / FILE_NAME, REPO / "configs")
        model = load_checkpoint(path, configs_dir=REPO / "configs", device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)
    runner = Runner(model)
    chosen = samplers.engine

    def pictures(sampler: str, schedule: str, engine: str | None = None) -> list:
        samplers.engine = (lambda *a, **k: engine) if engine else chosen
        try:
            params = GenerationParams.create(prompt="a red square", negative_prompt="blurry", width=64, height=64, steps=args.steps,
                                             seed=4321, sampler_name=sampler, scheduler=schedule, batch_size=2, cfg_scale=6.5)
            return [np.asarray(im, dtype=np.int16) for batch in runner.txt2img(params, 4321) for im in batch.images]
        finally:
            samplers.engine = chosen

    def max_diff(a: list, b: list) -> int:
        return int(max(np.abs(x - y).max() for x, y in zip(a, b)))

    print(f"1. Against diffusers' schedulers ({args.steps} steps; max pixel difference, 0-255)")
    print(f"{'sampler':20s} {'schedule':13s} {'engine':10s} {'ours':>5s} {'our sigma engine':>17s}")
    pairs = [(s.name, "Automatic") for s in samplers.SAMPLERS if s.scheduler_class and not s.timestep_based] + EXTRA_PAIRS
    pairs += [(s.name, "Automatic") for s in samplers.SAMPLERS if s.timestep_based and s.scheduler_class]
    for name, schedule in pairs:
        sampler, sched = samplers.resolve(name, schedule)
        theirs = pictures(name, schedule, samplers.DIFFUSERS)
        engine = samplers.engine(sampler, sched)
        ours = pictures(name, schedule)
        sigma = "-" if sampler.timestep_based else str(max_diff(pictures(name, schedule, samplers.SIGMAS), theirs))
        print(f"{name:20s} {schedule:13s} {engine:10s} {max_diff(ours, theirs):>5d} {sigma:>17s}")

    def pooled(image) -> np.ndarray:  # 4x4 block means: a small fingerprint that still moves with any change
        return image.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3)).round().astype(np.int16)

    recorded = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else {}
    print(f"\n2. Against the recorded reference ({REFERENCE.name}; max difference of 4x4 block means)")
    current = {}
    for sampler in samplers.SAMPLERS:
        images = [pooled(im) for im in pictures(sampler.name, "Automatic")]
        current[sampler.name] = [base64.b64encode(im.astype(np.uint8).tobytes()).decode() for im in images]
        if sampler.name in recorded:
            reference = [np.frombuffer(base64.b64decode(t), dtype=np.uint8).reshape(16, 16, 3).astype(np.int16) for t in recorded[sampler.name]]
            print(f"{sampler.name:20s} {max_diff(images, reference):>5d}")
        else:
            print(f"{sampler.name:20s}     - (not recorded)")
    if args.record:
        REFERENCE.write_text(json.dumps({"steps": args.steps, **current}, indent=0) + "\n")
        print(f"recorded {len(current)} samplers in {REFERENCE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
