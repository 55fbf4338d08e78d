"""GPU smoke test: a full-size SD 1.5 single file with random weights, loaded and run in fp16.

Builds the file from `configs/sd1` with the exact A1111 key layout (about 2 GB, in a temp
folder), loads it through the product's loader on the best device (fp16 on CUDA), generates
512x512 and prints the sampling speed in it/s. On a CPU use `--size 64 --steps 2` to check the
script itself.

    python bench/gpu_smoke.py [--size 512] [--steps 20] [--sampler "DPM++ 2M"] [--xformers]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from modules.generation.control import RunControl  # noqa: E402
from modules.generation.devices import apply_attention, device_settings  # noqa: E402
from modules.generation.params import GenerationParams  # noqa: E402
from modules.generation.runner import Runner  # noqa: E402
from modules.models.ldm_keys import ldm_meta_state_dict, write_random_safetensors  # noqa: E402
from modules.models.loader import load_checkpoint  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sampler", default="DPM++ 2M")
    ap.add_argument("--xformers", action="store_true")
    ap.add_argument("--no-half", action="store_true")
    args = ap.parse_args()

    devices = device_settings(xformers=args.xformers, no_half=args.no_half)
    print(f"torch {torch.__version__}, device {devices.describe()}", flush=True)
    if devices.device.type == "cuda":
        print(torch.cuda.get_device_name(devices.device), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sd15-random-fp16.safetensors"
        t0 = time.perf_counter()
        write_random_safetensors(path, ldm_meta_state_dict("sd1", CONFIGS / "sd1"), dtype=torch.float16, seed=0)
        print(f"wrote {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t0:.1f}s", flush=True)
        t0 = time.perf_counter()
        model = load_checkpoint(path, configs_dir=CONFIGS, device=devices.device, dtype=devices.dtype, vae_dtype=devices.vae_dtype)
        apply_attention(model.unet, devices)
        print(f"loaded as {model.arch} ({model.dtype}, VAE {model.vae_dtype}) in {time.perf_counter() - t0:.1f}s", flush=True)

    runner = Runner(model)
    params = GenerationParams.create(prompt="a photo of a cat", negative_prompt="blurry", width=args.size, height=args.size, steps=args.steps, sampler_name=args.sampler, seed=1)
    list(runner.txt2img(params.model_copy(update={"steps": 2}), 1))  # warm-up
    stamps: list[float] = []
    control = RunControl(on_step=lambda info: stamps.append(time.perf_counter()))
    t0 = time.perf_counter()
    images = [im for batch in runner.txt2img(params, 1, control) for im in batch.images]
    total = time.perf_counter() - t0
    sampling = stamps[-1] - stamps[0]
    print(f"{args.size}x{args.size}, {args.steps} steps, {args.sampler}: {len(stamps) - 1} steps in {sampling:.2f}s = {(len(stamps) - 1) / sampling:.2f} it/s; whole image {total:.2f}s; size {images[0].size}")
    if devices.device.type == "cuda":
        print(f"peak VRAM {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
