"""LoRA training as a queue job: checked before it waits, run on the worker in its turn,
recorded so a restart picks it up again (and the trainer resumes from its last state), and
watched through its run folder.

The run folder `<data_dir>/train/<name>/` is what the Train tab and the API read: it outlives
the job and the process. It holds `params.json`, `status.json`, `log.csv`, `samples/` and
`scores.json`; the trainer's `state/` beside them. The LoRA goes to `models/Lora/<name>.safetensors`
with `<name>.scores.json` and A1111's user-metadata `<name>.json` (trigger word) beside it.
"""

from __future__ import annotations

import csv
import gc
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.files import atomic_path
from modules.training import dataset as data
from modules.training.params import NAME_PATTERN, LoraTrainingParams

if TYPE_CHECKING:
    from PIL import Image

    from modules.jobs.queue import Job, JobQueue
    from modules.models.catalog import CheckpointInfo
    from modules.models.manager import ModelManager
    from modules.network import ServerAccess
    from modules.training.lora_trainer import LoraTrainer

log = logging.getLogger(__name__)

KIND = "train-lora"
TRAINABLE_ARCHS = ("sd1", "sd2", "sdxl", "demo-shapes", "tiny-sd1")
SD_VERSIONS = {"sd1": "SD1", "tiny-sd1": "SD1", "demo-shapes": "SD1", "sd2": "SD2", "sdxl": "SDXL"}
MAX_EVAL_CAPTIONS = 8  # training captions scored when no held-out prompts are given
SAMPLER = "Euler a"


@dataclass
class TrainingResult:
    lora: Path | None
    steps: int
    interrupted: bool
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunView:
    """One run as the page and the API show it, read from its folder."""

    name: str
    params: dict
    status: str  # queued, running, done, interrupted, cancelled, failed, unknown
    losses: list[tuple[int, float]]
    samples: list[tuple[int, list[Path]]]
    scores: list[dict]
    lora: Path | None
    steps_done: int
    total_steps: int
    rate: float | None  # steps per second over the last logged steps
    message: str

    def to_json(self) -> dict:
        return {
            "name": self.name, "status": self.status, "params": self.params, "steps_done": self.steps_done, "total_steps": self.total_steps,
            "rate": self.rate, "message": self.message, "lora": self.lora.name if self.lora else None,
            "losses": [[s, v] for s, v in self.losses], "scores": self.scores,
            "samples": [{"step": s, "files": [p.name for p in paths]} for s, paths in self.samples],
        }


class TrainingService:
    """Trains LoRAs for the app: `models` gives checkpoints and devices, `lora_dir` receives the
    files, `data_dir/train` the run folders; `access` refuses dataset folders outside the data
    folder on a shared server; `models_dir` holds the scorers' weights (Inception, CLIP)."""

    def __init__(self, models: "ModelManager", lora_dir: Path, data_dir: Path, models_dir: Path, access: "ServerAccess | None" = None,
                 console: bool = True):
        self.models, self.lora_dir, self.data_dir, self.models_dir = models, Path(lora_dir), Path(data_dir), Path(models_dir)
        self.runs_dir = self.data_dir / "train"
        self.access, self.console = access, console
        self.on_saved: Callable[[Path], None] = lambda path: None  # e.g. refresh the LoRA list

    # ------------------------------------------------------------------ before queueing

    def check(self, params: LoraTrainingParams) -> tuple[Path, list[data.Sample], "CheckpointInfo"]:
        """Everything that can be known before the job waits: the folder (allowed, readable,
        captioned), the checkpoint, the optimiser's package. Raises ValueError (AccessRefused
        for a folder outside the data folder on a shared server)."""
        restricted = bool(self.access is not None and self.access.restricted)
        folder = data.check_folder_allowed(Path(params.train_data_dir), self.data_dir, restricted)  # it expands "~" itself
        samples = data.scan_folder(folder, caption_extension=params.caption_extension, caption_template=params.caption_template,
                                   trigger_word=params.trigger_word)
        info = self.checkpoint(params)
        lora = self.lora_dir / f"{params.output_name}.safetensors"
        if lora.exists() and not (self.runs_dir / params.output_name / "params.json").exists():
            raise ValueError(f"models/Lora already has {lora.name}, which was not trained here; training would overwrite it. "
                             f"Pick another LoRA name.")
        if params.mixed_precision == "bf16" and self.models.devices.device.type == "cuda":
            import torch

            if not torch.cuda.is_bf16_supported():
                raise ValueError("This GPU cannot train in bf16 (it needs an Ampere card or newer): choose fp16 mixed precision.")
        if params.optimizer_type == "AdamW8bit":
            try:
                import bitsandbytes  # noqa: F401
            except ImportError:
                raise ValueError("The AdamW8bit optimizer needs the bitsandbytes package (pip install bitsandbytes). "
                                 "Choose AdamW, or install it and restart.") from None
        return folder, samples, info

    def checkpoint(self, params: LoraTrainingParams) -> "CheckpointInfo":
        if params.checkpoint.strip():
            return self.models.require(params.checkpoint)
        info = self.models.selected or self.models.current
        if info is None:
            raise ValueError("No checkpoint is selected: pick one to train on.")
        return info

    def submit(self, queue: "JobQueue", params: LoraTrainingParams, user: str = "") -> "Job":
        self.check(params)
        busy = [j for j in (*queue.running(), *queue.waiting()) if j.kind == KIND and _run_name(j) == params.output_name]
        if busy:
            raise ValueError(f"A training run named {params.output_name!r} is already {busy[0].status.value}; wait for it or pick another name.")
        status = self.runs_dir / params.output_name / "status.json"
        before = _read_json(status)
        self._write_status(params.output_name, "queued")  # before the job exists: a worker that starts it at once writes "running" after
        try:
            job = queue.submit(KIND, lambda job: self.run(job, params), user=user, payload={"params": params.to_payload()})
        except Exception:
            if before is None:
                status.unlink(missing_ok=True)
            else:
                _write_json(status, before)
            raise
        job.training_name = params.output_name
        self.watch(job)
        return job

    def watch(self, job: "Job") -> None:
        """Keep the run's status right if its job is cancelled while it waits (also a job rebuilt after a restart)."""
        name = _run_name(job)
        if job.kind == KIND and name:
            job.add_done_callback(lambda: self._cancelled(job, name))

    def _cancelled(self, job: "Job", name: str) -> None:
        """A job cancelled while it waited never runs, so its folder would say "queued" for ever."""
        if job.status.value == "cancelled":
            self._write_status(name, "cancelled", job=job.id, message="Cancelled while it waited; nothing was trained.")

    # ------------------------------------------------------------------ the job

    def run(self, job: "Job | None", params: LoraTrainingParams) -> TrainingResult:
        import torch

        from modules.models.loader import load_checkpoint
        from modules.training.lora_trainer import Hooks, LoraTrainer

        name = params.output_name
        run_dir = self.runs_dir / name
        try:
            folder, samples, info = self.check(params)
            devices = self.models.devices
            device = devices.device
            cuda = device.type == "cuda"
            dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(params.mixed_precision, torch.float32) if cuda else torch.float32
            if cuda:  # the training copy needs the memory more than the idle generation model does
                self.models.unload()
            self._start_folder(run_dir, params)
            self._write_status(name, "running", job=job.id if job else None, checkpoint=info.title)
            model = load_checkpoint(info.path, configs_dir=self.models.configs_dir, device=device, dtype=dtype, vae_dtype=torch.float32,
                                    parts=self.models.parts)
            if model.arch not in TRAINABLE_ARCHS:
                raise ValueError(f"{info.title} is a {model.arch} model; LoRA training here supports SD 1.x, SD 2.x and SDXL checkpoints.")
            trainer = LoraTrainer(model, params, samples, run_dir, self.lora_dir / f"{name}.safetensors", device=device,
                                  checkpoint_name=info.model_name, console=self.console)
            evaluation = _Evaluation(self, params, samples, trainer, run_dir)
            hooks = Hooks(
                should_stop=lambda: bool(job and job.control.interrupted),
                on_step=lambda step, total, loss: _report(job, step, total),
                samples=lambda step, t: self._samples(step, t, run_dir),
                evaluate=evaluation.run,
            )
            _report(job, 0, trainer.total)
            outcome = trainer.train(hooks)
        except Exception as exc:
            self._write_status(name, "failed", message=str(exc))
            raise
        finally:
            model = trainer = evaluation = hooks = None  # noqa: F841 (let go of the training copy and the scorers before the next job loads)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self._beside_lora(params, info)
        status = "interrupted" if outcome.interrupted else "done"
        message = " ".join(outcome.notes) or f"Trained {outcome.steps} steps; saved {outcome.lora.name if outcome.lora else 'nothing'}."
        self._write_status(name, status, message=message, steps=outcome.steps, total=outcome.total)
        if outcome.lora is not None:
            self.on_saved(outcome.lora)
        return TrainingResult(outcome.lora, outcome.steps, outcome.interrupted, outcome.notes)

    def _start_folder(self, run_dir: Path, params: LoraTrainingParams) -> None:
        """A run with other settings than the folder's last one starts a fresh log; the same
        settings (a restart, or training the same name again) keep it, and the trainer resumes."""
        previous = _read_json(run_dir / "params.json")
        if previous is not None and _training_key(previous) != params.training_key():
            for stale in ("log.csv", "scores.json", "state/state.pt"):
                (run_dir / stale).unlink(missing_ok=True)
            for old in (run_dir / "samples").glob("*.png"):
                old.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "params.json", params.to_payload())

    def _samples(self, step: int, trainer: "LoraTrainer", run_dir: Path) -> list[Path]:
        """The sample prompts (or the first captions) drawn with the LoRA as it is now."""
        prompts = list(trainer.params.sample_prompts) or _first_captions(trainer.samples, 2)
        images = generate(trainer, prompts, trainer.params.sample_seed, 1)
        paths = []
        for k, (prompt, image) in enumerate(images):
            path = run_dir / "samples" / f"{step:06d}-{k}.png"
            _save_png(path, image, prompt)
            paths.append(path)
        return paths

    def _beside_lora(self, params: LoraTrainingParams, info: "CheckpointInfo") -> None:
        """A1111's user metadata next to the file: the trigger word as its activation text, so
        a click on the card inserts it (left alone when the user has written one)."""
        path = self.lora_dir / f"{params.output_name}.json"
        if path.exists():
            return
        _write_json(path, {
            "description": f"Trained in the Train tab on {info.model_name} from {Path(params.train_data_dir).name}.",
            "activation text": params.trigger_word, "preferred weight": 1.0,
            "sd version": SD_VERSIONS.get(_arch_of(info, self.models), "Unknown"), "notes": "",
        })

    # ------------------------------------------------------------------ reading runs

    def run_names(self) -> list[str]:
        if not self.runs_dir.is_dir():
            return []
        found = [d for d in self.runs_dir.iterdir() if NAME_PATTERN.match(d.name) and ((d / "params.json").exists() or (d / "status.json").exists())]
        return [d.name for d in sorted(found, key=lambda d: _mtime(d), reverse=True)]

    def view(self, name: str) -> RunView:
        run_dir = self.runs_dir / name
        if not NAME_PATTERN.match(name) or not run_dir.is_dir():  # a LoRA name: no folders, no ".." or "."
            raise KeyError(f"No training run named {name!r}.")
        params = _read_json(run_dir / "params.json") or {}
        status = _read_json(run_dir / "status.json") or {}
        losses, seconds = _read_log(run_dir / "log.csv")
        samples: dict[int, list[Path]] = {}
        for path in sorted((run_dir / "samples").glob("*.png")):
            step = path.stem.split("-")[0]
            if step.isdigit():  # a picture someone else put there is not a sample
                samples.setdefault(int(step), []).append(path)
        scores = _read_json(run_dir / "scores.json") or []
        lora = self.lora_dir / f"{name}.safetensors"
        recent = seconds[-20:]
        rate = len(recent) / sum(recent) if recent and sum(recent) > 0 else None
        steps_done = losses[-1][0] if losses else 0
        return RunView(name, params, status.get("status", "unknown"), losses, sorted(samples.items()), scores if isinstance(scores, list) else [],
                       lora if lora.exists() else None, steps_done, int(status.get("total", 0) or 0), rate, str(status.get("message", "")))

    def _write_status(self, name: str, status: str, **extra: Any) -> None:
        path = self.runs_dir / name / "status.json"
        current = _read_json(path) or {}
        if status != "running" and "total" not in extra and "total" in current:
            extra["total"] = current["total"]
        _write_json(path, {"status": status, "time": time.time(), **{k: v for k, v in extra.items() if v is not None}})

    def set_total(self, name: str, total: int) -> None:
        current = _read_json(self.runs_dir / name / "status.json") or {}
        _write_json(self.runs_dir / name / "status.json", {**current, "total": total})


class _Evaluation:
    """Held-out scores at the run's eval points: images for the held-out prompts (or, without
    any, the first training captions) against the training pictures. The scorers' networks
    and the training pictures' features load once per run."""

    def __init__(self, service: TrainingService, params: LoraTrainingParams, samples: list[data.Sample], trainer: "LoraTrainer", run_dir: Path):
        from modules.training import scores

        self.service, self.params, self.samples, self.run_dir = service, params, samples, run_dir
        self.models = scores.ScoreModels(service.models_dir, str(trainer.device))
        self.prompts = list(params.eval_prompts) or _first_captions(samples, MAX_EVAL_CAPTIONS)
        self.note = () if params.eval_prompts else ("No held-out prompts were given, so the training captions were scored.",)
        self.demo = trainer.model.arch == "demo-shapes"
        self.reference: list | None = None  # the training pictures as the model saw them: read once, at the first score point
        service.set_total(params.output_name, trainer.total)

    def run(self, step: int, trainer: "LoraTrainer") -> None:
        from dataclasses import replace

        from modules.training import scores

        if not self.prompts:
            return
        made = generate(trainer, self.prompts, self.params.sample_seed + 1000, self.params.eval_images_per_prompt)
        if self.reference is None:
            self.reference = [_reference_picture(s, trainer) for s in _distinct(self.samples)]
        result = scores.evaluate([im for _, im in made], [p for p, _ in made], self.reference, models_dir=self.service.models_dir, step=step,
                                 device=str(trainer.device), demo=self.demo, models=self.models)
        result = replace(result, notes=tuple(result.notes) + self.note)
        scores.append_scores(self.run_dir / "scores.json", result)
        scores.append_scores(self.service.lora_dir / f"{self.params.output_name}.scores.json", result)


def generate(trainer: "LoraTrainer", prompts: list[str], seed: int, per_prompt: int) -> list[tuple[str, "Image.Image"]]:
    """Pictures from the model being trained, with its LoRA as it is now, through the same
    generation core as txt2img (a new Runner each time: the text encoder's LoRA changes, so
    no cached prompt may be reused). The model's own defaults (the demo's CFG 5) apply."""
    import torch

    from modules.generation.params import GenerationParams
    from modules.generation.runner import Runner
    from modules.models.hints import ModelHints

    model, p = trainer.model, trainer.params
    defaults = ModelHints.read(model.extra.get("config_folder")).defaults
    keep = {k: v for k, v in defaults.items() if k in ("cfg_scale", "sampler_name", "scheduler")}
    runner = Runner(model)
    out = []
    with torch.no_grad():
        for k, prompt in enumerate(prompts):
            params = GenerationParams.create(**{"sampler_name": SAMPLER, **keep, "prompt": prompt, "width": p.resolution, "height": p.resolution,
                                                "steps": p.sample_steps, "batch_size": per_prompt})
            for batch in runner.txt2img(params, seed + k * per_prompt):
                out += [(prompt, image) for image in batch.images]
    return out


def register_training_jobs(queue: "JobQueue", service: TrainingService) -> None:
    """Rebuild recorded training jobs after a restart: they resume from their run's state."""

    def handler(payload: Any):
        params = LoraTrainingParams.from_request(payload["params"])
        task = lambda job: service.run(job, params)  # noqa: E731
        task.training_name = params.output_name  # the run it trains (routes.job_run_name): interrupt and same-name checks find it
        return task

    queue.register(KIND, handler)


def _run_name(job: "Job") -> str | None:
    """The run a training job trains: named on the job by submit, on its task when rebuilt after a restart."""
    return getattr(job, "training_name", None) or getattr(job.task, "training_name", None)


def _report(job: "Job | None", step: int, total: int) -> None:
    if job is None:
        return
    from modules.generation.control import StepInfo

    job.control.on_step(StepInfo(0, 1, step, total))


def _first_captions(samples: list[data.Sample], count: int) -> list[str]:
    seen: list[str] = []
    for sample in samples:
        if sample.caption and sample.caption not in seen:
            seen.append(sample.caption)
        if len(seen) == count:
            break
    return seen


def _distinct(samples: list[data.Sample]) -> list[data.Sample]:
    seen, out = set(), []
    for sample in samples:
        if sample.path not in seen:
            seen.add(sample.path)
            out.append(sample)
    return out


def _reference_picture(sample: data.Sample, trainer: "LoraTrainer") -> "Image.Image":
    from PIL import Image

    tensor = data.load_picture(sample, data.bucket_for(sample.size, trainer.buckets))
    array = ((tensor.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def _save_png(path: Path, image: "Image.Image", prompt: str) -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", prompt)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        image.save(temp, format="PNG", pnginfo=info)


def _training_key(payload: Any) -> str | None:
    """The recorded run's weight-deciding settings (None when they no longer validate)."""
    try:
        return LoraTrainingParams.from_request(payload).training_key()
    except (TypeError, ValueError):
        return None


def _read_log(path: Path) -> tuple[list[tuple[int, float]], list[float]]:
    losses, seconds = [], []
    try:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    losses.append((int(row["step"]), float(row["loss"])))
                    seconds.append(float(row["seconds"]))
                except (KeyError, TypeError, ValueError):
                    continue  # a line cut short by a crash
    except FileNotFoundError:
        pass
    return losses, seconds


def _arch_of(info: "CheckpointInfo", models: "ModelManager") -> str:
    active = models.active
    if active is not None and active.info.path == info.path:
        return active.model.arch
    try:
        from modules.models.arch import detect_architecture
        from modules.models.arch import read_checkpoint_shapes as read_shapes

        return detect_architecture(read_shapes(info.path))
    except Exception:
        return "unknown"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(value, indent=1), encoding="utf-8")


def _mtime(folder: Path) -> float:
    times = [p.stat().st_mtime for p in (folder / "status.json", folder / "params.json", folder / "log.csv") if p.exists()]
    return max(times, default=0.0)
