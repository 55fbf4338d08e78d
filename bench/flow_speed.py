#!/usr/bin/env python
"""Flux.1 and SD 3.5 medium: our core against diffusers' pipelines on one GPU, in one run (issue 25).

For each model (Flux.1 dev at 20 steps, Flux.1 schnell at 4, SD 3.5 medium at 20; 1024x1024,
batch 1, Euler with the Simple schedule) it builds the full-size parts from configs/<arch>/
with random weights, seeded and initialised directly on the device in bf16 (nothing is read
from disk but the configs and the shipped tokenizers; nothing is downloaded), and times over
the very same component objects
- ours: `runner_for(model).txt2img(params, seed)` (FlowRunner), as the app's worker calls it;
- diffusers: FluxPipeline / StableDiffusion3Pipeline built from the same objects, given the
  core's initial noise as `latents=` and the same prompt, so the pictures must agree.

Variants of the transformer's storage, in this order on the same weights:
- bf16;
- gguf-q8_0: the bf16 weights quantized to GGUF Q8_0 by the gguf package (every Linear
  weight; the rest stays bf16) and loaded through diffusers' GGUFQuantizationConfig, the way
  modules/models/flow_loader.py loads a .gguf file (`--no-gguf` skips it; without the gguf
  package the output says so);
- fp8: diffusers' layerwise casting (float8_e4m3fn storage, bf16 compute), as flow_loader
  keeps a transformer stored in float8.
Each pair of paths runs after a warm-up in alternating order, --repeats times; medians.
it/s is sampling only (CUDA events at the step callbacks, no sync per step), s/img the whole
job, peak VRAM torch.cuda.max_memory_allocated (reset before each run, so it includes the
resident weights), "vs diff" diffusers' s/img over ours (>= 1.00: ours is as fast), px the
max pixel difference from diffusers' picture (same variant) and, for gguf/fp8, "px bf16" the
difference from our bf16 picture (what the storage costs in pixels, on random weights).

`--cpu` (the default without CUDA) runs the same code at tiny widths (the real configs with
the widths cut as tests/models/flow_tiny.py cuts them), 64x64, 4 steps (schnell 2), fp32:
a check of the script itself, not of speed.

`--medvram` adds the plain variant with the parts offloaded to system RAM, one on the GPU at a
time: ours through modules.generation.offload's "model" turns, diffusers' through
enable_model_cpu_offload; the two paths run one after the other there.

    venv/bin/python bench/flow_speed.py [--only flux-dev,flux-schnell,sd35-medium] [--variants bf16,gguf,fp8]
                                        [--no-gguf] [--medvram] [--dtype bf16|fp16|fp32] [--repeats N]
                                        [--warmups N] [--json PATH] [--cpu [--threads N]]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
CONFIGS = REPO / "configs"

import torch  # noqa: E402
from gpu_speed import Row, free, header, log, max_px_diff, measured, median  # noqa: E402
from gpu_speed import format_row as gpu_format_row  # noqa: E402

PROMPT = "a photo of a cat sitting on a windowsill, soft light"
NEGATIVE = "blurry, low quality"
SEED = 1234
VARIANTS = ("bf16", "gguf", "fp8")
PATHS = ("ours", "diffusers")


@dataclass(frozen=True)
class Spec:
    arch: str  # configs/<arch>, LoadedModel.arch
    size: int
    steps: int
    cfg: float  # classic CFG (SD 3.5); Flux runs at 1 with no negative prompt
    distilled: float = 3.5  # Flux dev's guidance embedding
    variants: tuple[str, ...] = ("bf16", "gguf", "fp8")  # without --variants

    @property
    def flux(self) -> bool:
        return self.arch.startswith("flux")


# schnell skips GGUF unless --variants asks: quantizing its 12B transformer again costs more than its runs.
GPU_SPECS = (Spec("flux-dev", 1024, 20, 1.0), Spec("flux-schnell", 1024, 4, 1.0, variants=("bf16", "fp8")),
             Spec("sd35-medium", 1024, 20, 4.5))
CPU_SPECS = tuple(dataclasses.replace(s, size=64, steps=max(2, s.steps // 5)) for s in GPU_SPECS)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

# --cpu: the released configs with the widths cut as tests/models/flow_tiny.py cuts them
# (CLIP-L 32, CLIP-G 48, T5 96, VAE 32 channels); vocabularies stay, so the shipped tokenizers fit.
TINY = {
    "FluxTransformer2DModel": dict(num_layers=1, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                                   joint_attention_dim=96, pooled_projection_dim=32, axes_dims_rope=[4, 6, 6]),
    "SD3Transformer2DModel": dict(num_layers=2, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=96,
                                  caption_projection_dim=32, pooled_projection_dim=80, pos_embed_max_size=16, sample_size=8,
                                  dual_attention_layers=[0]),
    "AutoencoderKL": dict(block_out_channels=[32, 32, 32, 32], layers_per_block=1, norm_num_groups=32),
    "clip_l": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32),
    "clip_g": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, projection_dim=48),
    "t5": dict(d_model=96, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
}
TRANSFORMERS_CLASSES = {"flux": {"text_encoder": "CLIPTextModel", "text_encoder_2": "T5EncoderModel"},
                        "sd3": {"text_encoder": "CLIPTextModelWithProjection", "text_encoder_2": "CLIPTextModelWithProjection",
                                "text_encoder_3": "T5EncoderModel"}}


WIDTHS = (44, 10)  # case and path columns
HEADER = header(WIDTHS)


def format_row(row: Row) -> str:
    return gpu_format_row(row, WIDTHS)


# --------------------------------------------------------------------------- building the model


@contextlib.contextmanager
def created_on(device: torch.device, dtype: torch.dtype):
    """New tensors on `device` in `dtype`: a module is built and initialised there, with no
    fp32 copy in system RAM first (Flux's transformer is 24 GB in bf16)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(before)


def config_folder(arch: str, tiny: bool, work: Path) -> Path:
    """configs/<arch>, or for --cpu a copy with the widths cut (diffusers' from_single_file,
    used for the GGUF variant, reads the transformer's config from a folder)."""
    source = CONFIGS / arch
    if not tiny:
        return source
    target = work / f"configs-{arch}"
    if target.is_dir():
        return target
    for file in source.rglob("*.json"):
        config = json.loads(file.read_text())
        if file.name == "config.json":
            config.update(tiny_overrides(config))
        out = target / file.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(config, indent=1))
    return target


def tiny_overrides(config: dict) -> dict:
    name = config.get("_class_name") or (config.get("architectures") or [""])[0]
    if name in TINY:
        return TINY[name]
    if config.get("model_type") == "t5" or "d_model" in config:
        return TINY["t5"]
    if "hidden_size" in config:  # CLIP-L 768, CLIP-G 1280
        return TINY["clip_g" if config["hidden_size"] >= 1280 else "clip_l"]
    return {}


def build_model(spec: Spec, folder: Path, device: torch.device, dtype: torch.dtype, shared: dict | None = None):
    """A LoadedModel with seeded random weights made on `device`; `shared` reuses another model's
    text encoders and VAE (Flux dev and schnell have the same ones)."""
    import diffusers
    import transformers
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

    from modules.models.flow_loader import PartFolders, t5_tokenizer
    from modules.models.loaded import LoadedModel, family_of
    from modules.models.loader import build_tokenizer

    family = family_of(spec.arch)
    parts: dict = {}
    seed = 0
    for slot, cls_name in TRANSFORMERS_CLASSES[family].items():
        seed += 1
        if shared and slot in shared:
            parts[slot] = shared[slot]
            continue
        cls = getattr(transformers, cls_name)
        config = cls.config_class.from_pretrained(str(folder / slot), local_files_only=True)
        torch.manual_seed(seed)
        with created_on(device, dtype):
            parts[slot] = cls(config).to(device=device, dtype=dtype).eval().requires_grad_(False)
    if shared and "vae" in shared:
        parts["vae"] = shared["vae"]
    else:
        torch.manual_seed(10)
        with created_on(device, dtype):
            parts["vae"] = on_device(AutoencoderKL.from_config(AutoencoderKL.load_config(str(folder / "vae"))), device, dtype)
    transformer_config = json.loads((folder / "transformer" / "config.json").read_text())
    torch.manual_seed(20)
    with created_on(device, dtype):
        cls = getattr(diffusers, transformer_config["_class_name"])
        transformer = on_device(cls.from_config(transformer_config), device, dtype)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(folder), subfolder="scheduler", local_files_only=True)
    t5 = t5_tokenizer([], PartFolders(), CONFIGS / "t5-tokenizer")
    tokenizers = {"tokenizer": build_tokenizer(CONFIGS)}
    if family == "flux":
        tokenizers["tokenizer_2"] = t5
    else:
        tokenizers.update(tokenizer_2=build_tokenizer(CONFIGS, pad_token="!"), tokenizer_3=t5)
    return LoadedModel(arch=spec.arch, unet=transformer, vae=parts["vae"], text_encoder=parts["text_encoder"],
                       scheduler_config=dict(scheduler.config), device=device, dtype=dtype, vae_dtype=dtype,
                       text_encoder_2=parts.get("text_encoder_2"), text_encoder_3=parts.get("text_encoder_3"),
                       source=folder, **tokenizers)


def on_device(module, device: torch.device, dtype: torch.dtype):
    """Every tensor on `device` in `dtype`, as a loader's from_pretrained(dtype=) leaves them: a
    buffer an __init__ makes from numpy (SD3's positional embedding) ignores the default device.
    diffusers' note that no module is kept in float32 is silenced."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    finally:
        logging.set_verbosity(level)


def weight_gib(module) -> float:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers())) / 2**30


def size(gib: float) -> str:
    return f"{gib:.2f} GiB" if gib >= 0.1 else f"{gib * 1024:.1f} MiB"


# --------------------------------------------------------------------------- storage variants


def gguf_q8_state(transformer, threads: int) -> dict:
    """The transformer's state dict with every Linear weight quantized to GGUF Q8_0 by the gguf
    package (rows of 32-value blocks, one fp16 scale each), on the CPU; the rest in its dtype.
    Raises ImportError without the gguf package."""
    import gguf
    from diffusers.quantizers.gguf.utils import GGUFParameter
    from gguf.quants import quantize

    q8 = gguf.GGMLQuantizationType.Q8_0
    linear = {f"{name}.weight" for name, m in transformer.named_modules()
              if isinstance(m, torch.nn.Linear) and m.in_features % 32 == 0}
    state = transformer.state_dict()

    def one(key: str):
        tensor = state[key]
        if key not in linear:
            return key, tensor.detach().to("cpu", copy=True)
        data = quantize(tensor.detach().cpu().float().numpy(), q8)
        return key, GGUFParameter(torch.from_numpy(data), quant_type=q8)

    with ThreadPoolExecutor(max_workers=threads) as pool:  # numpy releases the GIL in the block arithmetic
        return dict(pool.map(one, list(state)))


def gguf_transformer(state: dict, folder: Path, device: torch.device, dtype: torch.dtype):
    """The quantized transformer as flow_loader loads a .gguf file: diffusers' from_single_file
    with GGUFQuantizationConfig (the keys are already diffusers', so nothing is converted)."""
    import diffusers
    from diffusers import GGUFQuantizationConfig

    name = json.loads((folder / "transformer" / "config.json").read_text())["_class_name"]
    model = getattr(diffusers, name).from_single_file(state, config=str(folder), subfolder="transformer", local_files_only=True,
                                                      dtype=dtype, quantization_config=GGUFQuantizationConfig(compute_dtype=dtype))
    return model.to(device).eval().requires_grad_(False)


# --------------------------------------------------------------------------- the two paths


def make_params(spec: Spec):
    from modules.generation.params import GenerationParams

    return GenerationParams.create(prompt=PROMPT, negative_prompt="" if spec.flux else NEGATIVE, width=spec.size, height=spec.size,
                                   steps=spec.steps, sampler_name="Euler", scheduler="Simple", cfg_scale=spec.cfg,
                                   distilled_cfg_scale=spec.distilled, batch_size=1, seed=SEED)


def run_ours(runner, params):
    from modules.generation.control import RunControl

    def go(stamps) -> list:
        return [im for batch in runner.txt2img(params, SEED, RunControl(on_step=stamps)) for im in batch.images]

    return go


def make_pipeline(model):
    """diffusers' own pipeline over the model's objects, with the model's scheduler config."""
    import diffusers

    common = dict(scheduler=diffusers.FlowMatchEulerDiscreteScheduler.from_config(model.scheduler_config), vae=model.vae,
                  text_encoder=model.text_encoder, tokenizer=model.tokenizer, text_encoder_2=model.text_encoder_2,
                  tokenizer_2=model.tokenizer_2, transformer=model.unet)
    if model.family == "flux":
        pipe = diffusers.FluxPipeline(**common)
    else:
        pipe = diffusers.StableDiffusion3Pipeline(**common, text_encoder_3=model.text_encoder_3, tokenizer_3=model.tokenizer_3)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_diffusers(pipe, model, spec: Spec):
    """The pipeline on the core's first noise (drawn as FlowRunner draws it; packed for Flux)."""
    from diffusers import FluxPipeline

    from modules.generation.noise import ImageNoise

    scale = 2 ** (len(model.vae.config.block_out_channels) - 1)
    channels = model.vae.config.latent_channels
    latents = ImageNoise([SEED], (channels, spec.size // scale, spec.size // scale), model.device, model.dtype, "GPU").first()
    if spec.flux:
        latents = FluxPipeline._pack_latents(latents, 1, channels, spec.size // scale, spec.size // scale)
        kwargs = dict(guidance_scale=spec.distilled)
    else:
        kwargs = dict(negative_prompt=NEGATIVE, guidance_scale=spec.cfg)

    def go(stamps) -> list:
        def on_step(_pipe, _i, _t, values):
            stamps()
            return values

        out = pipe(PROMPT, height=spec.size, width=spec.size, num_inference_steps=spec.steps, latents=latents.clone(),
                   output_type="pil", callback_on_step_end=on_step, **kwargs)
        return list(out.images)

    return go


def compare(case: str, model, spec: Spec, device: torch.device, repeats: int, warmups: int, reference: list | None,
            note: str = "", ref_label: str = "bf16", medvram: bool = False) -> tuple[list[Row], list | None]:
    """Ours and diffusers on `model`, warm-ups then alternating repeats; rows and our picture.
    `medvram`: each path with its own component offloading (ours: --medvram's turns, diffusers':
    enable_model_cpu_offload), one path after the other."""
    from modules.generation.flow_runner import runner_for

    runs: dict[str, list] = {name: [] for name in PATHS}
    first: dict[str, list] = {}
    failed: dict[str, str] = {}

    def attempt(name: str, r: int, fn) -> None:
        if name in failed:
            return
        try:
            run = measured(device, fn)
        except Exception as exc:  # noqa: BLE001 - an OOM or a failure on one path must not end the run
            traceback.print_exc()
            failed[name] = f"{type(exc).__name__}: {exc}"
            free(device)
            return
        first.setdefault(name, run.images)
        if r >= warmups:
            runs[name].append(run)

    if medvram:
        for name in PATHS:
            try:
                fn, undo = offloaded_path(name, model, spec, device)
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                failed[name] = f"{type(exc).__name__}: {exc}"
                continue
            try:
                for r in range(warmups + repeats):
                    attempt(name, r, fn)
            finally:
                del fn
                undo()
        fns = None
    else:
        fns = {"ours": run_ours(runner_for(model), make_params(spec)), "diffusers": run_diffusers(make_pipeline(model), model, spec)}
        for r in range(warmups + repeats):
            for name in (PATHS if r % 2 == 0 else PATHS[::-1]):
                attempt(name, r, fns[name])
    del fns
    free(device)
    rows = []
    spi = {name: median(r.seconds for r in runs[name]) for name in PATHS}
    for name in PATHS:
        if name in failed or not runs[name]:
            rows.append(Row(case, name, error=failed.get(name, "no timed run")))
            continue
        row = Row(case, name, its=median(r.its for r in runs[name]), s_per_image=spi[name],
                  peak_gib=max((r.peak or 0.0) for r in runs[name]) or None, note=note)
        if any(_flat(im) for im in first.get(name, ())):
            row.note = f"flat picture (NaN or inf in the model?){'; ' if row.note else ''}{row.note}"
        if name == "ours":
            if spi["diffusers"]:
                row.vs = spi["diffusers"] / spi[name]
            if "diffusers" in first:
                row.px_diff = max_px_diff(first["ours"], first["diffusers"])
            if reference is not None:
                row.extra["px_vs_plain"] = max_px_diff(first["ours"], reference)
                row.note = f"px {ref_label} {row.extra['px_vs_plain']}" + (f"; {note}" if note else "")
            if device.type != "cuda" and "diffusers" in runs and runs["diffusers"]:
                cpu = {n: median(r.cpu_seconds for r in runs[n]) for n in PATHS}
                row.note += f"{'; ' if row.note else ''}CPU time x{cpu['diffusers'] / cpu['ours']:.3f}"
        rows.append(row)
        log(format_row(row))
    return rows, first.get("ours")


def offloaded_path(name: str, model, spec: Spec, device: torch.device):
    """(run, undo) for one path with its components offloaded to system RAM, each brought to
    `device` while it runs: ours through modules.generation.offload's "model" turns (--medvram,
    the transformer moving once per job), diffusers' through the pipeline's own
    enable_model_cpu_offload. `undo` puts the whole model back on `device`."""
    from modules.generation import offload
    from modules.generation.flow_runner import runner_for

    host = torch.device("cpu")
    for part in offload.parts(model):
        part.to(host)
    free(device)
    if name == "ours":
        offload.offload(model, device, "model")

        def undo() -> None:
            offload.keep_whole(model, device)

        return run_ours(runner_for(model), make_params(spec)), undo
    pipe = make_pipeline(model)
    pipe.enable_model_cpu_offload(device=device)

    def undo_pipe() -> None:
        pipe.remove_all_hooks()
        for part in offload.parts(model):
            part.to(device)
        model.device = device

    return run_diffusers(pipe, model, spec), undo_pipe


def _flat(image) -> bool:
    """One colour all over: what NaN or overflowing random weights decode to."""
    import numpy as np

    return int(np.ptp(np.asarray(image))) == 0


# --------------------------------------------------------------------------- one model


def bench_model(spec: Spec, folder: Path, device: torch.device, dtype: torch.dtype, variants: tuple[str, ...], repeats: int,
                warmups: int, shared: dict | None, threads: int, medvram: bool = False) -> tuple[list[Row], dict]:
    """Every variant of one model; returns the rows and its text encoders and VAE for the next."""
    rows: list[Row] = []
    t0 = time.perf_counter()
    model = build_model(spec, folder, device, dtype, shared)
    sizes = {"transformer": weight_gib(model.unet), "text": sum(weight_gib(m) for m in (model.text_encoder, model.text_encoder_2,
                                                                                         model.text_encoder_3) if m is not None),
             "vae": weight_gib(model.vae)}
    log(f"{spec.arch}: built {type(model.unet).__name__} {size(sizes['transformer'])}, text encoders {size(sizes['text'])}, "
        f"VAE {size(sizes['vae'])} ({dtype}) on {device} in {time.perf_counter() - t0:.1f}s"
        + (" (text encoders and VAE shared)" if shared else ""))
    base = f"{spec.arch} {spec.size}px {spec.steps} steps"
    reference = None
    gguf_state = None
    plain = "bf16" if dtype == torch.bfloat16 else str(dtype).removeprefix("torch.")  # --cpu: fp32
    if "bf16" in variants:
        found, reference = compare(f"{base} {plain}", model, spec, device, repeats, warmups, None)
        rows += found
    if medvram:
        found, _ = compare(f"{base} {plain} medvram", model, spec, device, repeats, warmups, reference,
                           "parts offloaded to RAM, one on the GPU at a time; paths in series", plain, medvram=True)
        rows += found
    if "gguf" in variants:  # quantized from the bf16 weights before fp8 casts them in place
        try:
            t1 = time.perf_counter()
            gguf_state = gguf_q8_state(model.unet, threads)
            log(f"{spec.arch}: quantized the transformer to GGUF Q8_0 with the gguf package in {time.perf_counter() - t1:.1f}s "
                f"({threads} threads)")
        except ImportError as exc:
            rows.append(Row(f"{base} gguf-q8_0", "-", error=f"skipped: the gguf package is not installed ({exc}); fp8 only"))
            log(format_row(rows[-1]))
    if "fp8" in variants:
        try:
            model.unet.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
            found, _ = compare(f"{base} fp8", model, spec, device, repeats, warmups, reference,
                               f"layerwise casting, transformer {size(weight_gib(model.unet))}", plain)
            rows += found
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            rows.append(Row(f"{base} fp8", "-", error=f"{type(exc).__name__}: {exc}"))
            log(format_row(rows[-1]))
    if gguf_state is not None:
        try:
            model.unet = None
            free(device)
            t1 = time.perf_counter()
            model = dataclasses.replace(model, unet=gguf_transformer(gguf_state, folder, device, dtype))
            gguf_state = None
            kernels = _gguf_cuda_kernels()
            note = (f"transformer {size(weight_gib(model.unet))}, loaded in {time.perf_counter() - t1:.1f}s; "
                    f"{'fused CUDA kernels' if kernels else 'dequantized per layer (the fused kernels are a Hub download: off)'}")
            found, _ = compare(f"{base} gguf-q8_0", model, spec, device, repeats, warmups, reference, note, plain)
            rows += found
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            rows.append(Row(f"{base} gguf-q8_0", "-", error=f"{type(exc).__name__}: {exc}"))
            log(format_row(rows[-1]))
    keep = {"text_encoder": model.text_encoder, "text_encoder_2": model.text_encoder_2, "vae": model.vae}
    del model
    free(device)
    return rows, keep


def _gguf_cuda_kernels() -> bool:
    """Whether diffusers' GGUFLinear has its fused CUDA kernels (DIFFUSERS_GGUF_CUDA_KERNELS and the
    kernels package, which fetches them from the Hub: never here, so each layer is dequantized)."""
    try:
        from diffusers.quantizers.gguf import utils

        return getattr(utils, "ops", None) is not None
    except ImportError:
        return False


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="tiny widths at 64x64 on the CPU (the default without CUDA)")
    ap.add_argument("--only", help="comma-separated: flux-dev, flux-schnell, sd35-medium")
    ap.add_argument("--variants", help="comma-separated: bf16 (the plain --dtype), gguf, fp8 (default: all; schnell bf16,fp8)")
    ap.add_argument("--dtype", choices=tuple(DTYPES), help="compute dtype (default bf16 on CUDA, fp32 with --cpu)")
    ap.add_argument("--no-gguf", action="store_true", help="skip the GGUF Q8_0 variant (quantizing Flux takes about a minute)")
    ap.add_argument("--medvram", action="store_true",
                    help="also the plain variant with the parts offloaded to RAM (ours: --medvram's turns; diffusers: enable_model_cpu_offload)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per path and variant (medians)")
    ap.add_argument("--warmups", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--threads", type=int, help="torch CPU threads (on a shared CPU, 1 is steadier)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import diffusers

    from modules.generation.devices import device_settings

    cpu = args.cpu or not torch.cuda.is_available()
    devices = device_settings(use_cpu=cpu)
    device = devices.device
    dtype = DTYPES[args.dtype] if args.dtype else (torch.float32 if cpu else torch.bfloat16)
    specs = [s for s in (CPU_SPECS if cpu else GPU_SPECS) if not args.only or s.arch in args.only.split(",")]
    unknown = set(args.only.split(",")) - {s.arch for s in GPU_SPECS} if args.only else set()
    if unknown or not specs:
        ap.error(f"--only takes {', '.join(s.arch for s in GPU_SPECS)} (not {', '.join(sorted(unknown)) or args.only})")
    asked = tuple(v for v in args.variants.split(",") if v in VARIANTS) if args.variants else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    log(f"torch {torch.__version__}, diffusers {diffusers.__version__}, device {name}, compute {dtype} "
        f"(the app's own dtype here: {devices.dtype}); variants {', '.join(asked) if asked else 'bf16, gguf, fp8 (schnell: bf16, fp8)'}"
        f"{' without gguf' if args.no_gguf else ''}")
    log(f"Euler Simple, batch 1, {args.repeats} repeats after {args.warmups} warm-up(s), medians; 'vs diff' = diffusers' s/img "
        f"over ours (>= 1.00: ours as fast); px = max pixel difference from diffusers' picture")
    rows: list[Row] = []
    threads = max(1, min(16, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="flow-speed-") as tmp:
        log(HEADER)
        shared = None
        for spec in specs:
            try:
                folder = config_folder(spec.arch, cpu, Path(tmp))
                variants = tuple(v for v in (asked or spec.variants) if not (v == "gguf" and args.no_gguf))
                reuse = shared if spec.flux and shared and shared.get("flux") else None
                shared = None  # let Flux's parts go before SD 3.5 is built: its peak VRAM must not count them
                free(device)
                found, keep = bench_model(spec, folder, device, dtype, variants, args.repeats, args.warmups, reuse, threads, args.medvram)
                reuse = None
                rows += found
                shared = {**keep, "flux": spec.flux} if spec.flux else None
                keep = None
            except Exception as exc:  # noqa: BLE001 - one model failing (OOM) must not end the run
                traceback.print_exc()
                rows.append(Row(spec.arch, "-", error=f"{type(exc).__name__}: {exc}"))
                log(format_row(rows[-1]))
                shared = None
            free(device)

    log("\nsummary")
    log(HEADER)
    for row in rows:
        log(format_row(row))
    slower = [r for r in rows if r.path == "ours" and r.vs is not None and r.vs < 0.98]
    differ = [r for r in rows if r.path == "ours" and r.px_diff is not None and r.px_diff > 2]
    log(f"ours slower than diffusers by over 2 %: {', '.join(r.case for r in slower) or 'none'}; "
        f"pictures differing by over 2 levels: {', '.join(r.case for r in differ) or 'none'}; errors: {sum(1 for r in rows if r.error)}")
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__, "device": name,
                                         "rows": [dataclasses.asdict(r) for r in rows]}, indent=1, default=str))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
