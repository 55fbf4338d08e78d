"""GPU smoke test: a full-size SD 1.5 single file with random weights, loaded and run in fp16.

Builds the file from `configs/sd1` with the exact A1111 key layout (about 2 GB, in a temp
folder), loads it through the product's loader on the best device (fp16 on CUDA), generates
512x512 and prints the sampling speed in it/s. With `--addons` it then runs a weighted
100-token prompt with a LoRA (kohya layout, random) and a textual-inversion embedding on the
same device and dtype, and checks that switching the LoRA off gives the base image back.
`--service` instead runs txt2img jobs through the queue and the generation service, as the
page does, with config.json-style settings and live previews, and prints what previews cost.
`--offload` compares --medvram and --lowvram with neither (time and peak VRAM as ratios, same
latents and image, a LoRA on the --lowvram model, --lowvram's goal of 3x the time at 1.2 GiB).
On a CPU use `--size 64 --steps 2` (`--steps 4` with `--service`) to check the script itself.

    python bench/gpu_smoke.py [--size 512] [--steps 20] [--sampler "DPM++ 2M"] [--xformers] [--addons | --service | --offload]
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
    ap.add_argument("--addons", action="store_true", help="also run a long weighted prompt with a LoRA and an embedding")
    ap.add_argument("--service", action="store_true",
                    help="instead, run jobs through the queue and the generation service as the page does: "
                         "settings (jpg, filename pattern, CLIP skip), live previews and their cost")
    ap.add_argument("--offload", action="store_true",
                    help="instead, compare --medvram and --lowvram with neither: peak VRAM, speed, and the same image")
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
        if args.service:
            return check_service(path, args)
        if args.offload:
            return check_offload(path, args)
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
    return check_addons(model, params) if args.addons else 0


def check_service(path: Path, args) -> int:
    """The page's path on the real device: a ModelManager loads the file, a GenerationService
    with config.json-style settings (jpg, "[seed]-[model_name]", CLIP skip 2) runs txt2img jobs
    from the JobQueue, with live previews every 2 and every 10 steps (A1111's default) and
    without, alternating. Prints what previews cost as a ratio of job times, and checks the
    previews came, have the image's size, and that the saved JPEG names and carries its
    settings. Exit status 1 otherwise."""
    from modules.generation.devices import device_settings
    from modules.jobs.generation_task import GenerationService
    from modules.jobs.queue import JobQueue, JobStatus
    from modules.models.catalog import HashCache
    from modules.models.manager import ModelManager
    from modules.options import OutputSettings
    from modules.outputs.infotext import read_infotext_from_image
    from PIL import Image

    data = path.parent / "data"
    models = ModelManager((path.parent,), CONFIGS, lambda: device_settings(xformers=args.xformers, no_half=args.no_half), HashCache(None))
    t0 = time.perf_counter()
    models.load()
    print(f"ModelManager loaded {models.active.info.model_name} on {models.active.model.device} in {time.perf_counter() - t0:.1f}s", flush=True)
    service = GenerationService(models, OutputSettings(samples_format="jpg", samples_filename_pattern="[seed]-[model_name]"), data,
                                console_progress=False)
    service.use_settings({"CLIP_stop_at_last_layers": 2})
    queue = JobQueue()
    params = GenerationParams.create(prompt="a photo of a cat", width=args.size, height=args.size, steps=args.steps,
                                     sampler_name=args.sampler, seed=7, **service.prompt_settings())  # as the txt2img tab builds them

    def run(every: int) -> tuple[float, int, set]:
        job = queue.submit("txt2img", lambda j: service.run_txt2img(j, params, save=True))
        if every:
            job.progress.want_preview(every, for_seconds=600)
        seen: dict[int, object] = {}
        while not job.finished.is_set():
            preview = job.progress.preview
            if preview is not None:
                seen[id(preview)] = preview
            time.sleep(0.002)
        if job.status is not JobStatus.DONE:
            raise RuntimeError(f"job ended {job.status.value}: {job.error}")
        return job.run_seconds or 0.0, len(seen), {p.size for p in seen.values()}

    try:
        run(0)  # warm-up
        times: dict[int, list[float]] = {0: [], 10: [], 2: []}
        counts: dict[int, int] = {}
        sizes: set = set()
        for _ in range(3):
            for every in times:
                seconds, count, shapes = run(every)
                times[every].append(seconds)
                counts[every] = max(counts.get(every, 0), count)
                sizes |= shapes
    finally:
        queue.shutdown()
    median = {k: sorted(v)[1] for k, v in times.items()}
    print(f"job {args.size}px {args.steps} steps: no previews {median[0]:.2f}s; previews every 10 steps {median[10]:.2f}s "
          f"(ratio {median[10] / median[0]:.2f}, {counts[10]} seen); every 2 steps {median[2]:.2f}s (ratio {median[2] / median[0]:.2f}, "
          f"{counts[2]} seen); preview sizes {sorted(sizes)}")
    saved = sorted(data.rglob("*.jpg"))
    text = ""
    if saved:
        with Image.open(saved[0]) as image:
            text = read_infotext_from_image(image) or ""
    print(f"saved {len(saved)} jpg, first {saved[0].name if saved else None}; infotext has Clip skip 2: {'Clip skip: 2' in text}")
    ok = (counts[2] >= min(2, args.steps // 2) and counts[10] >= min(1, args.steps // 10) and counts[0] == 0
          and sizes <= {(args.size, args.size)} and saved
          and saved[0].name == f"00000-7-{path.stem}.jpg" and "Clip skip: 2" in text)
    if not ok:
        print("FAIL: previews missing or the wrong size, or the saved file's name or infotext is not what the settings say")
        return 1
    return 0


def check_offload(path: Path, args) -> int:
    """--medvram and --lowvram as the app loads them (ModelManager with those flags; the
    baseline with --always-high-vram, so a small card's automatic plan does not offload it):
    for each, one txt2img's time and peak GPU memory, as ratios to no offload, and the largest
    differences from the no-offload final latents and image (0 expected: the same kernels on
    the same weights). Then a LoRA on the --lowvram model (its streamed UNet gets new weights).
    Exit status 1 when an offload mode changes the result or does not lower the peak, or, at
    512 px on CUDA, when --lowvram misses its goal (at most 3x the time, at most 1.2 GiB)."""
    import numpy as np

    from modules.generation.devices import MemoryFlags, auto_memory, memory_line
    from modules.models.catalog import HashCache
    from modules.models.manager import ModelManager

    cuda = torch.cuda.is_available()
    if cuda:
        props = torch.cuda.get_device_properties(0)
        print("automatic plan here:", memory_line(props.name, props.total_memory, auto_memory(props.total_memory), MemoryFlags()))
    params = GenerationParams.create(prompt="a photo of a cat", width=args.size, height=args.size, steps=args.steps, sampler_name=args.sampler, seed=5)
    rows = {}
    status = 0
    for name, flags in (("none", {"always_high_vram": True}), ("medvram", {"medvram": True}), ("lowvram", {"lowvram": True})):
        devices = device_settings(xformers=args.xformers, no_half=args.no_half, **flags)
        models = ModelManager((path.parent,), CONFIGS, lambda d=devices: d, HashCache(None))
        models.load()
        runner = Runner(models.active.model)
        list(runner.txt2img(params.model_copy(update={"steps": 2}), 1))  # warm-up (group offloading traces its order here)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        seen: list[torch.Tensor] = []
        control = RunControl(on_step=lambda info: seen.append(info.latents.float().cpu()))
        t0 = time.perf_counter()
        (image,) = [im for batch in runner.txt2img(params, 5, control) for im in batch.images]
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
        rows[name] = (seconds, peak, seen[-1], np.asarray(image).astype(int))
        if name == "lowvram":
            print("LoRA on the --lowvram model:", flush=True)
            status |= check_addons(models.active.model, params.model_copy(update={"steps": min(args.steps, 8)}))
        models.unload()
        del runner, models
    base_seconds, base_peak, base_latents, base_image = rows["none"]
    for name, (seconds, peak, latents, image) in rows.items():
        diff = int(np.abs(image - base_image).max())
        drift = (latents - base_latents).abs().max().item()
        print(f"{name:8} {args.size}px {args.steps} steps: {seconds:.2f}s (x{seconds / base_seconds:.2f} of no offload), "
              f"peak VRAM {peak:.2f} GiB (x{peak / base_peak if base_peak else 0:.2f}), "
              f"max |latent diff| {drift:.5f}, max pixel diff {diff} from no offload", flush=True)
        if name != "none" and (diff > 1 or drift > 1e-3 or (base_peak and peak >= base_peak)):
            print(f"FAIL: {name} changed the result or did not lower the peak GPU memory")
            status = 1
    seconds, peak = rows["lowvram"][0] / base_seconds, rows["lowvram"][1]
    if cuda and args.size == 512:
        met = seconds <= 3.0 and peak <= 1.2
        print(f"goal --lowvram at most 3x the time and 1.2 GiB: x{seconds:.2f}, {peak:.2f} GiB: {'met' if met else 'NOT met'}")
        status |= 0 if met else 1
    return status


def check_addons(model, params: GenerationParams) -> int:
    """A LoRA and an embedding on the real device: the final latents change and hold no NaN,
    and the base latents come back once the LoRA is off (random weights decode to flat grey,
    so latents, not pixels, are compared)."""
    from safetensors.torch import save_file

    from modules.generation.runner import PromptSetup
    from modules.models.catalog import HashCache
    from modules.models.lora import LoraLibrary

    def final_latents(runner, prompt: str) -> tuple[torch.Tensor, float]:
        seen: list[torch.Tensor] = []
        control = RunControl(on_step=lambda info: seen.append(info.latents.float().cpu()))
        t0 = time.perf_counter()
        list(runner.txt2img(params.model_copy(update={"prompt": prompt}), 1, control))
        return seen[-1], time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_file(random_kohya_lora(model.unet, model.text_encoder), str(folder / "smoke.safetensors"))
        embeddings = _OneEmbedding("smokeemb", torch.randn(2, model.text_encoder.config.hidden_size) * 0.02)
        runner = Runner(model, PromptSetup(loras=LoraLibrary((folder,), HashCache(None)), embeddings=embeddings))
        long_prompt = "a (photo:1.2) of a [cat:dog:0.5], smokeemb, " + ", ".join(["highly detailed", "sharp focus", "soft light"] * 12)
        base, _ = final_latents(runner, params.prompt)
        with_lora, seconds = final_latents(runner, f"{long_prompt} <lora:smoke:0.8>")
        again, _ = final_latents(runner, params.prompt)
    changed, restored = (with_lora - base).abs().max().item(), (again - base).abs().max().item()
    print(f"long weighted prompt + LoRA + embedding: {seconds:.2f}s, NaN: {bool(torch.isnan(with_lora).any())}, "
          f"max |latent change| {changed:.4f}; LoRA off again: max |latent diff| from base {restored:.6f}")
    if torch.isnan(with_lora).any() or changed == 0 or restored > 1e-3:
        print("FAIL: the LoRA run made NaN or no change, or switching it off did not restore the base")
        return 1
    return 0


class _OneEmbedding:
    """A one-entry embedding library, so the smoke test needs no files for it."""

    version = 1

    def __init__(self, name: str, vectors: torch.Tensor):
        self.name, self.vectors, self.names = name, vectors, [name]

    def get(self, name: str):
        return self if name == self.name else None

    def for_width(self, width: int):
        return self.vectors if self.vectors.shape[-1] == width else None

    def refresh(self) -> None:
        pass

    def shorthash(self, embedding) -> None:
        return None


def random_kohya_lora(unet, text_encoder, rank: int = 8, scale: float = 0.01) -> dict[str, torch.Tensor]:
    """A LoRA in kohya's key layout for every attention projection of the UNet and the text
    encoder (the shapes are read off the model, so it fits any SD 1.x-sized model)."""
    g = torch.Generator().manual_seed(0)
    out: dict[str, torch.Tensor] = {}
    for prefix, module, leaves in (("lora_unet_", unet, ("to_q", "to_k", "to_v", "to_out.0")),
                                   ("lora_te_", text_encoder, ("q_proj", "k_proj", "v_proj", "out_proj"))):
        for name, layer in module.named_modules():
            if isinstance(layer, torch.nn.Linear) and name.endswith(leaves):
                key = prefix + name.replace(".", "_")
                out[f"{key}.lora_down.weight"] = torch.randn(rank, layer.in_features, generator=g) * scale
                out[f"{key}.lora_up.weight"] = torch.randn(layer.out_features, rank, generator=g) * scale
                out[f"{key}.alpha"] = torch.tensor(float(rank))
    return out


if __name__ == "__main__":
    sys.exit(main())
