#!/usr/bin/env python
"""What ControlNet units cost per sampling step, against none.

1. CPU (the default): the embedded demo model with the shipped demo ControlNet
   (models/ControlNet/demo-shapes-canny; a copy of the demo UNet's encoder with the same
   shapes when the folder is missing, which costs the same), 64x64, DPM++ 2M, CFG 5,
   through the generation core (Runner.txt2img with a ControlNetHook). One sampling step is
   (a 30-step run minus a 10-step run) / 20, so prompt encoding and decoding cancel out.
   The runs with 0, 1 and 2 units alternate within each round (the order rotates), and each
   figure is the median over --repeat rounds, so a busy machine slows all three alike.
2. --gpu (for a lent CUDA card): an SD 1.5-sized model and ControlNet, both random weights
   (configs/sd1 and configs/controlnet/sd15), fp16, 512x512 by default: it/s and peak VRAM
   with 0 and 1 unit, with the whole model on the GPU and with --medvram's offload
   (modules/generation/offload.py "model": text encoder, UNet and VAE take turns on the GPU;
   the ControlNet, which runs every step beside the UNet, stays there).

Run from the repository root:  venv/bin/python bench/controlnet_cost.py [--repeat 5] [--threads 0]
                               venv/bin/python bench/controlnet_cost.py --gpu [--size 512] [--steps 20]
                               venv/bin/python bench/controlnet_cost.py --gpu-on-cpu --size 64 --steps 4   (checks the --gpu code)
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
DEMO_CONTROLNET = REPO / "models" / "ControlNet" / "demo-shapes-canny"
PROMPT = "a red square on a blue background"


def hooks_for(controlnet, maps, weight: float = 1.0):
    """One canny unit per detected map, all on ``controlnet``; None for no map."""
    from modules.controlnet.hook import ControlNetHook, PreparedUnit
    from modules.controlnet.units import UnitSettings
    from modules.generation.hooks import Hooks

    if not maps:
        return None
    settings = UnitSettings(enabled=True, module="canny", model="bench", weight=weight, resize_mode="Just Resize")
    return Hooks([ControlNetHook([PreparedUnit(settings, controlnet, m, "canny") for m in maps])])


def run(runner, size: int, steps: int, hooks, sampler: str = "DPM++ 2M", cfg: float = 5.0):
    import torch

    from modules.generation.params import GenerationParams

    params = GenerationParams.create(prompt=PROMPT, negative_prompt="", width=size, height=size, steps=steps,
                                     seed=1, sampler_name=sampler, cfg_scale=cfg)
    with torch.inference_mode():
        return [im for batch in runner.txt2img(params, 1, hooks=hooks) for im in batch.images]


def square_maps(size: int, count: int):
    """Canny maps of squares at different places (the units' detected maps)."""
    import numpy as np
    from PIL import Image

    from modules.demo import shapes
    from modules.demo.controlnet_training import canny_map

    maps = []
    for k in range(count):
        left = size * (0.1 + 0.4 * k)
        coverage = shapes.outline_mask(shapes.OUTLINES["square"], (left, size * 0.3, left + size * 0.4, size * 0.7), size)
        maps.append(Image.fromarray(canny_map(np.repeat(np.rint(coverage * 255).astype(np.uint8)[..., None], 3, axis=2))))
    return maps


def cpu_bench(args) -> int:
    import torch
    from diffusers import ControlNetModel

    from modules.demo import controlnet_training
    from modules.demo.embedded import EMBEDDED_PATH
    from modules.demo.evaluation import load_demo
    from modules.generation.runner import Runner

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    model = load_demo(EMBEDDED_PATH, CONFIGS)
    if (DEMO_CONTROLNET / "config.json").is_file():
        controlnet = ControlNetModel.from_pretrained(DEMO_CONTROLNET, torch_dtype=torch.float32, local_files_only=True)
        source = str(DEMO_CONTROLNET.relative_to(REPO))
    else:
        controlnet = controlnet_training.build_controlnet(model.unet, controlnet_training.Recipe())
        source = "a copy of the demo UNet's encoder (shipped folder missing)"
    controlnet.eval()
    runner = Runner(model)
    maps = square_maps(args.size, 2)
    setups = {0: None, 1: hooks_for(controlnet, maps[:1]), 2: hooks_for(controlnet, maps)}

    def seconds(units: int, steps: int) -> float:
        started = time.perf_counter()
        run(runner, args.size, steps, setups[units])
        return time.perf_counter() - started

    for units in setups:  # warm-up
        seconds(units, 2)
    per_step = {units: [] for units in setups}
    order = list(setups)
    for round_ in range(args.repeat):
        rotated = order[round_ % 3:] + order[:round_ % 3]
        for units in rotated:
            long_run, short_run = seconds(units, 30), seconds(units, 10)
            per_step[units].append(max(1e-9, (long_run - short_run) / 20))
    median = {units: statistics.median(times) for units, times in per_step.items()}
    print(f"\nDemo model {args.size}x{args.size}, DPM++ 2M, CFG 5; ControlNet: {source}")
    print(f"{'units':<7}{'ms/step':>10}{'x none':>9}")
    for units, value in median.items():
        print(f"{units:<7}{value * 1000:>10.2f}{value / median[0]:>9.2f}")
    return 0


def sd15_model(device, dtype, offload_mode: str):
    """An SD 1.5-sized LoadedModel with random weights, built on the CPU, then moved to
    ``device`` whole or with the offload hooks."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from modules.generation.offload import offload
    from modules.models.loaded import LoadedModel
    from modules.models.loader import build_tokenizer

    torch.manual_seed(0)
    folder = CONFIGS / "sd1"
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")).to(dtype).eval()
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")).to(dtype).eval()
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")).to(dtype).eval()
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    model = LoadedModel(arch="sd1", unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=build_tokenizer(CONFIGS),
                        scheduler_config=scheduler, device=torch.device("cpu"), dtype=dtype, vae_dtype=dtype)
    offload(model, device, offload_mode)
    return model


def sd15_controlnet(device, dtype):
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(1)
    config = ControlNetModel.load_config(CONFIGS / "controlnet" / "sd15")
    return ControlNetModel.from_config(config).to(device, dtype).eval()


def gpu_bench(args) -> int:
    """--gpu: CUDA in fp16. With --gpu-on-cpu the same code runs on the CPU in fp32 (a check of
    the script at a small --size, not a measurement: no VRAM, and offload moves nothing)."""
    import gc

    import torch

    from modules.generation.runner import Runner

    if args.gpu_on_cpu:
        device, dtype = torch.device("cpu"), torch.float32
        print(f"torch {torch.__version__}, CPU check of the --gpu path, fp32, {args.size}x{args.size}")
    elif not torch.cuda.is_available():
        print("--gpu needs a CUDA device; none is available")
        return 2
    else:
        device, dtype = torch.device("cuda"), torch.float16
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device)}, fp16, {args.size}x{args.size}, "
              f"{args.steps} steps DPM++ 2M, random SD 1.5-sized weights")
    cuda = device.type == "cuda"

    def timed_run(runner, steps: int, hooks) -> float:
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        run(runner, args.size, steps, hooks)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - started

    maps = square_maps(args.size, 1)
    rows = []
    for mode, label in (("none", "all on GPU"), ("model", "--medvram")):
        model = sd15_model(device, dtype, mode)
        controlnet = sd15_controlnet(device, dtype)
        runner = Runner(model)
        for units in (0, 1):
            hooks = hooks_for(controlnet, maps[:units])
            run(runner, args.size, 2, hooks)  # warm-up
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            long_run = timed_run(runner, args.steps, hooks)
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
            short_run = timed_run(runner, args.steps // 2, hooks)
            per_step = max(1e-9, (long_run - short_run) / (args.steps - args.steps // 2))
            rows.append((label, units, 1 / per_step, peak))
        del model, controlnet, runner
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    base = {label: its for label, units, its, _ in rows if units == 0}
    print(f"{'placement':<12}{'units':>6}{'it/s':>9}{'x time':>8}{'peak VRAM GiB':>15}")
    for label, units, its, peak in rows:
        print(f"{label:<12}{units:>6}{its:>9.2f}{base[label] / its:>8.2f}{peak:>15.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="SD 1.5-sized random model and ControlNet on CUDA, fp16")
    parser.add_argument("--gpu-on-cpu", action="store_true", help="run the --gpu code on the CPU in fp32 (checks the script)")
    parser.add_argument("--size", type=int, default=None, help="picture size (default 64 on the CPU, 512 with --gpu)")
    parser.add_argument("--steps", type=int, default=20, help="--gpu: steps of the timed run")
    parser.add_argument("--repeat", type=int, default=7, help="CPU: rounds of alternating runs")
    parser.add_argument("--threads", type=int, default=0, help="CPU: torch threads (0: torch's default)")
    args = parser.parse_args()
    args.gpu = args.gpu or args.gpu_on_cpu
    args.size = args.size or (512 if args.gpu and not args.gpu_on_cpu else 64)
    return gpu_bench(args) if args.gpu else cpu_bench(args)


if __name__ == "__main__":
    sys.exit(main())
