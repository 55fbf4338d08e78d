#!/usr/bin/env python
"""What one live preview costs with each show_progress_type method, against one sampling step.

1. The embedded demo model (CPU, fp32, 64x64 by default): the time of one sampling step
   (20-step minus 10-step txt2img through the generation core, over 10; DPM++ 2M, CFG 7),
   and of one preview from a latent of that size by Full (the runner's VAE decode),
   Approx cheap (the latent-to-RGB projection, stretched to the picture's size) and TAESD
   (diffusers' DecoderTiny with random weights: the cost of a real one, not its picture).
   Note that on the demo model itself Approx cheap shows Full decodes, because no linear
   projection fits its VAE; the row still times the projection, as a real family's costs.
2. With --sd1 (on by default; --no-sd1 skips it): an SD 1.x-sized VAE with random weights
   at 64x64 latents (a 512x512 picture), the same three previews, as ratios to Full (a full
   SD1 UNet step is not built: it would take minutes and gigabytes on a small CPU).

Each time is the median of --repeat runs after a warm-up; ratios are taken within this run.

Run from the repository root:  venv/bin/python bench/preview_cost.py [--size 64] [--repeat 5] [--no-sd1]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
CONFIGS = REPO / "configs"


def timed(fn, repeat: int) -> float:
    """Median seconds of `fn()` over `repeat` runs, after one warm-up."""
    fn()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def preview_costs(model, latents, repeat: int) -> dict[str, float]:
    """Seconds per preview of each method for `model` (a LoadedModel or alike) and `latents`."""
    import torch

    from modules.generation.previews import approximate, fit_projection, to_picture, FAMILY_PROJECTIONS
    from modules.generation.runner import Runner

    runner = Runner(model) if hasattr(model, "unet") else None
    vae = model.vae
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    size = (latents.shape[-1] * scale, latents.shape[-2] * scale)
    projection = FAMILY_PROJECTIONS.get(model.arch) or fit_projection(vae)
    torch.manual_seed(0)
    from diffusers import AutoencoderTiny

    taesd = AutoencoderTiny(latent_channels=vae.config.latent_channels).decoder.eval()

    def full():
        if runner is not None:
            return runner.decode(latents, check=False)[0]
        return to_picture(vae.decode(latents / vae.config.scaling_factor).sample)

    with torch.inference_mode():
        return {
            "Full": timed(full, repeat),
            "Approx cheap": timed(lambda: approximate(latents, projection, size), repeat),
            "TAESD": timed(lambda: to_picture(taesd(latents)), repeat),
        }


def demo_step_seconds(model, size: int, repeat: int) -> float:
    """One sampling step of the demo model through the generation core (CFG: two UNet passes)."""
    import torch

    from modules.generation.params import GenerationParams
    from modules.generation.runner import Runner

    runner = Runner(model)

    def run(steps: int):
        params = GenerationParams(prompt="a red circle on a blue background", width=size, height=size, steps=steps, seed=1,
                                  sampler_name="DPM++ 2M", cfg_scale=7)
        with torch.inference_mode():
            list(runner.txt2img(params, 1))

    return max(1e-9, (timed(lambda: run(20), repeat) - timed(lambda: run(10), repeat)) / 10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="demo picture size in pixels (a multiple of 8)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--sd1", action=argparse.BooleanOptionalAction, default=True, help="also an SD1-sized random VAE at 512 px")
    args = parser.parse_args()

    import torch

    from modules.demo.embedded import EMBEDDED_PATH
    from modules.models.loader import load_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    model = load_checkpoint(EMBEDDED_PATH, configs_dir=CONFIGS, device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)
    step = demo_step_seconds(model, args.size, args.repeat)
    latents = torch.randn((1, 4, args.size // 8, args.size // 8), generator=torch.Generator().manual_seed(0))
    costs = preview_costs(model, latents, args.repeat)
    print(f"\nDemo model, {args.size}x{args.size}: one sampling step {step * 1000:.2f} ms")
    print(f"{'method':<14}{'ms/preview':>12}{'/ step':>9}{'/ Full':>9}")
    for method, seconds in costs.items():
        print(f"{method:<14}{seconds * 1000:>12.2f}{seconds / step:>9.3f}{seconds / costs['Full']:>9.3f}")

    if args.sd1:
        from diffusers import AutoencoderKL
        from types import SimpleNamespace

        torch.manual_seed(0)
        vae = AutoencoderKL.from_config(json.loads((CONFIGS / "sd1" / "vae" / "config.json").read_text())).eval()
        sd1 = SimpleNamespace(arch="sd1", vae=vae)
        latents = torch.randn((1, 4, 64, 64), generator=torch.Generator().manual_seed(0))
        costs = preview_costs(sd1, latents, max(1, args.repeat // 2))
        print("\nSD1-sized VAE (random weights), 64x64 latents -> 512x512")
        print(f"{'method':<14}{'ms/preview':>12}{'/ Full':>9}")
        for method, seconds in costs.items():
            print(f"{method:<14}{seconds * 1000:>12.2f}{seconds / costs['Full']:>9.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
