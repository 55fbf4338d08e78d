"""Textual inversion, as A1111's Train tab does it: create an embedding file from an
initialization text, then teach its vectors a folder of pictures while the model stays frozen.

Files are A1111's: a `.pt` dict (`string_to_token`, `string_to_param`, `name`, `step`,
`sd_checkpoint`, `sd_checkpoint_name`) for SD 1.x/2.x, and for SDXL a `.safetensors` with
`clip_l` and `clip_g` (the layout SDXL embeddings are shared in), the same facts in its
metadata. Training writes A1111's log folder (`<log>/<date>/<name>/embeddings/<name>-<step>.pt`,
`images/<name>-<step>.png`, `textual_inversion_loss.csv`) and the final file over the
embedding's own, so a prompt can use it by name at once.

Training runs as a queue job of kind "train-embedding" (recorded: a restart resumes it from the
last copy saved to the log folder). No gradio and no FastAPI here; `embedding_routes.py` and
`modules/ui/train_embedding.py` are the HTTP and page sides.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from modules.models.embeddings import ENCODER_NAMES, SDXL_KEYS, Embedding, EmbeddingError, load_embedding
from modules.network import INSECURE_FLAG, AccessRefused
from modules.training import dataset

if TYPE_CHECKING:
    from modules.jobs.queue import Job, JobQueue
    from modules.models.embeddings import EmbeddingLibrary
    from modules.models.loaded import LoadedModel
    from modules.models.manager import ModelManager
    from modules.network import ServerAccess

log = logging.getLogger(__name__)

KIND = "train-embedding"
CREATE_KIND = "create-embedding"
MAX_VECTORS = 75  # A1111's slider: one 75-token chunk
CLIP_MODES = ("disabled", "value", "norm")
LATENT_SAMPLING = ("once", "deterministic", "random")
LOSS_CSV = "textual_inversion_loss.csv"
PT_TOKEN = 265  # the id A1111 writes in `string_to_token` ("*")


class EmbeddingNotFound(ValueError):
    """The embedding named in a request is not in the embeddings folder."""


class EmbeddingExists(ValueError):
    """Creating an embedding whose file exists, without `overwrite_old`."""


# --------------------------------------------------------------------------- A1111's learn-rate schedules

def parse_schedule(text: str | float, max_steps: int, what: str = "Learning rate") -> list[tuple[float, int]]:
    """A1111's "0.005:100, 1e-3:1000, 1e-5" as [(rate, last step + 1), ...]: each rate runs
    until its step, a rate without a step (or with -1) until `max_steps`, and nothing is read
    after the pair that reaches `max_steps`. A schedule that ends early ends training there."""
    pairs: list[tuple[float, int]] = []
    for part in str(text).split(","):
        rate_text, colon, step_text = part.strip().partition(":")
        try:
            rate = float(rate_text)
            end = int(step_text) if colon else -1
        except ValueError:
            raise ValueError(f"{what} {str(text)!r} is not a number or a schedule such as 0.005:100, 1e-3:1000, 1e-5.") from None
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"{what} {str(text)!r} has a rate that is not a positive number ({rate_text.strip()}).")
        if end == -1 or end >= max_steps:
            pairs.append((rate, max_steps))
            return pairs
        if end <= 0:
            raise ValueError(f"{what} {str(text)!r} has a step that is not positive ({step_text.strip()}).")
        pairs.append((rate, end))
    return pairs


def rate_at(schedule: list[tuple[float, int]], step: int) -> float | None:
    """The rate for the step after `step` steps are done; None once the schedule has ended."""
    return next((rate for rate, end in schedule if step < end), None)


# --------------------------------------------------------------------------- the request

@dataclass(frozen=True)
class TrainOptions:
    """A1111's `/sdapi/v1/train/embedding` fields with its Train tab's defaults. Fields it has
    that change nothing here are accepted: `use_weight` (refused when on), the PNG-chunk copy
    and the preview sampler."""

    embedding_name: str = ""
    learn_rate: str = "0.005"
    batch_size: int = 1
    gradient_step: int = 1
    data_root: str = ""
    log_directory: str = "textual_inversion"
    training_width: int = 512
    training_height: int = 512
    varsize: bool = False
    steps: int = 100000
    clip_grad_mode: str = "disabled"
    clip_grad_value: str = "0.1"
    shuffle_tags: bool = False
    tag_drop_out: float = 0.0
    latent_sampling_method: str = "once"
    use_weight: bool = False
    create_image_every: int = 500
    save_embedding_every: int = 500
    template_filename: str = "style_filewords.txt"
    save_image_with_stored_embedding: bool = True
    preview_from_txt2img: bool = False
    preview_prompt: str = ""
    preview_negative_prompt: str = ""
    preview_steps: int = 20
    preview_sampler_name: str = "Euler a"
    preview_cfg_scale: float = 7.0
    preview_seed: int = -1
    preview_width: int = 512
    preview_height: int = 512
    seed: int = 0  # ours: noise and order repeat for the same seed (A1111's are unseeded)

    @classmethod
    def from_request(cls, values: Mapping[str, Any]) -> "TrainOptions":
        """From a request's dict (A1111's names; others are ignored, as extra UI inputs are);
        a ValueError with a sentence for a value of the wrong kind or out of range."""
        kinds = {f.name: type(f.default) for f in fields(cls)}
        clean: dict[str, Any] = {}
        for key, value in values.items():
            if key not in kinds or value is None:
                continue
            clean[key] = coerce_value(key, value, kinds[key])
        options = cls(**clean)
        options.check()
        return options

    def check(self) -> None:
        if not self.embedding_name.strip():
            raise ValueError("Embedding not selected: give embedding_name.")
        if not self.data_root.strip():
            raise ValueError("Dataset directory is empty: give data_root, the folder of training pictures.")
        for name, low in (("batch_size", 1), ("gradient_step", 1), ("steps", 1), ("create_image_every", 0),
                          ("save_embedding_every", 0), ("preview_steps", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be at least {low}; got {getattr(self, name)}.")
        for name in ("training_width", "training_height"):
            if not 64 <= getattr(self, name) <= 2048:
                raise ValueError(f"{name} must be between 64 and 2048 pixels; got {getattr(self, name)}.")
        if self.clip_grad_mode not in CLIP_MODES:
            raise ValueError(f"Gradient clipping {self.clip_grad_mode!r} is not one of {', '.join(CLIP_MODES)}.")
        if self.latent_sampling_method not in LATENT_SAMPLING:
            raise ValueError(f"Latent sampling method {self.latent_sampling_method!r} is not one of {', '.join(LATENT_SAMPLING)}.")
        if not 0 <= self.tag_drop_out <= 1:
            raise ValueError(f"tag_drop_out must be between 0 and 1; got {self.tag_drop_out}.")
        if self.use_weight:
            raise ValueError("use_weight (the PNG alpha channel as loss weight) is not supported here; send it as false.")
        if (self.create_image_every or self.save_embedding_every) and not self.log_directory.strip():
            raise ValueError("Log directory is empty: give log_directory, or 0 for create_image_every and save_embedding_every.")
        parse_schedule(self.learn_rate, self.steps)
        if self.clip_grad_mode != "disabled":
            parse_schedule(self.clip_grad_value, self.steps, "Gradient clip value")
        if self.preview_from_txt2img and self.create_image_every:
            self.preview_params()  # a bad preview field is refused now, not at the first preview

    def preview_params(self):
        """The preview's txt2img fields as generation parameters (pydantic's ValidationError is a ValueError)."""
        from modules.generation.params import GenerationParams

        return GenerationParams(prompt=self.preview_prompt, negative_prompt=self.preview_negative_prompt, steps=self.preview_steps,
                                sampler_name=self.preview_sampler_name, cfg_scale=self.preview_cfg_scale, width=self.preview_width,
                                height=self.preview_height)

    def to_payload(self) -> dict:
        return asdict(self)


def coerce_value(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{key} must be true or false; got {value!r}.")
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{key} must be text; got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number; got {value!r}.") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"{key} must be a number; got {value!r}.")
    if kind is int:
        if number != int(number):
            raise ValueError(f"{key} must be a whole number; got {value!r}.")
        return int(number)
    return number


# --------------------------------------------------------------------------- vectors and files

@dataclass(frozen=True)
class Encoder:
    """One text encoder of the model and the key its vectors have in an embedding file."""

    key: str
    tokenizer: Any
    model: Any

    @property
    def width(self) -> int:
        return self.model.config.hidden_size


def encoders_of(model: "LoadedModel") -> list[Encoder]:
    """The model's CLIP text encoders (SDXL: CLIP-L and CLIP-G); a ValueError for a model
    textual inversion cannot train (Flux, SD 3, the SDXL refiner, inpainting UNets)."""
    if model.family != "sd" or model.text_encoder is None or model.tokenizer is None:
        raise ValueError(f"Textual inversion needs an SD 1.x, SD 2.x or SDXL checkpoint with its CLIP text encoder; "
                         f"the loaded model is {model.arch}.")
    if model.is_sdxl:
        return [Encoder(SDXL_KEYS[0], model.tokenizer, model.text_encoder), Encoder(SDXL_KEYS[1], model.tokenizer_2, model.text_encoder_2)]
    width = model.text_encoder.config.hidden_size
    return [Encoder(ENCODER_NAMES.get(width, f"clip_{width}"), model.tokenizer, model.text_encoder)]


def initial_vectors(model: "LoadedModel", init_text: str, count: int) -> dict[str, torch.Tensor]:
    """A1111's start: the input embeddings of `init_text`'s tokens spread over `count` vectors
    (repeated when there are fewer tokens, every n-th when more); zeros for an empty text."""
    vectors = {}
    for encoder in encoders_of(model):
        table = encoder.model.get_input_embeddings().weight
        ids = encoder.tokenizer(init_text, add_special_tokens=False)["input_ids"] if init_text else []
        out = torch.zeros((count, encoder.width), dtype=torch.float32)
        if ids:
            rows = table.detach()[torch.tensor(ids, device=table.device)].float().cpu()
            for i in range(count):
                out[i] = rows[i * len(ids) // count]
        vectors[encoder.key] = out
    return vectors


def clean_name(name: str) -> str:
    """A1111's rule: letters, digits and `._- ` only; a ValueError when nothing is left."""
    cleaned = "".join(ch for ch in str(name) if ch.isalnum() or ch in "._- ").strip()
    if not cleaned or cleaned.strip(".") == "":
        raise ValueError(f"The embedding name {name!r} has no letters or digits; choose a name such as my-style.")
    if len(cleaned.encode("utf-8")) > 200:  # the file system's limit is 255 bytes for <name>.pt
        raise ValueError(f"The embedding name is {len(cleaned)} characters long; choose one of at most 200 bytes (about 200 letters).")
    return cleaned


def save_embedding(path: Path, vectors: Mapping[str, torch.Tensor], name: str, step: int,
                   checkpoint_hash: str | None, checkpoint_name: str | None) -> Path:
    """Write an embedding in A1111's layout (see the module docstring), through a temporary
    file so a reader never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = {key: value.detach().float().cpu().contiguous() for key, value in vectors.items()}
    partial = path.with_name(path.name + ".tmp")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        tensors = cpu if len(cpu) > 1 else {"emb_params": next(iter(cpu.values()))}
        meta = {"name": name, "step": str(step), "sd_checkpoint": checkpoint_hash or "", "sd_checkpoint_name": checkpoint_name or ""}
        save_file(tensors, str(partial), metadata=meta)
    else:
        if len(cpu) != 1:
            raise ValueError(f"An embedding for {len(cpu)} text encoders is saved as .safetensors, not {path.name}.")
        torch.save({"string_to_token": {"*": PT_TOKEN}, "string_to_param": {"*": next(iter(cpu.values()))}, "name": name,
                    "step": step, "sd_checkpoint": checkpoint_hash, "sd_checkpoint_name": checkpoint_name}, partial)
    partial.replace(path)
    return path


def create_embedding(model: "LoadedModel", folder: Path, name: str, num_vectors_per_token: int = 1,
                     overwrite_old: bool = False, init_text: str = "*") -> Path:
    """A new embedding at step 0 in `folder` (`<name>.pt`; SDXL: `<name>.safetensors`)."""
    name = clean_name(name)
    if not 1 <= int(num_vectors_per_token) <= MAX_VECTORS:
        raise ValueError(f"Number of vectors per token must be between 1 and {MAX_VECTORS}; got {num_vectors_per_token}.")
    vectors = initial_vectors(model, init_text or "", int(num_vectors_per_token))
    path = Path(folder) / (name + (".safetensors" if len(vectors) > 1 else ".pt"))
    if path.exists() and not overwrite_old:
        raise EmbeddingExists(f"file {path} already exists")
    return save_embedding(path, vectors, name, 0, None, None)


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    filename: Path
    step: int
    interrupted: bool = False
    losses: list[float] = field(default_factory=list)  # one per optimizer step of this run
    log_dir: Path | None = None
    last_image: Path | None = None

    @property
    def info(self) -> str:
        """A1111's answer to /sdapi/v1/train/embedding."""
        return f"train embedding complete: filename: {self.filename} error: None"


class _TrainingEmbeddings:
    """The library's embeddings with the one being trained in place of its file; `version`
    changes with every step so a preview never reuses an older step's encoding."""

    def __init__(self, library: "EmbeddingLibrary | None", embedding: Embedding):
        self.library, self.embedding, self.version = library, embedding, 0

    @property
    def names(self) -> list[str]:
        names = list(self.library.names) if self.library is not None else []
        return names if self.embedding.name in names else names + [self.embedding.name]

    def get(self, name: str) -> Embedding | None:
        if name == self.embedding.name:
            return self.embedding
        return self.library.get(name) if self.library is not None else None

    def refresh(self) -> None:
        """The runner refreshes before each job; the library is refreshed when training ends."""

    def shorthash(self, embedding: Embedding) -> str | None:
        return None if embedding is self.embedding or self.library is None else self.library.shorthash(embedding)


@contextlib.contextmanager
def _frozen(*modules) -> Iterator[None]:
    """No gradients for the model's own weights while training (restored afterwards): only the
    embedding's vectors learn, and nothing of the model is written to."""
    saved = [(p, p.requires_grad) for m in modules if m is not None for p in m.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


@dataclass
class _Picture:
    mean: torch.Tensor  # [4, h, w] latent mean (scaled), or the one sample for "once"
    std: torch.Tensor | None  # for "random"
    caption: str  # filewords
    size: tuple[int, int]


def training_samples(data_root: Path, options: TrainOptions) -> list[dataset.Sample]:
    """The folder's pictures with their filewords (the caption file, else the file name); a
    ValueError when there are too few for one optimizer step."""
    found = dataset.scan_folder(data_root, caption_template="[filewords]", repeats_from_names=False)
    batch = 1 if options.varsize else options.batch_size
    if len(found) < batch * options.gradient_step:
        raise ValueError(f"Batch size {batch} × gradient accumulation steps {options.gradient_step} needs at least "
                         f"{batch * options.gradient_step} pictures; {data_root} has {len(found)}.")
    return found


class EmbeddingTrainer:
    """One training run on a loaded model. `run` does the work; what users can get wrong (the
    embedding, the pictures, the template) is found at its start, before any step, and by
    `EmbeddingService.check` before the job is queued (ValueErrors with a sentence)."""

    def __init__(self, model: "LoadedModel", library: "EmbeddingLibrary | None", options: TrainOptions, data_root: Path,
                 log_root: Path | None, template: Path, checkpoint: tuple[str | None, str | None] = (None, None),
                 progress: Callable[[int, int], None] | None = None):
        self.model, self.library, self.options = model, library, options
        self.data_root, self.log_root, self.template = data_root, log_root, template
        self.checkpoint = checkpoint  # (shorthash, model name) written into the file
        self.progress = progress

    # -- setup -------------------------------------------------------------------------------

    def load_embedding(self) -> Embedding:
        name = self.options.embedding_name
        if self.library is not None:
            self.library.refresh()
        found = self.library.get(name) if self.library is not None else None
        if found is None:
            reason = self.library.skipped.get(name) if self.library is not None else None
            raise EmbeddingNotFound(f"Embedding {name!r} not found in the embeddings folder" + (f": {reason}." if reason else
                                    "; create it first (Create embedding, or POST /sdapi/v1/create/embedding)."))
        keys = {e.key: e.width for e in encoders_of(self.model)}
        missing = [k for k, width in keys.items() if found.for_width(width) is None]
        if missing:
            raise ValueError(f"Embedding {name!r} was made for another kind of model (widths {sorted(found.widths())}); the "
                             f"loaded model needs vectors of width {', '.join(str(keys[k]) for k in missing)}.")
        return found

    def samples(self) -> list[dataset.Sample]:
        return training_samples(self.data_root, self.options)

    def template_lines(self) -> list[str]:
        lines = [line.strip() for line in self.template.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"Prompt template file {self.template.name} is empty.")
        return lines

    # -- the run ----------------------------------------------------------------------------

    def run(self, interrupted: Callable[[], bool] = lambda: False, resume: Mapping | None = None,
            on_save: Callable[[dict], None] | None = None, on_preview: Callable[[Any], None] | None = None) -> TrainResult:
        """Train until `steps` (or the schedule's end, or an interrupt), saving as asked; the
        final vectors go over the embedding's own file either way."""
        o, model = self.options, self.model
        stored = self.load_embedding()
        samples, lines = self.samples(), self.template_lines()
        encoders = encoders_of(model)
        params = {e.key: torch.nn.Parameter(stored.for_width(e.width).clone().to(model.device, torch.float32)) for e in encoders}
        step = int(stored.step or 0)
        copy = self._resume_copy(resume, step)
        if copy is not None:
            for e in encoders:
                params[e.key].data.copy_(copy.for_width(e.width).to(model.device))
            step = int(copy.step or step)
        training = Embedding(stored.name, stored.path, {k: p for k, p in params.items()}, dict(stored.info))
        provider = _TrainingEmbeddings(self.library, training)
        log_dir = self._log_dir(stored.name)
        result = TrainResult(stored.path, step, log_dir=log_dir)
        schedule = parse_schedule(o.learn_rate, o.steps)
        clip_schedule = parse_schedule(o.clip_grad_value, o.steps, "Gradient clip value") if o.clip_grad_mode != "disabled" else None
        if step >= o.steps or rate_at(schedule, step) is None:
            return result  # A1111: "Model has already been trained beyond specified max steps"
        from diffusers import DDPMScheduler
        from tqdm import tqdm

        noise_schedule = DDPMScheduler.from_config(model.scheduler_config)
        rng = np.random.default_rng([o.seed, step])
        generator = torch.Generator().manual_seed(o.seed * 1_000_003 + step)
        pictures = self._encode(samples, generator)
        optimizer = torch.optim.AdamW(list(params.values()), lr=rate_at(schedule, step), weight_decay=0.0)
        scaler = torch.amp.GradScaler("cuda") if model.device.type == "cuda" and model.dtype == torch.float16 else None
        batch_size = 1 if o.varsize else o.batch_size
        per_epoch = max(1, len(pictures) // batch_size // o.gradient_step)
        first, bar = step, tqdm(total=o.steps - step, desc="Training textual inversion", leave=False)
        micro, running = 0, 0.0
        if self.progress is not None:
            self.progress(0, o.steps - first)  # the step count shows (with an ETA) from the start
        try:
            with _frozen(model.unet, model.vae, *(e.model for e in encoders)):
                for indices in _batches(len(pictures), batch_size, o.gradient_step, rng):
                    rate = rate_at(schedule, step)
                    if step >= o.steps or rate is None or interrupted():
                        break
                    for group in optimizer.param_groups:
                        group["lr"] = rate
                    chosen = [pictures[i] for i in indices]
                    captions = [dataset.render_template(lines[rng.integers(len(lines))], stored.name,
                                                        dataset.process_caption(p.caption, rng, shuffle=o.shuffle_tags,
                                                                                tag_dropout=o.tag_drop_out))
                                for p in chosen]
                    loss = self._loss(chosen, captions, provider, encoders, noise_schedule, generator) / o.gradient_step
                    (scaler.scale(loss) if scaler else loss).backward()
                    running += loss.item()
                    micro += 1
                    if micro % o.gradient_step:
                        continue
                    self._apply(optimizer, scaler, list(params.values()), clip_schedule, step)
                    step += 1
                    provider.version = step
                    result.losses.append(running)
                    self._write_loss(log_dir, step, per_epoch, running, rate)
                    bar.update(1)
                    bar.set_description(f"Training textual inversion [Epoch {(step - 1) // per_epoch}: {(step - 1) % per_epoch + 1}/"
                                        f"{per_epoch}] loss: {running:.7f}")
                    running = 0.0
                    if self.progress is not None:
                        self.progress(step - first, o.steps - first)
                    self._keep(step, stored.name, training, params, captions[0], provider, log_dir, rng, result, on_save, on_preview)
        finally:
            bar.close()
        result.step, result.interrupted = step, interrupted()
        self._save(stored.path, training, params, step, stored.name)
        if self.library is not None:
            self.library.refresh()
        return result

    def _apply(self, optimizer, scaler, vectors: list[torch.Tensor], clip_schedule, step: int) -> None:
        """One optimizer step, the gradients clipped first when asked (A1111's value or norm,
        the limit following its own schedule)."""
        if clip_schedule is not None:
            if scaler:
                scaler.unscale_(optimizer)
            limit = rate_at(clip_schedule, step) or clip_schedule[-1][0]
            clip = torch.nn.utils.clip_grad_value_ if self.options.clip_grad_mode == "value" else torch.nn.utils.clip_grad_norm_
            clip(vectors, limit)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def _keep(self, step: int, name: str, training: Embedding, params: dict, caption: str, provider: _TrainingEmbeddings,
              log_dir: Path | None, rng: np.random.Generator, result: TrainResult, on_save, on_preview) -> None:
        """The log folder's copy of the embedding and preview picture, when this step is due."""
        o = self.options
        if log_dir is None:
            return
        if o.save_embedding_every and step % o.save_embedding_every == 0:
            saved = self._save(log_dir / "embeddings" / f"{name}-{step}.pt", training, params, step, f"{name}-{step}")
            if on_save is not None:
                on_save({"step": step, "file": str(saved)})
        if o.create_image_every and step % o.create_image_every == 0:
            image, result.last_image = self._preview(provider, caption, step, log_dir, rng)
            if on_preview is not None:
                on_preview(image)

    def _resume_copy(self, resume: Mapping | None, step: int) -> Embedding | None:
        """The log folder's copy a run cut off by a restart saved last, when it is further on."""
        file = Path(str(resume.get("file", ""))) if isinstance(resume, Mapping) else None
        if file is None or not file.is_file():
            return None
        try:
            copy = load_embedding(file)
        except EmbeddingError:
            return None
        return copy if (copy.step or 0) > step else None

    def _log_dir(self, name: str) -> Path | None:
        o = self.options
        if self.log_root is None or not (o.create_image_every or o.save_embedding_every):
            return None
        folder = self.log_root / datetime.date.today().strftime("%Y-%m-%d") / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _save(self, path: Path, training: Embedding, params: dict, step: int, name: str) -> Path:
        vectors = {k: p.detach() for k, p in params.items()}
        if len(vectors) > 1 and path.suffix.lower() != ".safetensors":
            path = path.with_suffix(".safetensors")
        return save_embedding(path, vectors, name, step, *self.checkpoint)

    @torch.no_grad()
    def _encode(self, samples: list[dataset.Sample], generator: torch.Generator) -> list[_Picture]:
        """Every picture through the VAE once, as A1111 does: "once" keeps one sample of the
        latent distribution, "deterministic" its mean, "random" draws anew each step."""
        o, vae = self.options, self.model.vae
        scale, shift = vae.config.scaling_factor, vae.config.get("shift_factor") or 0.0
        pictures = []
        for sample in samples:
            size = _own_size(sample.size) if o.varsize else (o.training_width, o.training_height)
            pixels = dataset.load_picture(sample, size).unsqueeze(0).to(vae.device, vae.dtype)
            dist = vae.encode(pixels).latent_dist
            mean, std = dist.mean[0].float().cpu(), dist.std[0].float().cpu()
            if o.latent_sampling_method == "once":
                mean = mean + std * torch.randn(mean.shape, generator=generator)
            keep_std = std * scale if o.latent_sampling_method == "random" else None
            pictures.append(_Picture((mean - shift) * scale, keep_std, sample.caption, size))
        return pictures

    def _loss(self, pictures: list[_Picture], captions: list[str], provider: _TrainingEmbeddings, encoders: list[Encoder],
              noise_schedule, generator: torch.Generator) -> torch.Tensor:
        model = self.model
        latents = torch.stack([p.mean if p.std is None else p.mean + p.std * torch.randn(p.mean.shape, generator=generator)
                               for p in pictures])
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (len(pictures),), generator=generator)
        noisy = noise_schedule.add_noise(latents, noise, t)
        target = noise if model.prediction_type == "epsilon" else noise_schedule.get_velocity(latents, noise, t)
        context, pooled = self._condition(captions, provider, encoders)
        kwargs = {}
        if pooled is not None:
            h, w = pictures[0].size[1], pictures[0].size[0]
            time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=pooled.dtype, device=model.device).repeat(len(pictures), 1)
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}
        device = model.device
        pred = model.unet(noisy.to(device, model.dtype), t.to(device), context.to(model.dtype), **kwargs).sample
        return torch.nn.functional.mse_loss(pred.float(), target.to(device).float())

    def _condition(self, captions: list[str], provider: _TrainingEmbeddings, encoders: list[Encoder]):
        """The captions' conditioning with the trained vectors in place (gradients flow to them):
        the first 75-token chunk, as the prompt encoder makes it for a generation."""
        from modules.generation.text_encoding import EncodingOptions, Tokenizing, _inserted

        widths = tuple(e.width for e in encoders)
        per_encoder, pooled = [], None
        for e in encoders:
            tokenizing = Tokenizing(e.tokenizer, provider, widths)
            rows = []
            for caption in captions:
                chunk = tokenizing(caption, EncodingOptions(), e.width).chunks[0]
                ids = torch.tensor([tokenizing.chunk_ids(chunk)], device=self.model.device)
                with _inserted(e.model, chunk):
                    out = e.model(ids, output_hidden_states=self.model.is_sdxl)
                if self.model.is_sdxl:
                    rows.append(out.hidden_states[-2])
                    if e is encoders[-1]:
                        pooled = out[0] if pooled is None else torch.cat([pooled, out[0]])
                else:
                    rows.append(out[0])
            per_encoder.append(torch.cat(rows))
        return torch.cat(per_encoder, dim=-1), pooled

    def _write_loss(self, log_dir: Path | None, step: int, per_epoch: int, loss: float, rate: float) -> None:
        """A1111's textual_inversion_loss.csv: step, epoch, epoch_step, loss, learn_rate."""
        if log_dir is None:
            return
        path = log_dir / LOSS_CSV
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["step", "epoch", "epoch_step", "loss", "learn_rate"])
            writer.writerow([step, (step - 1) // per_epoch, (step - 1) % per_epoch + 1, f"{loss:.7f}", rate])

    def _preview(self, provider: _TrainingEmbeddings, caption: str, step: int, log_dir: Path, rng: np.random.Generator):
        """A1111's preview: the step's first caption at the training size and 20 steps, or the
        txt2img-like preview fields when `preview_from_txt2img`."""
        from modules.generation.params import GenerationParams
        from modules.generation.runner import PromptSetup, Runner

        o = self.options
        if o.preview_from_txt2img:
            params = o.preview_params()
            seed = o.preview_seed if o.preview_seed >= 0 else int(rng.integers(2**32))
        else:
            params = GenerationParams(prompt=caption, steps=20, width=o.training_width, height=o.training_height)
            seed = int(rng.integers(2**32))
        runner = Runner(self.model, PromptSetup(embeddings=provider))
        with torch.no_grad():
            image = next(iter(runner.txt2img(params, seed))).images[0]
        path = log_dir / "images" / f"{provider.embedding.name}-{step}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        from PIL import PngImagePlugin

        from modules.outputs.infotext import format_infotext

        fields = [("Steps", params.steps), ("Sampler", params.sampler_name), ("CFG scale", params.cfg_scale), ("Seed", seed),
                  ("Size", f"{params.width}x{params.height}"), ("Model", self.checkpoint[1])]
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", format_infotext(params.prompt, params.negative_prompt, fields))
        image.save(path, pnginfo=info)
        return image, path


def _batches(count: int, batch_size: int, accumulation: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Picture indices, batch after batch, epoch after epoch: each epoch a new order, its last
    short batch dropped and whole accumulation rounds only (A1111's drop_last)."""
    per_epoch = count // batch_size // accumulation * accumulation
    if per_epoch == 0:
        raise ValueError(f"{count} pictures cannot fill one batch of {batch_size} × {accumulation} accumulation steps.")
    while True:
        order = rng.permutation(count)
        for i in range(per_epoch):
            yield order[i * batch_size:(i + 1) * batch_size]


def _own_size(size: tuple[int, int]) -> tuple[int, int]:
    """"Do not resize images": the picture's own size, cut down to the UNet's 64-pixel grid."""
    return tuple(max(64, side // 64 * 64) for side in size)  # type: ignore[return-value]


# --------------------------------------------------------------------------- the queue


class EmbeddingService:
    """Creating and training embeddings for the app: the checks run before anything waits in
    the queue, the work runs as queue jobs on the loaded model."""

    def __init__(self, models: "ModelManager", library: "EmbeddingLibrary", data_dir: Path, templates_dir: Path,
                 access: "ServerAccess | None" = None):
        self.models, self.library = models, library
        self.data_dir, self.templates_dir, self.access = Path(data_dir), Path(templates_dir), access

    @classmethod
    def for_app(cls, app) -> "EmbeddingService":
        """From webui's App (its models, embeddings library, data folder and access rules)."""
        return cls(app.models, app.service.libraries.embeddings, app.paths.data_dir,
                   app.paths.configs_dir / "textual_inversion_templates", getattr(app, "access", None))

    @property
    def folder(self) -> Path:
        return self.library.dirs[0]

    @property
    def restricted(self) -> bool:
        return bool(self.access is not None and self.access.restricted)

    def templates(self) -> dict[str, Path]:
        return dataset.read_templates(self.templates_dir)

    def names(self) -> list[str]:
        self.library.refresh()
        return sorted(self.library.names, key=str.lower)

    # -- create ------------------------------------------------------------------------------

    def create(self, name: str, num_vectors_per_token: int = 1, overwrite_old: bool = False, init_text: str = "*") -> Path:
        """On the worker: the model's token embeddings are read."""
        model = self.models.ensure().model
        path = create_embedding(model, self.folder, name, num_vectors_per_token, overwrite_old, init_text)
        self.library.refresh()
        return path

    def submit_create(self, queue: "JobQueue", name: str, num_vectors_per_token: int = 1, overwrite_old: bool = False,
                      init_text: str = "*", user: str = "") -> "Job":
        clean_name(name)
        if not 1 <= int(num_vectors_per_token) <= MAX_VECTORS:
            raise ValueError(f"Number of vectors per token must be between 1 and {MAX_VECTORS}; got {num_vectors_per_token}.")
        return queue.submit(CREATE_KIND, lambda job: self.create(name, num_vectors_per_token, overwrite_old, init_text), user=user)

    # -- train -------------------------------------------------------------------------------

    def resolve(self, options: TrainOptions) -> tuple[Path, Path | None, Path]:
        """(dataset folder, log root, template file), refused now when they cannot work:
        AccessRefused for folders outside the data folder on a shared server."""
        data_root = dataset.check_folder_allowed(Path(options.data_root), self.data_dir, self.restricted)
        log_root = None
        if options.create_image_every or options.save_embedding_every:
            try:
                log_root = dataset.check_folder_allowed(Path(options.log_directory), self.data_dir, self.restricted)
            except AccessRefused:
                raise AccessRefused(f"The log directory must be inside the data folder (for example textual_inversion) while this "
                                    f"server is shared on the network; got {options.log_directory!r}. The server's owner can allow "
                                    f"any folder by starting it with {INSECURE_FLAG}.") from None
        template = self.templates().get(options.template_filename)
        if template is None:
            known = ", ".join(self.templates()) or "none"
            raise ValueError(f"Prompt template file {options.template_filename!r} not found; the templates are: {known}.")
        return data_root, log_root, template

    def check(self, options: TrainOptions) -> None:
        """Everything that can be known before the job runs: the embedding, the folders, the
        pictures and the template."""
        data_root, _, template = self.resolve(options)
        self.library.refresh()
        if self.library.get(options.embedding_name) is None:
            raise EmbeddingNotFound(f"Embedding {options.embedding_name!r} not found in the embeddings folder; create it first.")
        training_samples(data_root, options)

    def trainer(self, options: TrainOptions, progress: Callable[[int, int], None] | None = None) -> EmbeddingTrainer:
        active = self.models.ensure()
        data_root, log_root, template = self.resolve(options)
        shorthash = active.info.shorthash or self.models.hashes.shorthash(active.info.path)
        return EmbeddingTrainer(active.model, self.library, options, data_root, log_root, template,
                                (shorthash, active.info.model_name), progress)

    def run(self, job: "Job | None", options: TrainOptions) -> TrainResult:
        """The job's work: train, with progress, interrupt, saves recorded for a restart."""
        def progress(step: int, steps: int) -> None:
            if job is not None:
                job.progress.step, job.progress.steps = step, steps

        def preview(image) -> None:
            if job is not None:
                job.progress.preview = image

        trainer = self.trainer(options, progress)
        interrupted = (lambda: job.control.interrupted) if job is not None else (lambda: False)
        record = job.record_progress if job is not None else None
        return trainer.run(interrupted, resume=job.resumed if job is not None else None, on_save=record, on_preview=preview)

    def submit(self, queue: "JobQueue", options: TrainOptions, user: str = "") -> "Job":
        self.check(options)
        return queue.submit(KIND, lambda job: self.run(job, options), user=user, payload=options.to_payload(), record=True)


def register_embedding_jobs(queue: "JobQueue", service: EmbeddingService) -> None:
    """Recorded training jobs come back after a restart and go on from their last saved copy."""
    def handler(payload: dict):
        options = TrainOptions.from_request(payload)
        return lambda job: service.run(job, options)

    queue.register(KIND, handler)

