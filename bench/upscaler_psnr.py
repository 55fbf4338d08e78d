#!/usr/bin/env python
"""How much sharper the shipped 4× upscaler is than Lanczos and bicubic, on held-out demo pictures.

Each held-out picture is one of the demo's held-out scenes (colour/shape/background
combinations the upscaler's training never draws), at a size and place from a seed the
training never uses, drawn at 64 px and again at 256 px. The 64-px drawing is upscaled 4×
by the model (through spandrel, as the app loads it), by PIL's Lanczos and by its bicubic
filter, all in this one run, and each result is scored by PSNR against the 256-px drawing.
It prints the mean PSNR of each and the model's gain over Lanczos in dB.

Goal (issue 19): the model beats Lanczos by at least 1.5 dB. Exit status 1 when missed.

    venv/bin/python bench/upscaler_psnr.py [--model models/ESRGAN/4x-demo-shapes-compact.safetensors] [--pictures 64]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_DB = 1.5


def main(argv: list[str] | None = None) -> int:
    from modules.demo import upscaler_eval
    from modules.demo.upscaler_training import FILE_NAME

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "ESRGAN" / FILE_NAME)
    parser.add_argument("--pictures", type=int, default=64, help="held-out pictures (64 = every held-out scene once)")
    parser.add_argument("--seed", type=int, default=upscaler_eval.HELD_OUT_SEED)
    parser.add_argument("--size", type=int, default=64, help="side of the small picture")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    descriptor = upscaler_eval.load_model(args.model)
    pairs = upscaler_eval.held_out_pairs(args.pictures, args.seed, args.size)
    upscalers = {"model": upscaler_eval.model_upscaler(descriptor)}
    upscalers.update({name: upscaler_eval.pil_upscaler(name) for name in upscaler_eval.PIL_FILTERS})
    started = time.perf_counter()
    scores = upscaler_eval.compare(upscalers, pairs)
    seconds = time.perf_counter() - started

    print(f"{args.model.name}: {descriptor.architecture.name} {descriptor.scale}x, "
          f"{args.model.stat().st_size / 1024:.0f} KiB; {scores.pictures} held-out pictures "
          f"{args.size} -> {args.size * descriptor.scale} px (seed {args.seed}), {seconds:.1f} s")
    print(f"{'upscaler':<10}{'PSNR dB':>9}{'vs Lanczos':>12}")
    for name, value in scores.psnr.items():
        print(f"{name:<10}{value:>9.2f}{scores.gain(name):>+12.2f}")
    gain = scores.gain("model")
    met = gain >= GOAL_DB
    print(f"model - Lanczos: {gain:+.2f} dB (goal >= +{GOAL_DB} dB: {'met' if met else 'MISSED'}); "
          f"model - bicubic: {scores.gain('model', 'Bicubic'):+.2f} dB")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
