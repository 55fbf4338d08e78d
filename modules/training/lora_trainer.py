"""The LoRA training loop: peft adapters on a loaded checkpoint's UNet (and text encoders),
trained on a folder of captioned pictures with the noise-prediction loss.

Everything else is a library's: peft injects and reads the adapters, diffusers gives the noise
schedule (`DDPMScheduler`), the LR schedules (`get_scheduler`), min-SNR's SNR and the fp32
casting of trainable weights. Written here: the loss, batching, and the run's bookkeeping.

Each step draws its batch, caption dropout, noise and timesteps from generators seeded with
(seed, step), and the epoch's batch order from (seed, epoch), so a run resumed from its
`state/` checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from modules.files import atomic_path
from modules.training import dataset as data
from modules.training.kohya_format import BASE_MODEL_VERSIONS, MODELSPEC_ARCHITECTURES, kohya_state_dict, save_lora, training_metadata

if TYPE_CHECKING:
    from modules.models.loaded import LoadedModel
    from modules.training.params import LoraTrainingParams

log = logging.getLogger(__name__)

ADAPTER = "web_ui_training"
# kohya's LoRA targets: the transformer blocks' linear and 1×1 layers, and CLIP's attention and MLP.
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
# kohya's LoCon (network_args conv_dim): the ResNet blocks' 3×3 convolutions too, at their own rank.
CONV_TARGETS = ["conv1", "conv2"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
MAX_GRAD_NORM = 1.0  # kohya's default clipping
STATE_FILE = "state.pt"


class TrainingStopped(Exception):
    """Raised inside the loop by the interrupt check; the run saves what it has."""


@dataclass
class Hooks:
    """How the job watches and steers the run (all optional)."""

    should_stop: Callable[[], bool] = lambda: False
    on_step: Callable[[int, int, float], None] = lambda step, total, loss: None  # (step done, total, loss)
    samples: Callable[[int, "LoraTrainer"], list[Path]] | None = None  # draw the sample prompts at a step
    evaluate: Callable[[int, "LoraTrainer"], Any] | None = None  # held-out scores at a step


@dataclass
class Outcome:
    lora: Path | None
    steps: int  # steps done in all (with those before a resume)
    total: int
    interrupted: bool
    resumed_from: int = 0
    notes: list[str] = field(default_factory=list)


def total_steps(params: "LoraTrainingParams", steps_per_epoch: int) -> int:
    """kohya's rule: epochs, when given, override max steps (whose default is never 0)."""
    return params.max_train_epochs * steps_per_epoch if params.max_train_epochs else params.max_train_steps


class LoraTrainer:
    """One run on `model` (its own copy: the trainer adds adapters to it and sets it to train).
    `run_dir` holds the log, samples and resume state; the LoRA goes to `lora_path`."""

    def __init__(self, model: "LoadedModel", params: "LoraTrainingParams", samples: Sequence[data.Sample], run_dir: Path,
                 lora_path: Path, *, device: torch.device, checkpoint_name: str = "", console: bool = True):
        self.model, self.params, self.samples = model, params, list(samples)
        self.run_dir, self.lora_path, self.device = Path(run_dir), Path(lora_path), device
        self.checkpoint_name = checkpoint_name
        self.console = console
        self.sdxl = model.is_sdxl
        self.train_text = not params.network_train_unet_only
        self.buckets = (data.make_buckets(params.resolution, params.min_bucket_reso, params.max_bucket_reso, params.bucket_reso_steps)
                        if params.enable_bucket else [(params.resolution, params.resolution)])
        self.sample_buckets = [data.bucket_for(s.size, self.buckets) for s in self.samples]
        self._plan = (0, data.plan_epoch(self.samples, self.buckets, params.train_batch_size, params.seed, 0))
        self.steps_per_epoch = len(self._plan[1])
        self.total = total_steps(params, self.steps_per_epoch)
        self.started_at = time.time()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cuda = device.type == "cuda"
        self.autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(params.mixed_precision) if cuda else None
        self._latent_cache: dict[tuple[Path, tuple[int, int]], tuple[torch.Tensor, torch.Tensor]] = {}
        self._prepare()

    # ------------------------------------------------------------------ set-up

    @property
    def text_encoders(self) -> list[tuple[str, Any]]:
        found = [("text_encoder", self.model.text_encoder), ("text_encoder_2", self.model.text_encoder_2)]
        return [(name, module) for name, module in found if module is not None]

    def _prepare(self) -> None:
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig, inject_adapter_in_model

        p, model = self.params, self.model
        for module in (model.unet, model.vae, *(m for _, m in self.text_encoders)):
            module.requires_grad_(False)
        model.vae.eval()
        self.noise_scheduler = DDPMScheduler.from_config(model.scheduler_config)
        conv = {name: p.conv_dim for name in CONV_TARGETS} if p.conv_dim else {}
        unet_config = LoraConfig(r=p.network_dim, lora_alpha=p.network_alpha, target_modules=UNET_TARGETS + list(conv), init_lora_weights=True,
                                 rank_pattern=conv, alpha_pattern={name: p.conv_alpha for name in conv})
        inject_adapter_in_model(unet_config, model.unet, adapter_name=ADAPTER)
        trained = [model.unet]
        if self.train_text:
            text_config = LoraConfig(r=p.network_dim, lora_alpha=p.network_alpha, target_modules=TEXT_TARGETS, init_lora_weights=True)
            for _, encoder in self.text_encoders:
                inject_adapter_in_model(text_config, encoder, adapter_name=ADAPTER)
                trained.append(encoder)
        torch.manual_seed(p.seed)  # peft's kaiming init of lora_A draws from the global generator
        for module in trained:
            for name, sub in module.named_modules():
                if hasattr(sub, "reset_lora_parameters") and ADAPTER in getattr(sub, "lora_A", {}):
                    sub.reset_lora_parameters(ADAPTER, True)
        cast_training_params(trained, dtype=torch.float32)  # fp16 base weights, fp32 LoRA weights (as diffusers' scripts)
        if p.gradient_checkpointing and self.device.type == "cuda":
            model.unet.enable_gradient_checkpointing()
            if self.train_text:
                for _, encoder in self.text_encoders:
                    encoder.gradient_checkpointing_enable()
        groups = [{"params": _lora_params(model.unet), "lr": p.unet_rate}]
        if self.train_text:
            groups.append({"params": [q for _, e in self.text_encoders for q in _lora_params(e)], "lr": p.text_rate})
        self.optimizer = _optimizer(p.optimizer_type, groups)
        self.lr_scheduler = get_scheduler(p.lr_scheduler, self.optimizer, num_warmup_steps=p.lr_warmup_steps, num_training_steps=max(1, self.total))
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        self.trained = trained

    # ------------------------------------------------------------------ the loop

    def train(self, hooks: Hooks | None = None) -> Outcome:
        hooks = hooks or Hooks()
        start = self._resume()
        self._trim_log(start)
        outcome = Outcome(None, start, self.total, False, resumed_from=start)
        if start:
            outcome.notes.append(f"Resumed from step {start} of {self.total}.")
        bar = self._bar(start)
        self._set_train(True)
        step = start
        try:
            while step < self.total:
                if hooks.should_stop():
                    raise TrainingStopped
                loss, seconds = self.train_step(step)
                step += 1
                self._log(step, loss, seconds)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}")
                hooks.on_step(step, self.total, loss)
                if step < self.total:
                    self._periodic(step, hooks, outcome)
        except TrainingStopped:
            outcome.interrupted = True
            outcome.notes.append(f"Interrupted at step {step} of {self.total}; the LoRA so far is saved, and training the same name "
                                 "with the same settings again goes on from here.")
        finally:
            if bar is not None:
                bar.close()
        outcome.steps = step
        self.save_state(step)
        outcome.lora = self.save(self.lora_path, step)
        self._set_train(False)
        if not outcome.interrupted:
            self._finish_samples(step, hooks)
        return outcome

    def _periodic(self, step: int, hooks: Hooks, outcome: Outcome) -> None:
        p = self.params
        state_every = p.save_every_n_steps or max(10, self.total // 10)
        if step % state_every == 0:
            self.save_state(step)
        if p.save_every_n_steps and step % p.save_every_n_steps == 0:
            self.save(self.lora_path.with_name(f"{self.lora_path.stem}-step{step:06d}{self.lora_path.suffix}"), step)
        if p.sample_every_n_steps and step % p.sample_every_n_steps == 0 and hooks.samples is not None:
            self._with_eval(lambda: hooks.samples(step, self))
        if p.eval_every_n_steps and step % p.eval_every_n_steps == 0 and hooks.evaluate is not None:
            self._with_eval(lambda: hooks.evaluate(step, self))

    def _finish_samples(self, step: int, hooks: Hooks) -> None:
        if hooks.samples is not None:
            hooks.samples(step, self)
        if hooks.evaluate is not None:
            hooks.evaluate(step, self)

    def _with_eval(self, work: Callable[[], Any]) -> None:
        self._set_train(False)
        try:
            work()
        finally:
            self._set_train(True)

    def _set_train(self, on: bool) -> None:
        self.model.unet.train(on)
        for _, encoder in self.text_encoders:
            encoder.train(on and self.train_text)

    def train_step(self, step: int) -> tuple[float, float]:
        """One optimiser step; returns (loss, seconds)."""
        began = time.perf_counter()
        p = self.params
        epoch, index = divmod(step, self.steps_per_epoch)
        if self._plan[0] != epoch:
            self._plan = (epoch, data.plan_epoch(self.samples, self.buckets, p.train_batch_size, p.seed, epoch))
        batch = self._plan[1][index]
        rng = np.random.default_rng([p.seed, 1, step])
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([p.seed, 2, step]).generate_state(1)[0]))
        captions = [data.process_caption(self.samples[i].caption, rng, dropout_rate=p.caption_dropout_rate, shuffle=p.shuffle_caption,
                                         keep_tokens=p.keep_tokens) for i in batch]
        latents = self._latents(batch, gen)
        noise = torch.randn(latents.shape, generator=gen)
        if p.noise_offset:
            noise = noise + p.noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=gen)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=gen)
        latents, noise, timesteps = latents.to(self.device), noise.to(self.device), timesteps.to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.model.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            conditioning, added = self._encode(captions, [self.sample_buckets[i] for i in batch])
            prediction = self.model.unet(noisy.to(self.model.dtype), timesteps, conditioning, added_cond_kwargs=added).sample
        loss = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if p.min_snr_gamma:
            loss = loss * self._snr_weights(timesteps)
        loss = loss.mean()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_([q for g in self.optimizer.param_groups for q in g["params"]], MAX_GRAD_NORM)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.last_lr = self.lr_scheduler.get_last_lr()[0]  # the rate this step used (the log shows it)
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), time.perf_counter() - began

    def _snr_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Min-SNR-γ (Hang et al. 2023): min(SNR, γ)/SNR for ε-prediction, /(SNR+1) for v."""
        from diffusers.training_utils import compute_snr

        snr = compute_snr(self.noise_scheduler, timesteps)
        clipped = torch.clamp(snr, max=self.params.min_snr_gamma)
        return clipped / (snr + 1) if self.model.prediction_type == "v_prediction" else clipped / snr

    # ------------------------------------------------------------------ inputs

    def _latents(self, batch: list[int], gen: torch.Generator) -> torch.Tensor:
        """A fresh draw from each picture's cached VAE posterior (the encoder runs once per
        picture and bucket, as kohya's latent cache, but the sample still varies per step)."""
        vae = self.model.vae
        out = []
        for i in batch:
            key = (self.samples[i].path, self.sample_buckets[i])  # a repeated picture is encoded once
            if key not in self._latent_cache:
                pixels = data.load_picture(self.samples[i], self.sample_buckets[i]).unsqueeze(0)
                with torch.no_grad():
                    dist = vae.encode(pixels.to(self.device, self.model.vae_dtype)).latent_dist
                self._latent_cache[key] = (dist.mean.float().cpu(), dist.std.float().cpu())
            mean, std = self._latent_cache[key]
            out.append(mean + std * torch.randn(mean.shape, generator=gen))
        latents = torch.cat(out)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * vae.config.scaling_factor

    def _tokens(self, tokenizer, captions: list[str]) -> torch.Tensor:
        return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids.to(self.device)

    def _encode(self, captions: list[str], sizes: list[tuple[int, int]]) -> tuple[torch.Tensor, dict | None]:
        """The UNet's conditioning as the pipelines build it: SD 1.x/2.x the last hidden state;
        SDXL both encoders' penultimate states side by side, the second's pooled output and the
        size/crop ids (original = target = the bucket, no crop)."""
        model = self.model
        with torch.set_grad_enabled(self.train_text):
            if not self.sdxl:
                return model.text_encoder(self._tokens(model.tokenizer, captions))[0], None
            first = model.text_encoder(self._tokens(model.tokenizer, captions), output_hidden_states=True)
            second = model.text_encoder_2(self._tokens(model.tokenizer_2, captions), output_hidden_states=True)
        hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        time_ids = torch.tensor([[h, w, 0, 0, h, w] for w, h in sizes], device=self.device, dtype=hidden.dtype)
        return hidden, {"text_embeds": second[0], "time_ids": time_ids}

    # ------------------------------------------------------------------ files

    def lora_parts(self) -> dict[str, dict[str, torch.Tensor]]:
        from peft.utils import get_peft_model_state_dict

        parts = {"unet": get_peft_model_state_dict(self.model.unet, adapter_name=ADAPTER)}
        if self.train_text:
            for name, encoder in self.text_encoders:
                parts[name] = get_peft_model_state_dict(encoder, adapter_name=ADAPTER)
        return parts

    def save(self, path: Path, step: int) -> Path:
        tensors = kohya_state_dict(self.lora_parts(), self.params.network_alpha, self.sdxl, conv_alpha=self.params.conv_alpha)
        return save_lora(path, tensors, training_metadata(self.metadata(step)))

    def metadata(self, step: int) -> dict[str, Any]:
        p = self.params
        version = BASE_MODEL_VERSIONS.get(self.model.arch, self.model.arch)
        tags: dict[str, dict[str, int]] = {}
        for sample in dict.fromkeys(self.samples):  # kohya counts each picture once, not once per repeat
            folder = tags.setdefault(sample.path.parent.name, {})
            for tag in (t.strip().lower() for t in sample.caption.split(",")):
                if tag:
                    folder[tag] = folder.get(tag, 0) + 1
        return {
            "ss_network_module": "networks.lora", "ss_network_dim": p.network_dim, "ss_network_alpha": p.network_alpha,
            "ss_network_args": {"conv_dim": str(p.conv_dim), "conv_alpha": str(p.conv_alpha)} if p.conv_dim else None,
            "ss_output_name": p.output_name, "ss_base_model_version": version, "ss_v2": version == "sd_v2",
            "ss_sd_model_name": self.checkpoint_name, "ss_learning_rate": p.learning_rate, "ss_unet_lr": p.unet_rate,
            "ss_text_encoder_lr": p.text_rate if self.train_text else None, "ss_network_train_unet_only": not self.train_text,
            "ss_lr_scheduler": p.lr_scheduler, "ss_lr_warmup_steps": p.lr_warmup_steps, "ss_max_train_steps": self.total,
            "ss_steps": step, "ss_epoch": math.ceil(step / self.steps_per_epoch), "ss_num_epochs": math.ceil(self.total / self.steps_per_epoch),
            "ss_num_train_images": len(self.samples), "ss_num_batches_per_epoch": self.steps_per_epoch,
            "ss_batch_size_per_device": p.train_batch_size, "ss_resolution": f"({p.resolution}, {p.resolution})",
            "ss_enable_bucket": p.enable_bucket, "ss_min_bucket_reso": p.min_bucket_reso, "ss_max_bucket_reso": p.max_bucket_reso,
            "ss_caption_dropout_rate": p.caption_dropout_rate, "ss_shuffle_caption": p.shuffle_caption, "ss_keep_tokens": p.keep_tokens,
            "ss_noise_offset": p.noise_offset or None, "ss_min_snr_gamma": p.min_snr_gamma or None, "ss_seed": p.seed,
            "ss_mixed_precision": p.mixed_precision if self.autocast_dtype is not None else "no",
            "ss_gradient_checkpointing": p.gradient_checkpointing and self.device.type == "cuda", "ss_optimizer": _optimizer_name(p.optimizer_type),
            "ss_clip_skip": None, "ss_training_started_at": self.started_at, "ss_training_finished_at": time.time(),
            "ss_tag_frequency": tags, "ss_dataset_dirs": _dataset_dirs(self.samples),
            "ss_training_comment": f"Trained in the web UI's Train tab; trigger word: {p.trigger_word}" if p.trigger_word else "Trained in the web UI's Train tab",
            "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": MODELSPEC_ARCHITECTURES.get(version, f"{version}/lora"),
            "modelspec.implementation": "https://github.com/huggingface/peft", "modelspec.title": p.output_name,
            "modelspec.resolution": f"{p.resolution}x{p.resolution}",
        }

    def _log(self, step: int, loss: float, seconds: float) -> None:
        path = self.run_dir / "log.csv"
        new = not path.exists()
        with open(path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "epoch", "loss", "lr", "seconds"])
            lr = self.last_lr
            writer.writerow([step, (step - 1) // self.steps_per_epoch + 1, f"{loss:.6f}", f"{lr:.3e}", f"{seconds:.4f}"])

    def save_state(self, step: int) -> None:
        """What a resumed run needs: the adapters, optimiser and LR schedule at `step`, and the
        params and base checkpoint they belong to (a run with other settings starts over)."""
        state = {
            "step": step, "params": self.params.training_key(), "base": self.checkpoint_name,
            "lora": self.lora_parts(), "optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }
        with atomic_path(self.run_dir / "state" / STATE_FILE) as temp:
            torch.save(state, temp)

    def _resume(self) -> int:
        """The step to start from: the saved state's, when it was made with these settings."""
        path = self.run_dir / "state" / STATE_FILE
        if not path.exists():
            return 0
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: start over rather than fail
            log.warning("Could not read the training state %s (%s); starting over.", path, exc)
            return 0
        if state.get("params") != self.params.training_key():
            return 0
        if state.get("base") != self.checkpoint_name:  # params.checkpoint "" is whichever one was in use then
            log.info("The training state %s was made on %r, not %r; starting over.", path, state.get("base"), self.checkpoint_name)
            return 0
        from peft.utils import set_peft_model_state_dict

        for name, weights in state["lora"].items():
            module = self.model.unet if name == "unet" else getattr(self.model, name)
            set_peft_model_state_dict(module, weights, adapter_name=ADAPTER)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        return int(state["step"])

    def _trim_log(self, step: int) -> None:
        """Drop the log's lines after the step training starts from (a crash after the last state
        save left them): they are trained again, and the loss plot must not show those steps twice."""
        path = self.run_dir / "log.csv"
        if not path.exists():
            return
        lines = path.read_text().splitlines(keepends=True)
        kept = lines[:1] + [line for line in lines[1:] if line.split(",", 1)[0].isdigit() and int(line.split(",", 1)[0]) <= step]
        if len(kept) != len(lines):
            with atomic_path(path) as temp:
                temp.write_text("".join(kept))

    def _bar(self, start: int):
        if not self.console:
            return None
        from tqdm import tqdm

        return tqdm(total=self.total, initial=start, desc=f"Training {self.params.output_name}", unit="step", dynamic_ncols=True)


def _lora_params(module) -> list[torch.nn.Parameter]:
    params = [q for name, q in module.named_parameters() if "lora_" in name and ADAPTER in name]
    for q in params:
        q.requires_grad_(True)
    return params


def _optimizer(kind: str, groups: list[dict]) -> torch.optim.Optimizer:
    if kind == "AdamW8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ValueError("The AdamW8bit optimizer needs the bitsandbytes package (pip install bitsandbytes); "
                             "choose AdamW or install it.") from None
        return bnb.optim.AdamW8bit(groups, weight_decay=0.01)
    return torch.optim.AdamW(groups, weight_decay=0.01)


def _optimizer_name(kind: str) -> str:
    return "bitsandbytes.optim.adamw.AdamW8bit" if kind == "AdamW8bit" else "torch.optim.adamw.AdamW"


def _dataset_dirs(samples: Sequence[data.Sample]) -> dict[str, dict[str, int]]:
    """kohya's `ss_dataset_dirs`: per sub-folder, its pictures and how often each is repeated."""
    paths: dict[str, list[Path]] = {}
    for sample in samples:
        paths.setdefault(sample.path.parent.name, []).append(sample.path)
    return {folder: {"n_repeats": len(found) // max(1, len(set(found))), "img_count": len(set(found))} for folder, found in paths.items()}
