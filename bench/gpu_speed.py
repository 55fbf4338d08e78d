#!/usr/bin/env python
"""Ours against diffusers on one device, side by side in one run (issue 24).

Three paths over the very same loaded components (one copy of the weights, SDPA attention):
- core: `Runner(model).txt2img(params, seed)`, as the app's worker calls it;
- service: a txt2img job through the persistent JobQueue and the GenerationService as the
  app runs it (recorded payload, saving on, default settings, model hash cache);
- diffusers: `StableDiffusionPipeline` / `StableDiffusionXLPipeline` built from the same
  objects, with `DPMSolverMultistepScheduler` set up as DPM++ 2M Karras from the model's own
  scheduler config and the product's noise passed as `latents=`, so the pictures must agree.

Random-weight full-size checkpoints from configs/ (SD 1.5 at 512x512, SDXL at 1024x1024,
fp16 files, written once per run), batch 1 and 4, 20 steps, CFG 7, DPM++ 2M Karras, fp16.
After warm-ups each repeat runs the three paths in a rotating order; the table has medians.
it/s is sampling only (CUDA events at the step callbacks, so no sync per step), s/img the
whole job per picture, peak VRAM torch.cuda.max_memory_allocated per run.
Goals: ours/diffusers >= 1.00 everywhere, service/core <= 1.05.

`--options` then measures each speed option of modules.generation.speed on SD 1.5 512 batch 1
against the plain path (a freshly loaded model each): channels_last, compile (compile time,
steady it/s, ratio to diffusers eager, recompiles for another batch size and step count),
fp8_storage (UNet weight bytes, pixel difference), s_min_uncond 10, token_merging_ratio 0.5
and TF32 on/off.

`--cpu` (the default without CUDA) runs the same code on the tiny test checkpoint at 64x64,
batch 1 and 2, 6 steps, fp32: a check of the script itself, not of speed (--options skips
compile there unless --compile-on-cpu: inductor takes minutes on 2 cores).

    venv/bin/python bench/gpu_speed.py [--options] [--only sd15|sdxl] [--repeats N] [--json PATH] [--cpu [--threads N]]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
CONFIGS = REPO / "configs"

import numpy as np  # noqa: E402
import torch  # noqa: E402

PROMPT = "a photo of a cat sitting on a windowsill, soft light"
NEGATIVE = "blurry, low quality"
SEED = 1234
CFG = 7.0
SAMPLER, SCHEDULE = "DPM++ 2M", "Karras"
PATHS = ("core", "service", "diffusers")


@dataclass(frozen=True)
class Family:
    key: str  # --only
    arch: str  # ldm_meta_state_dict's architecture, configs/<folder>
    folder: str
    size: int
    batches: tuple[int, ...]
    steps: int


GPU_FAMILIES = (Family("sd15", "sd1", "sd1", 512, (1, 4), 20), Family("sdxl", "sdxl", "sdxl", 1024, (1, 4), 20))
CPU_FAMILIES = (Family("sd15", "tiny-sd1", "tiny-sd1", 64, (1, 2), 6),)


@dataclass
class Row:
    case: str
    path: str
    its: float | None = None  # sampling it/s
    s_per_image: float | None = None
    peak_gib: float | None = None
    vs: float | None = None  # core, service: speed over diffusers' (s/img); diffusers: None
    px_diff: int | None = None  # against the core's picture (diffusers, service) or the plain path's (options)
    note: str = ""
    error: str | None = None
    extra: dict = field(default_factory=dict)


def log(text: str = "") -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- timing


class Stamps:
    """Step-end stamps: CUDA events on a GPU (no sync per step), perf_counter on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def __call__(self, *_args) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def its(self) -> float | None:
        """Steps per second between the first and the last step's end."""
        if len(self.marks) < 2:
            return None
        if self.cuda:
            self.marks[-1].synchronize()
            seconds = self.marks[0].elapsed_time(self.marks[-1]) / 1000.0
        else:
            seconds = self.marks[-1] - self.marks[0]
        return (len(self.marks) - 1) / seconds if seconds > 0 else None


@dataclass
class Run:
    seconds: float
    its: float | None
    peak: float | None
    images: list
    cpu_seconds: float = 0.0  # this process's CPU time: steadier than wall time on a shared CPU


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured(device: torch.device, fn) -> Run:
    """fn(stamps) -> images, timed end to end with the device drained on both sides."""
    gc.collect()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stamps = Stamps(device)
    t0, c0 = time.perf_counter(), time.process_time()
    images = fn(stamps)
    sync(device)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return Run(seconds, stamps.its(), peak, images, cpu_seconds)


def max_px_diff(a: list, b: list) -> int:
    if len(a) != len(b) or not a:
        return 255
    return max(int(np.abs(np.asarray(x, dtype=np.int16) - np.asarray(y, dtype=np.int16)).max()) for x, y in zip(a, b))


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- the three paths


def make_params(family: Family, batch: int, steps: int | None = None, **extra):
    from modules.generation.params import GenerationParams

    return GenerationParams.create(prompt=PROMPT, negative_prompt=NEGATIVE, width=family.size, height=family.size,
                                   steps=steps or family.steps, sampler_name=SAMPLER, scheduler=SCHEDULE, cfg_scale=CFG,
                                   batch_size=batch, seed=SEED, **extra)


def run_core(runner, params):
    """The generation core as the worker calls it; step stamps through RunControl."""
    from modules.generation.control import RunControl

    def go(stamps: Stamps) -> list:
        return [im for batch in runner.txt2img(params, SEED, RunControl(on_step=stamps)) for im in batch.images]

    return go


def make_pipeline(model):
    """diffusers' own pipeline over the loaded model's objects, DPM++ 2M Karras as a diffusers
    user sets it up from the checkpoint's scheduler config."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    scheduler = DPMSolverMultistepScheduler.from_config(model.scheduler_config, algorithm_type="dpmsolver++", solver_order=2,
                                                        use_karras_sigmas=True)
    if model.is_sdxl:
        pipe = StableDiffusionXLPipeline(vae=model.vae, text_encoder=model.text_encoder, text_encoder_2=model.text_encoder_2,
                                         tokenizer=model.tokenizer, tokenizer_2=model.tokenizer_2, unet=model.unet, scheduler=scheduler,
                                         add_watermarker=False)
    else:
        pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def product_noise(model, family: Family, batch: int, size: int | None = None) -> torch.Tensor:
    """The core's initial noise for seeds SEED..SEED+batch-1 (one generator per image, drawn on
    the device, in the dtype the diffusers engine keeps latents in)."""
    from modules.generation.noise import ImageNoise

    size = size or family.size
    scale = 2 ** (len(model.vae.config.block_out_channels) - 1)
    shape = (model.vae.config.latent_channels, size // scale, size // scale)
    return ImageNoise([SEED + i for i in range(batch)], shape, model.device, model.dtype, "GPU").first()


def run_diffusers(pipe, model, family: Family, batch: int):
    latents = product_noise(model, family, batch)

    def go(stamps: Stamps) -> list:
        def on_step(_pipe, _i, _t, kwargs):
            stamps()
            return kwargs

        out = pipe(PROMPT, negative_prompt=NEGATIVE, height=family.size, width=family.size, num_inference_steps=family.steps,
                   guidance_scale=CFG, num_images_per_prompt=batch, latents=latents.clone(), output_type="pil",
                   callback_on_step_end=on_step)
        return list(out.images)

    return go


@dataclass
class App:
    """The app's objects for one checkpoint folder: ModelManager with a hash cache, the
    persistent JobQueue and the GenerationService with default settings (saving on)."""

    models: object
    service: object
    queue: object
    data: Path

    @classmethod
    def open(cls, ckpt_dir: Path, data: Path, devices) -> "App":
        from modules.jobs.generation_task import GenerationService, register_generation_jobs
        from modules.jobs.queue import JobQueue
        from modules.jobs.store import JobStore
        from modules.models.catalog import HashCache
        from modules.models.manager import ModelManager
        from modules.options import OutputSettings

        data.mkdir(parents=True, exist_ok=True)
        models = ModelManager((ckpt_dir,), CONFIGS, lambda: devices, HashCache(data / "cache.json"))
        models.load()
        queue = JobQueue(store=JobStore(data / "queue.sqlite3"))
        service = GenerationService(models, OutputSettings.from_values({}), data, console_progress=False)
        register_generation_jobs(queue, service)
        return cls(models, service, queue, data)

    def params(self, family: Family, batch: int):
        return make_params(family, batch, **self.service.prompt_settings())  # as the txt2img tab and the API build them

    def run(self, params):
        """A job as the API's queue route makes it: a recorded payload, pinned to the model."""
        from modules.jobs.generation_task import txt2img_payload
        from modules.jobs.queue import JobStatus

        checkpoint = self.models.pin()

        def go(stamps: Stamps) -> list:
            def task(job):
                own = job.control.on_step

                def on_step(info):
                    stamps()
                    own(info)

                job.control.on_step = on_step
                return self.service.run_txt2img(job, params, save=True, checkpoint=checkpoint)

            job = self.queue.submit("txt2img", task, payload=txt2img_payload(params, True, checkpoint))
            job.finished.wait()
            if job.status is not JobStatus.DONE:
                raise RuntimeError(f"service job ended {job.status.value}: {job.error}")
            return list(job.result.images)

        return go

    def close(self) -> None:
        self.queue.shutdown()
        self.models.unload()


# --------------------------------------------------------------------------- the main table


def bench_family(family: Family, path: Path, work: Path, devices, repeats: int, warmups: int) -> list[Row]:
    device = devices.device
    rows: list[Row] = []
    t0 = time.perf_counter()
    app = App.open(path.parent, work / f"data-{family.key}", devices)
    model = app.models.active.model
    log(f"{family.key}: loaded {model.arch} through ModelManager ({model.dtype}, VAE {model.vae_dtype}, "
        f"attention {type(next(iter(model.unet.attn_processors.values()))).__name__}) in {time.perf_counter() - t0:.1f}s")
    from modules.generation.runner import Runner

    runner = Runner(model)
    pipe = make_pipeline(model)
    try:
        for batch in family.batches:
            case = f"{family.key} {family.size}px b{batch}"
            try:
                params = make_params(family, batch)
                fns = {"core": run_core(runner, params), "service": app.run(app.params(family, batch)),
                       "diffusers": run_diffusers(pipe, model, family, batch)}
                first: dict[str, list] = {}
                failed: dict[str, str] = {}
                runs: dict[str, list[Run]] = {name: [] for name in PATHS}

                def attempt(name: str, into: list | None) -> None:
                    """One run of one path; a path that fails (OOM, NaN) is dropped, the others go on."""
                    try:
                        run = measured(device, fns[name])
                    except Exception as exc:  # noqa: BLE001
                        traceback.print_exc()
                        failed[name] = f"{type(exc).__name__}: {exc}"
                        free(device)
                        return
                    if into is None:
                        first[name] = run.images
                    else:
                        into.append(run)

                for _ in range(warmups):
                    for name in PATHS:
                        if name not in failed:
                            attempt(name, None)
                for r in range(repeats):
                    for name in PATHS[r % 3:] + PATHS[:r % 3]:
                        if name not in failed:
                            attempt(name, runs[name])
                rows += table_rows(case, batch, runs, first, failed)
            except Exception as exc:  # noqa: BLE001 - one failure (OOM on SDXL b4) must not end the run
                rows.append(Row(case, "-", error=f"{type(exc).__name__}: {exc}"))
                traceback.print_exc()
                free(device)
            for row in rows:
                if row.case == case:
                    log(format_row(row))
    finally:
        del pipe, runner, model
        app.close()
        free(device)
    return rows


def table_rows(case: str, batch: int, runs: dict[str, list], first: dict[str, list], failed: dict[str, str]) -> list[Row]:
    ok = [name for name in PATHS if name not in failed and runs[name]]
    stats = {name: (median(r.its for r in runs[name]), median(r.seconds for r in runs[name]) / batch,
                    max((r.peak or 0.0) for r in runs[name]) or None) for name in ok}
    cpu = {name: median(r.cpu_seconds for r in runs[name]) / batch for name in ok}
    reference = stats["diffusers"][1] if "diffusers" in stats else None
    images = {name: first.get(name) or runs[name][-1].images for name in ok}
    out = []
    for name in PATHS:
        if name not in ok:
            out.append(Row(case, name, error=failed.get(name, "no run")))
            continue
        its, spi, peak = stats[name]
        row = Row(case, name, its, spi, peak, extra={"cpu_s_per_image": cpu[name]})
        if name != "core" and "core" in images:
            row.px_diff = max_px_diff(images["core"], images[name])
        if name != "diffusers" and reference is not None:
            row.vs = reference / spi
        if name == "service" and "core" in stats:
            row.extra["service/core"] = spi / stats["core"][1]
            row.note = f"service/core {spi / stats['core'][1]:.3f} (goal <= 1.05)"
        elif name == "core":
            row.note = "goal >= 1.00"
        if peak is None:  # on a CPU: this process's CPU seconds per image, less disturbed by other load
            row.note += f"; CPU time {cpu[name]:.3f} s/img"
            if name != "diffusers" and "diffusers" in cpu:
                row.note += f" (diffusers' over this x{cpu['diffusers'] / cpu[name]:.3f})"
        out.append(row)
    return out


def format_row(row: Row, widths: tuple[int, int] = (18, 22)) -> str:
    """One table line; `widths` are the case and path columns' (bench/flow_speed.py's cases are longer)."""
    case, path = widths
    if row.error:
        return f"{row.case:<{case}} {row.path:<{path}} ERROR {row.error}"

    def num(value, fmt: str) -> str:
        return format(value, fmt) if value is not None else "-"

    vs = f"x{row.vs:.3f}" if row.vs is not None else "-"
    return (f"{row.case:<{case}} {row.path:<{path}} {num(row.its, '8.2f')} {num(row.s_per_image, '9.3f')} {num(row.peak_gib, '8.2f')} "
            f"{vs:>8} {num(row.px_diff, '5d')}  {row.note}")


def header(widths: tuple[int, int] = (18, 22)) -> str:
    return f"{'case':<{widths[0]}} {'path':<{widths[1]}} {'it/s':>8} {'s/img':>9} {'peak GiB':>8} {'vs diff':>8} {'px':>5}  note"


HEADER = header()


# --------------------------------------------------------------------------- speed options


def load_fresh(path: Path, devices):
    """A freshly loaded model, as ModelManager loads one (SDPA attention), for speed.apply."""
    from modules.generation.devices import apply_attention
    from modules.models.loader import load_checkpoint

    model = load_checkpoint(path, configs_dir=CONFIGS, device=devices.device, dtype=devices.dtype, vae_dtype=devices.vae_dtype)
    apply_attention(model.unet, devices)
    return model


def weight_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def dynamo_frames() -> tuple[int, int]:
    """(frames dynamo compiled, graph breaks) so far: a recompile counts as a frame."""
    from torch._dynamo.utils import counters

    return int(counters["frames"].get("total", 0)), int(sum(counters["graph_break"].values()))


def bench_options(family: Family, path: Path, devices, repeats: int, use_compile: bool) -> list[Row]:
    """Each speed option on `family` batch 1 against the plain path, alternating, one freshly
    loaded model per option (apply() is for a freshly loaded model)."""
    device = devices.device
    case = f"{family.key} {family.size}px b1"
    try:
        from modules.generation import speed
    except ImportError as exc:
        return [Row(case, "options", error=f"modules.generation.speed is not there yet ({exc})")]
    from modules.generation.runner import Runner

    plain_options = dataclasses.replace(speed.SpeedOptions(), channels_last=False, tf32=True, compile="none", fp8_storage="Disable")
    plain = load_fresh(path, devices)
    applied = speed.apply(plain, plain_options)
    log(f"options: plain path {plain_options}, applied {applied or 'nothing'}, TF32 {speed.set_tf32(device, True)}")
    plain_runner = Runner(plain)
    params = make_params(family, 1)
    plain_fn = run_core(plain_runner, params)
    plain_image = measured(device, plain_fn).images
    rows: list[Row] = []
    pipe = make_pipeline(plain)
    diffusers_fn = run_diffusers(pipe, plain, family, 1)
    measured(device, diffusers_fn)

    def alternate(option_fn, with_diffusers: bool = False) -> tuple[list[Run], list[Run], list[Run]]:
        ours, base, diff = [], [], []
        for r in range(repeats):
            pair = [("option", option_fn), ("plain", plain_fn)] + ([("diffusers", diffusers_fn)] if with_diffusers else [])
            pair = pair[r % len(pair):] + pair[:r % len(pair)]
            for name, fn in pair:
                run = measured(device, fn)
                {"option": ours, "plain": base, "diffusers": diff}[name].append(run)
        return ours, base, diff

    def row(name: str, ours: list[Run], base: list[Run], image: list, note: str = "", **extra) -> Row:
        its, base_its = median(r.its for r in ours), median(r.its for r in base)
        spi, base_spi = median(r.seconds for r in ours), median(r.seconds for r in base)
        gain = (its / base_its) if its and base_its else None
        if device.type != "cuda":  # this process's CPU time, steadier than wall time on a shared CPU
            note = note.strip("; ") + f"; CPU time plain/option x{median(r.cpu_seconds for r in base) / median(r.cpu_seconds for r in ours):.3f}"
        out = Row(case, name, its, spi, max((r.peak or 0.0) for r in ours) or None, base_spi / spi, max_px_diff(plain_image, image),
                  note="; ".join(part for part in ((f"it/s x{gain:.3f} over plain" if gain else ""), note.strip("; ")) if part), extra={"plain_its": base_its, "plain_s": base_spi, **extra})
        log(format_row(out))
        return out

    def model_option(name: str, options) -> None:
        model = None
        try:
            t0 = time.perf_counter()
            model = load_fresh(path, devices)
            before = weight_bytes(model.unet)
            sync(device)
            mem0 = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
            applied = speed.apply(model, options)
            sync(device)
            mem1 = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
            after = weight_bytes(model.unet)
            log(f"options: {name}: applied {applied} in {time.perf_counter() - t0:.1f}s (load included)")
            runner = Runner(model)
            fn = run_core(runner, params)
            frames0 = dynamo_frames()
            first = measured(device, fn)
            frames1 = dynamo_frames()
            ours, base, diff = alternate(fn, with_diffusers=name == "compile")
            extra: dict = {"applied": list(applied)}
            note = ""
            if name == "fp8_storage":
                extra.update(unet_bytes_before=before, unet_bytes_after=after, allocated_delta=mem1 - mem0)
                note = f"UNet weights {before / 2**30:.3f} -> {after / 2**30:.3f} GiB (x{after / before:.2f})"
                if device.type == "cuda":
                    note += f", allocated {(mem1 - mem0) / 2**30:+.3f} GiB"
            if name == "compile":
                steady = median(r.seconds for r in ours)
                diff_its, diff_s = median(r.its for r in diff), median(r.seconds for r in diff)
                its = median(r.its for r in ours)
                extra.update(compile_s=first.seconds - steady, first_job_s=first.seconds, steady_s=steady, frames_first_job=frames1[0] - frames0[0],
                             graph_breaks=frames1[1] - frames0[1], diffusers_its=diff_its, diffusers_s=diff_s,
                             vs_diffusers_its=(its / diff_its) if its and diff_its else None)
                note = (f"compile {first.seconds - steady:.1f}s (first job {first.seconds:.1f}s), {frames1[0] - frames0[0]} frames, "
                        f"{frames1[1] - frames0[1]} graph breaks; it/s vs diffusers eager x{extra['vs_diffusers_its'] or 0:.3f} (goal >= 1.5); ")
                # Another batch size and another step count must reuse the compiled graph.
                for label, other in (("batch 2", make_params(family, 2)), ("steps 12", make_params(family, 1, steps=12)),
                                     ("batch 1 again", params)):
                    before_frames = dynamo_frames()[0]
                    run = measured(device, run_core(runner, other))
                    added = dynamo_frames()[0] - before_frames
                    extra[f"recompiles {label}"] = added
                    extra[f"seconds {label}"] = run.seconds
                    note += f"{label}: {added} recompiles {run.seconds:.2f}s; "
            rows.append(row(name, ours, base, first.images, note, **extra))
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            rows.append(Row(case, name, error=f"{type(exc).__name__}: {exc}"))
            log(format_row(rows[-1]))
        finally:
            del model
            free(device)

    def job_option(name: str, **fields) -> None:
        try:
            fn = run_core(plain_runner, make_params(family, 1, **fields))
            first = measured(device, fn)
            ours, base, _ = alternate(fn)
            rows.append(row(name, ours, base, first.images, f"{fields}"))
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            rows.append(Row(case, name, error=f"{type(exc).__name__}: {exc}"))
            log(format_row(rows[-1]))

    try:
        model_option("channels_last", dataclasses.replace(plain_options, channels_last=True))
        if use_compile:
            model_option("compile", dataclasses.replace(plain_options, compile="unet"))
        model_option("fp8_storage", dataclasses.replace(plain_options, fp8_storage="Enable"))
        job_option("s_min_uncond 10", s_min_uncond=10.0)
        job_option("token_merging 0.5", token_merging_ratio=0.5)
        # TF32 is process-wide (speed.set_tf32, as ModelManager switches it): off for the option's runs only.
        try:
            def tf32_off(stamps):
                speed.set_tf32(device, False)
                try:
                    return plain_fn(stamps)
                finally:
                    speed.set_tf32(device, True)

            on = speed.set_tf32(device, True)
            first = measured(device, tf32_off)
            ours, base, _ = alternate(tf32_off)
            rows.append(row("tf32 off", ours, base, first.images, f"plain has TF32 {'on' if on else 'off (no TF32 on this device)'}; "
                                                                 f"fp16 weights: expect ~x1.00"))
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            rows.append(Row(case, "tf32 off", error=f"{type(exc).__name__}: {exc}"))
            log(format_row(rows[-1]))
    finally:
        pipe = plain_runner = plain = plain_fn = diffusers_fn = None  # noqa: F841 - let the weights go
        free(device)
    return rows


# --------------------------------------------------------------------------- main


def write_checkpoint(family: Family, folder: Path, cpu: bool) -> Path:
    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    if cpu:
        from modules.models.tiny import FILE_NAME, write_tiny_checkpoint

        path = write_tiny_checkpoint(folder / FILE_NAME, CONFIGS)
    else:
        from modules.models.ldm_keys import ldm_meta_state_dict, write_random_safetensors

        path = folder / f"{family.key}-random-fp16.safetensors"
        write_random_safetensors(path, ldm_meta_state_dict(family.arch, CONFIGS / family.folder), dtype=torch.float16, seed=0)
    log(f"{family.key}: wrote {path.name} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f}s")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="tiny checkpoint at 64x64 on the CPU (the default without CUDA)")
    ap.add_argument("--only", choices=("sd15", "sdxl"), help="one model family")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per path and case (medians)")
    ap.add_argument("--warmups", type=int, default=1)
    ap.add_argument("--options", action="store_true", help="then each speed option on SD 1.5 batch 1 against the plain path")
    ap.add_argument("--no-compile", action="store_true", help="--options without torch.compile")
    ap.add_argument("--compile-on-cpu", action="store_true", help="--cpu --options with torch.compile too (minutes on 2 cores)")
    ap.add_argument("--no-table", action="store_true", help="skip the ours/diffusers table (with --options)")
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
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    log(f"torch {torch.__version__}, diffusers {diffusers.__version__}, device {name}, {devices.describe()}")
    families = [f for f in (CPU_FAMILIES if cpu else GPU_FAMILIES) if args.only in (None, f.key)]
    log(f"{SAMPLER} {SCHEDULE}, CFG {CFG}, {args.repeats} repeats after {args.warmups} warm-up(s), medians; "
        f"'vs diff' = diffusers' s/img over this path's (>= 1.00: faster); px = max pixel difference from the core's picture")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gpu-speed-") as tmp:
        work = Path(tmp)
        paths = {}
        for family in families:
            try:
                paths[family.key] = write_checkpoint(family, work / family.key, cpu)
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                rows.append(Row(f"{family.key}", "write", error=f"{type(exc).__name__}: {exc}"))
        if not args.no_table:
            log(HEADER)
            for family in families:
                if family.key in paths:
                    try:
                        rows += bench_family(family, paths[family.key], work, devices, args.repeats, args.warmups)
                    except Exception as exc:  # noqa: BLE001
                        traceback.print_exc()
                        rows.append(Row(family.key, "-", error=f"{type(exc).__name__}: {exc}"))
                        log(format_row(rows[-1]))
                    free(device)
        if args.options and families[0].key == "sd15" and "sd15" in paths:
            log("\nspeed options (core, batch 1; 'vs diff' here = the plain path's s/img over the option's; px = from the plain picture)")
            log(HEADER)
            rows += bench_options(families[0], paths["sd15"], devices, args.repeats, use_compile=not args.no_compile and (not cpu or args.compile_on_cpu))
        elif args.options:
            log("--options needs the sd15 family")

    log("\nsummary")
    log(HEADER)
    for row in rows:
        log(format_row(row))
    misses = [r for r in rows if r.path == "core" and r.vs is not None and r.vs < 1.0]
    misses += [r for r in rows if r.path == "service" and r.extra.get("service/core", 0) > 1.05]
    log(f"goals missed: {len(misses)} ({', '.join(f'{r.case} {r.path}' for r in misses) or 'none'}); errors: {sum(1 for r in rows if r.error)}")
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__, "device": name,
                                         "rows": [dataclasses.asdict(r) for r in rows]}, indent=1, default=str))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
