#!/usr/bin/env python
"""LoRA training speed (issue 26): what one `LoraTrainer.train_step` costs, per case, in one run.

CUDA: an SD 1.5-sized random-weight checkpoint (configs/sd1, written once per run) at 512 px,
rank 16, text encoder trained too (kohya's default), batch 1 and 4, fp16 mixed precision (and
bf16 where the GPU has it), gradient checkpointing off and on, and AdamW8bit when bitsandbytes
imports. Each timed step is synchronized; peak VRAM is `max_memory_allocated` from loading the
case's model to its last step (weights included). `--cpu` (the default without CUDA): the demo
model at 64 px, rank 16, batch 1 and 4, fp32, with and without the text encoder trained, on one
thread unless `--threads` (the table adds this process's CPU time per step, steadier than wall
time on a shared machine). Not yet run on a GPU.

Each case loads a fresh model (the trainer adds its adapters to it), runs warm-up steps (at
least one epoch, so every picture's latents are cached) and then `--steps` timed steps; each
of `--repeats` rounds runs every case again, and the table holds the median over all timed
steps. Rounds rotate the order of the cases, so the machine's drift weighs on every case alike.

    venv/bin/python bench/train_speed.py [--cpu] [--repeats N] [--steps N] [--threads N] [--json [PATH]]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.gpu_speed import CONFIGS, GPU_FAMILIES, free, log, median, sync, write_checkpoint  # noqa: E402

PICTURES = 8  # two batches of 4 per epoch, eight of 1


@dataclass(frozen=True)
class Case:
    batch: int
    precision: str = "no"  # mixed_precision: no (fp32), fp16, bf16
    checkpointing: bool = False
    text_encoder: bool = True
    optimizer: str = "AdamW"

    def label(self) -> str:
        return (f"b{self.batch} {self.precision if self.precision != 'no' else 'fp32'} ckpt {'on' if self.checkpointing else 'off'} "
                f"TE {'on' if self.text_encoder else 'off'} {self.optimizer}")


@dataclass
class Row:
    case: Case
    seconds: list[float] = dataclasses.field(default_factory=list)  # every timed step, all rounds
    cpu_seconds: list[float] = dataclasses.field(default_factory=list)  # this process's CPU time per step: steadier on a shared CPU
    peak_gib: float | None = None
    error: str | None = None

    def rate(self, pictures: bool = False, cpu: bool = False) -> float | None:
        """Steps (or pictures) per second of wall time (or of this process's CPU time)."""
        step = median(self.cpu_seconds if cpu else self.seconds)
        return (self.case.batch if pictures else 1) / step if step else None


def write_pictures(folder: Path, size: int, count: int = PICTURES, seed: int = 0) -> Path:
    """`count` demo drawings (one coloured shape on a plain background) with `.txt` captions,
    drawn at `size` px with the demo's 64-px geometry scaled up."""
    from modules.demo import shapes

    folder.mkdir(parents=True, exist_ok=True)
    rng, scale, scenes = np.random.default_rng(seed), size / shapes.SIZE, shapes.training_scenes()
    for k in range(count):
        scene = scenes[rng.integers(len(scenes))]
        half = rng.uniform(*shapes.HALF_SIZE)
        low, high = shapes.BORDER + half, shapes.SIZE - shapes.BORDER - half
        centre = (rng.uniform(low, high) * scale, rng.uniform(low, high) * scale)
        shapes.draw(scene, centre, half * scale, size).save(folder / f"{k:02d}.png")
        (folder / f"{k:02d}.txt").write_text(scene.prompt())
    return folder


def run_case(row: Row, model_path: Path, pictures: Path, work: Path, device: torch.device, size: int, warmups: int, steps: int) -> None:
    """One round of one case: a fresh model and trainer, warm-ups, then `steps` timed steps into `row`."""
    from modules.models.loader import load_checkpoint
    from modules.training import dataset
    from modules.training.lora_trainer import LoraTrainer
    from modules.training.params import LoraTrainingParams

    case = row.case
    params = LoraTrainingParams.from_request(dict(
        output_name="bench", train_data_dir=str(pictures), network_dim=16, network_alpha=8, learning_rate=1e-4, max_train_steps=100000,
        train_batch_size=case.batch, resolution=size, enable_bucket=False, network_train_unet_only=not case.text_encoder,
        mixed_precision=case.precision, gradient_checkpointing=case.checkpointing, optimizer_type=case.optimizer, seed=1))
    cuda = device.type == "cuda"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(case.precision, torch.float32) if cuda else torch.float32
    free(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    model = load_checkpoint(model_path, configs_dir=CONFIGS, device=device, dtype=dtype, vae_dtype=torch.float32)  # as TrainingService
    trainer = LoraTrainer(model, params, dataset.scan_folder(pictures), work / "run", work / "bench.safetensors", device=device, console=False)
    trainer._set_train(True)
    warm = max(warmups, trainer.steps_per_epoch)
    for step in range(warm + steps):
        sync(device)
        began, cpu_began = time.perf_counter(), time.process_time()
        trainer.train_step(step)
        sync(device)
        if step >= warm:
            row.seconds.append(time.perf_counter() - began)
            row.cpu_seconds.append(time.process_time() - cpu_began)
    if cuda:
        row.peak_gib = max(row.peak_gib or 0.0, torch.cuda.max_memory_allocated(device) / 2**30)
    del trainer, model
    free(device)


def cases_for(cuda: bool) -> list[Case]:
    if not cuda:
        return [Case(b, text_encoder=te) for te in (True, False) for b in (1, 4)]
    precisions = ["fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    found = [Case(b, p, ck) for p in precisions for b in (1, 4) for ck in (False, True)]
    try:
        import bitsandbytes  # noqa: F401
        found.append(Case(4, "fp16", optimizer="AdamW8bit"))
    except ImportError as exc:
        log(f"AdamW8bit skipped: bitsandbytes does not import ({exc})")
    return found


def ratios(rows: dict[Case, Row], cuda: bool) -> list[tuple[str, float, float | None]]:
    """(what, ratio of wall-time rates, ratio of CPU-time rates on a CPU) for each pair measured."""
    out = []

    def pair(name: str, a: Case, b: Case, pictures: bool = False, memory: bool = False) -> None:
        ra, rb = rows.get(a), rows.get(b)
        if not ra or not rb or ra.error or rb.error:
            return
        if memory:
            if ra.peak_gib and rb.peak_gib:
                out.append((f"{name}: peak VRAM {b.label()} / {a.label()}", rb.peak_gib / ra.peak_gib, None))
            return
        cpu = None if cuda else rb.rate(pictures, cpu=True) / ra.rate(pictures, cpu=True)
        out.append((f"{name}: {'pictures' if pictures else 'steps'}/s {b.label()} / {a.label()}", rb.rate(pictures) / ra.rate(pictures), cpu))

    for case in rows:
        if case.batch == 1:
            pair("batch 4 / batch 1 throughput", case, dataclasses.replace(case, batch=4), pictures=True)
        if case.text_encoder and not cuda:
            pair("UNet only / with text encoder", case, dataclasses.replace(case, text_encoder=False))
        if cuda and not case.checkpointing and case.optimizer == "AdamW":
            for name, other in (("gradient checkpointing", dataclasses.replace(case, checkpointing=True)),
                                ("bf16 / fp16", dataclasses.replace(case, precision="bf16")),
                                ("AdamW8bit / AdamW", dataclasses.replace(case, optimizer="AdamW8bit"))):
                if case.precision == "fp16" or name == "gradient checkpointing":
                    pair(name, case, other)
                    pair(name, case, other, memory=True)
    return sorted(out, key=lambda found: found[0].split(":")[0])  # stable: each kind of ratio together


def report(rows: dict[Case, Row], cuda: bool) -> list[tuple[str, float, float | None]]:
    """The table, then one line per ratio; returns the ratios."""
    cpu_col = "" if cuda else f" {'CPU s/step':>10}"
    log(f"\n{'case':<34} {'steps/s':>8} {'s/step':>8} {'s/picture':>9} {'peak GiB':>8}{cpu_col}")
    for row in rows.values():
        if row.error:
            log(f"{row.case.label():<34} error: {row.error}")
            continue
        peak = f"{row.peak_gib:8.2f}" if row.peak_gib is not None else f"{'-':>8}"
        cpu_col = "" if cuda else f" {median(row.cpu_seconds):10.3f}"
        log(f"{row.case.label():<34} {row.rate():8.2f} {median(row.seconds):8.3f} {1 / row.rate(pictures=True):9.3f} {peak}{cpu_col}")
    found = ratios(rows, cuda)
    log("")
    for sentence, value, cpu in found:
        log(f"{sentence}: x{value:.2f}" + (f" (CPU time x{cpu:.2f})" if cpu is not None else ""))
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="the demo model at 64 px on the CPU (the default without CUDA)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds over all cases (a fresh model per case and round)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per case and round")
    ap.add_argument("--warmups", type=int, default=2, help="untimed steps first (at least one epoch)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default on the CPU: 1; two threads on the busy 2-core VM "
                    "swing the figures by x3)")
    ap.add_argument("--json", nargs="?", const="-", help="also the results as JSON, to PATH or (no PATH) to stdout, last")
    args = ap.parse_args()
    args.steps, args.repeats = max(1, args.steps), max(1, args.repeats)
    cuda = not args.cpu and torch.cuda.is_available()
    if args.threads or not cuda:
        torch.set_num_threads(args.threads or 1)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # one "Loading pipeline components" bar per case would bury the table
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})"
    load = os.getloadavg()[0]
    log(f"torch {torch.__version__}, {name}, load average {load:.2f} at start; {args.repeats} round(s) of {args.steps} timed steps after "
        f"max({args.warmups}, one epoch) warm-ups; medians; rank 16, alpha 8, AdamW unless named")
    rows = {case: Row(case) for case in cases_for(cuda)}
    with tempfile.TemporaryDirectory(prefix="train-speed-") as tmp:
        work = Path(tmp)
        size = 512 if cuda else 64
        if cuda:
            model_path = write_checkpoint(GPU_FAMILIES[0], work / "sd15", cpu=False)
        else:
            from modules.demo.embedded import EMBEDDED_PATH as model_path
        pictures = write_pictures(work / "pictures", size)
        for round_ in range(args.repeats):
            order = list(rows.values())
            for row in order[round_ % len(order):] + order[:round_ % len(order)]:
                if row.error:
                    continue
                try:
                    run_case(row, model_path, pictures, work / "cases", device, size, args.warmups, args.steps)
                except Exception as exc:  # noqa: BLE001 - one failed case (out of memory, say) must not end the table
                    traceback.print_exc()
                    row.error = f"{type(exc).__name__}: {exc}"
                    free(device)
    found = report(rows, cuda)
    log(f"load average {os.getloadavg()[0]:.2f} at the end ({load:.2f} at start)")
    if args.json:
        text = json.dumps({"torch": torch.__version__, "device": name, "size": size, "load_average": [load, os.getloadavg()[0]],
                           "rows": [{**dataclasses.asdict(r.case), "steps_per_s": r.rate(), "pictures_per_s": r.rate(pictures=True),
                                     "cpu_steps_per_s": None if cuda else r.rate(cpu=True), "peak_gib": r.peak_gib,
                                     "timed_steps": len(r.seconds), "error": r.error} for r in rows.values()],
                           "ratios": [{"what": w, "wall": v, "cpu_time": c} for w, v, c in found]}, indent=1)
        print(text) if args.json == "-" else Path(args.json).write_text(text)
    return 1 if any(r.error for r in rows.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
