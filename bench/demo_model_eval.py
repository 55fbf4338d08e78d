#!/usr/bin/env python
"""How well the embedded demo model follows prompts, and how fast, through the app's own core.

For every held-out scene (64 colour/shape/background combinations the model never saw in
training) it generates "a COLOUR SHAPE on a COLOUR background" at 64×64, 20 steps, one
picture per seed at batch size 1, and reads the pictures back with modules/demo/judge.py.
It prints the fractions with the right background colour, shape colour and shape, the
seconds per picture, the judge's ceilings (on drawn pictures and on their VAE
reconstructions), and a negative-prompt check.

Goals (issue 3): background >= 95 %, shape colour >= 90 %, shape >= 80 %, <= 0.4 s per image.

    venv/bin/python bench/demo_model_eval.py [--seeds 2] [--cfg 5] [--sheet held_out.png]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOALS = {"background": 0.95, "colour": 0.90, "shape": 0.80}
MAX_SECONDS = 0.4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the embedded demo model")
    parser.add_argument("--configs", type=Path, default=ROOT / "configs")
    parser.add_argument("--seeds", type=int, default=2, help="pictures per held-out scene")
    parser.add_argument("--cfg", type=float, default=None, help="default: the model's own (configs/demo-shapes/webui.json)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampler", default="DPM++ 2M")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--negative-seeds", type=int, default=32)
    parser.add_argument("--sheet", type=Path, default=None, help="save all pictures as one PNG")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from modules.demo import evaluation, judge, shapes
    from modules.demo.embedded import CONFIG_NAME, EMBEDDED_PATH
    from modules.demo.training import to_pictures, to_tensor
    from modules.generation.runner import Runner
    from modules.models.hints import ModelHints

    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or EMBEDDED_PATH
    cfg = args.cfg or float(ModelHints.read(args.configs / CONFIG_NAME).defaults.get("cfg_scale", evaluation.DEFAULT_CFG))
    model = evaluation.load_demo(checkpoint, args.configs)
    print(f"{checkpoint.name}: {args.sampler}, {args.steps} steps, CFG {cfg}, {torch.get_num_threads()} threads")

    result = evaluation.evaluate(model, seeds=range(args.seeds), cfg=cfg, steps=args.steps, sampler=args.sampler)
    scenes = list(shapes.held_out_scenes()) * args.seeds
    print(f"\nHeld-out prompts ({result.images} pictures, {len(shapes.held_out_scenes())} scenes x {args.seeds} seeds):")
    for key, goal in GOALS.items():
        value = result.scores[key]
        print(f"  {key:<11} {value:6.1%}   goal >= {goal:.0%}   {'ok' if value >= goal else 'MISSED'}")
    print(f"  all three   {result.scores['all']:6.1%}")
    speed_ok = result.seconds_per_image <= MAX_SECONDS
    print(f"  time        {result.seconds_per_image:.3f} s per 64x64 picture (median at batch 1; mean {result.mean_seconds:.3f} s)"
          f"   goal <= {MAX_SECONDS} s   {'ok' if speed_ok else 'MISSED'}")
    for shape in shapes.SHAPES:
        picked = [(p, s) for p, s in zip(result.pictures, scenes) if s.shape == shape]
        print(f"  {shape:<9} shape recognised {judge.score(*zip(*picked))['shape']:6.1%}")

    rng = np.random.default_rng(0)
    drawn, drawn_scenes = shapes.random_batch(shapes.all_scenes(), 256, rng)
    with torch.no_grad():
        latents = model.vae.encode(to_tensor(drawn)).latent_dist.mean
        rebuilt = to_pictures(model.vae.decode(latents).sample)
    print("\nJudge ceilings (256 drawn pictures):")
    print(f"  drawn pictures     {judge.score(list(drawn), drawn_scenes)}")
    print(f"  VAE round trip     {judge.score(list(rebuilt), drawn_scenes)}")

    runner = Runner(model)
    print(f"\nNegative prompt ({args.negative_seeds} seeds each):")
    for prompt, negative, what in (("a square", "yellow", "yellow shapes"), ("a yellow star", "orange background", "orange backgrounds")):
        for neg in ("", negative):
            pictures = []
            for seed in range(0, args.negative_seeds, 8):
                pictures += evaluation.generate(runner, prompt, seed, negative=neg, cfg=cfg, steps=args.steps,
                                                sampler=args.sampler, batch_size=8)
            readings = [judge.read_picture(p) for p in pictures]
            found = sum((r.colour if what.endswith("shapes") else r.background) == negative.split()[0] for r in readings)
            print(f"  '{prompt}', negative '{neg}': {found}/{len(readings)} {what}")

    # The floor under the time per picture: the UNet's own 20 guided steps (batch 2), no sampler.
    unet = model.unet
    sample = torch.randn(2, 4, 8, 8)
    context = torch.randn(2, 77, unet.config.cross_attention_dim)
    timestep = torch.tensor([500, 500])
    runs = []
    with torch.inference_mode():
        for _ in range(6):
            started = time.perf_counter()
            for _ in range(args.steps):
                unet(sample, timestep, context)
            runs.append(time.perf_counter() - started)
    print(f"\nUNet alone, {args.steps} steps at batch 2: {statistics.median(runs[1:]):.3f} s (median of 5; the rest is "
          "text encoding, sampler, decoding)")

    if args.sheet:
        evaluation.contact_sheet(result.pictures).save(args.sheet)
        print(f"\nSaved {args.sheet}")
    missed = [k for k, goal in GOALS.items() if result.scores[k] < goal] + ([] if speed_ok else ["time"])
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
