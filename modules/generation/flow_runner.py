"""The generation core for the flow-matching families, Flux.1 (dev, schnell) and SD 3/3.5.

It keeps Runner's public interface and its job logic (batches and seeds, hires fix, img2img
and inpainting's pixel work, decoding, interrupt and skip), and replaces only the sampling
pass: each pass is one call of diffusers' own pipeline (FluxPipeline / FluxImg2ImgPipeline,
StableDiffusion3Pipeline / StableDiffusion3Img2ImgPipeline) built from the loaded components
and given
- our conditioning (`prompt_embeds`, `pooled_prompt_embeds`: A1111 weighting on CLIP, plain
  text to T5; modules.generation.flow_text),
- our per-image seeded noise (variation seeds, seed resize and the RNG source apply), packed
  with the pipeline's own packing for Flux; img2img noises the init latents with the
  pipeline's own schedule and `scale_noise`,
- `callback_on_step_end` for progress, previews, interrupt and skip (the pipeline's
  `interrupt`), and inpainting's blend towards the original outside the mask, as diffusers'
  inpaint pipelines do after each step.

Guidance: Flux dev takes "Distilled CFG Scale" as its guidance embedding; a CFG scale above 1
with a negative prompt runs true CFG (the pipeline's true_cfg_scale), as Forge; schnell has
no guidance embedding. SD 3 uses the CFG scale as classic CFG.
Prompt editing (`[a:b:0.5]`), alternation and AND are not sampled per step here: each pass
uses the prompt as it reads at its first step (the first AND part), and the job's notes say so.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import torch

from modules.generation import engines, noise
from modules.generation.control import RunControl
from modules.generation.flow_samplers import flow_sampler
from modules.generation.flow_text import FlowPromptEncoder
from modules.generation.hooks import Hooks, PassInfo
from modules.generation.job_prompts import JobPrompts, LoraUse, PassText, add_notes
from modules.generation.params import GenerationParams, format_number
from modules.generation.prompt_parser import schedule_index
from modules.generation.runner import Inpainting, Pass, PromptSetup, Runner
from modules.generation.text_encoding import PromptEncoder
from modules.models.loaded import LoadedModel

PROMPT_EDITING_NOTE = ("Prompt editing, alternation and AND are not sampled step by step on Flux and SD 3: "
                       "each pass used the prompt as it reads at its first step.")
NO_T5_NOTE = ("no T5-XXL text encoder was found in models/text_encoder: SD 3 ran on its CLIP encoders only "
              "(put t5xxl_fp16.safetensors there for better prompt following)")


def runner_for(model: LoadedModel, setup: PromptSetup | None = None) -> Runner:
    """The runner for a loaded model: FlowRunner for Flux and SD 3/3.5, Runner for the SD families."""
    return FlowRunner(model, setup) if model.family in ("flux", "sd3") else Runner(model, setup)


@dataclass(frozen=True)
class FlowPass(Pass):
    """A pass with the flow models' own parameters."""

    distilled_cfg_scale: float = 3.5
    shift: float = 0.0


class FlowRunner(Runner):
    """Runs generation jobs on one Flux or SD 3 model. Make a new one when the model changes."""

    def __init__(self, model: LoadedModel, setup: PromptSetup | None = None):
        super().__init__(model, setup)
        self.family = model.family
        self.prompts = PromptEncoder(model, None)  # token counting only; textual inversion is an SD feature
        self.text = FlowPromptEncoder(model, self.family)
        self.latent_channels = model.vae.config.latent_channels
        self._pipes: dict[str, Any] = {}
        self._flow_loras = None

    # ------------------------------------------------------------------ what the service reads

    @property
    def guidance_embedded(self) -> bool:
        """Flux dev's guidance embedding (Distilled CFG Scale); schnell and SD 3 have none."""
        return bool(self.model.unet.config.get("guidance_embeds", False))

    def infotext_extras(self, params: GenerationParams, job: JobPrompts) -> list[tuple[str, str | None]]:
        """Forge's keys: Distilled CFG Scale (Flux dev only) and Shift (when overridden), then Runner's."""
        shift = float(getattr(params, "shift", 0.0) or 0.0)
        own = [("Distilled CFG Scale", format_number(getattr(params, "distilled_cfg_scale", 3.5)) if self.guidance_embedded else None),
               ("Shift", format_number(shift) if shift > 0 else None)]
        return own + super().infotext_extras(params, job)

    def job_params(self, params: GenerationParams) -> tuple[GenerationParams, list[str]]:
        """Schedule type Automatic is the model's own schedule (Simple) for every sampler: flow
        models have no Karras levels of their own (flow_samplers). Token merging and NGMS are UNet
        tricks: they do not run here, so they leave the infotext, with a note; so does an SD 3 file
        loaded without T5 (SAI's sd3_medium_incl_clips)."""
        update: dict[str, Any] = {}
        for name in ("scheduler", "hr_scheduler"):
            if getattr(params, name) == "Automatic":
                update[name] = "Simple"
        notes = []
        for label, names in (("Token merging", ("token_merging_ratio", "token_merging_ratio_hr", "token_merging_ratio_img2img")),
                             ("Negative Guidance minimum sigma", ("s_min_uncond",))):
            used = {n: 0.0 for n in names if getattr(params, n, 0) > 0}
            if used:
                update.update(used)
                notes.append(f"{label} does not apply to Flux and SD 3 models: it was not used.")
        if self.family == "sd3" and self.model.text_encoder_3 is None:
            notes.append(NO_T5_NOTE)
        return (params.model_copy(update=update) if update else params), notes

    def prepare(self, params: GenerationParams) -> JobPrompts:
        job = super().prepare(params)
        scheduled = [p for p in (self._pass(params, job.first), self._hires_pass(params, job.hires or job.first) if params.enable_hr else None) if p]
        if any(len(p.prompts.parts) > 1 or any(len(s) > 1 for _, s in p.prompts.parts) or len(p.prompts.negative) > 1 for p in scheduled):
            add_notes(job.warnings, [PROMPT_EDITING_NOTE])
        return job

    @property
    def lora_names(self) -> tuple[str, ...]:
        return tuple(f.name for f, _, _ in self._flow_loras.active) if self._flow_loras is not None else ()

    def _text_state(self):
        return self._flow_loras.state() if self._flow_loras is not None else None

    def _use_loras(self, loras: tuple[LoraUse, ...], job: JobPrompts | None = None) -> None:
        """Exactly these LoRAs, through diffusers' loaders (modules.generation.flow_loras)."""
        if not loras:
            if self._flow_loras is not None and self._flow_loras.loaded:
                self._flow_loras.clear()
            return
        if self._flow_loras is None:
            from modules.generation.flow_loras import FlowLoras

            self._flow_loras = FlowLoras(self._pipeline(False), self.family)
        warnings = self._flow_loras.apply([(u.file, u.te, u.unet) for u in loras])
        if job is not None:
            add_notes(job.warnings, warnings)
            job.applied.update(file.path for file, _, _ in self._flow_loras.active)

    # ------------------------------------------------------------------ passes

    def _pass(self, params: GenerationParams, text: PassText, strength: float = 1.0) -> Pass:
        return self._flow(super()._pass(params, text, strength), params)

    def _hires_pass(self, params: GenerationParams, text: PassText) -> Pass:
        return self._flow(super()._hires_pass(params, text), params)

    @staticmethod
    def _flow(p: Pass, params: GenerationParams) -> FlowPass:
        values = {f.name: getattr(p, f.name) for f in fields(Pass)}
        return FlowPass(**values, distilled_cfg_scale=float(getattr(params, "distilled_cfg_scale", 3.5)),
                        shift=float(getattr(params, "shift", 0.0) or 0.0))

    def _pipeline(self, img2img: bool):
        """The family's diffusers pipeline on the loaded components (made once; they share the modules)."""
        kind = "img2img" if img2img else "txt2img"
        if kind not in self._pipes:
            import diffusers

            m = self.model
            scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(m.scheduler_config)
            common = dict(scheduler=scheduler, vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer,
                          text_encoder_2=m.text_encoder_2, tokenizer_2=m.tokenizer_2, transformer=m.unet)
            if self.family == "flux":
                cls = diffusers.FluxImg2ImgPipeline if img2img else diffusers.FluxPipeline
            else:
                cls = diffusers.StableDiffusion3Img2ImgPipeline if img2img else diffusers.StableDiffusion3Pipeline
                common.update(text_encoder_3=m.text_encoder_3, tokenizer_3=m.tokenizer_3)
            pipe = cls(**common)
            pipe.set_progress_bar_config(disable=True)
            self._pipes[kind] = pipe
        return self._pipes[kind]

    def _texts(self, p: Pass) -> tuple[str, str]:
        """The pass's prompt and negative prompt as they read at its first step."""
        schedule = p.prompts.parts[0][1]
        negative = p.prompts.negative
        return schedule[schedule_index(schedule, 0)][1], negative[schedule_index(negative, 0)][1]

    # ------------------------------------------------------------------ the pass

    def _denoise(
        self,
        p: Pass,
        seeds: list[int],
        control: RunControl,
        report,
        init: torch.Tensor | None = None,
        inpainting: Inpainting | None = None,
        offset: int = 0,
        job: JobPrompts | None = None,
        hooks: Hooks | None = None,
        crop: tuple | None = None,
        subseeds: Sequence[int] = (),
        refiner=None,
    ) -> engines.Outcome:
        """One pass through the family's pipeline (txt2img, or img2img from `init` latents).
        A refiner (SDXL's) has no flow counterpart: one other than this model is refused."""
        if refiner is not None and refiner.runner is not self:
            raise ValueError("The Refiner works with SDXL checkpoints; Flux and SD 3 run without one (set Refiner to None).")
        if control.stop_requested():
            return engines.Outcome(None, stopped=True)
        m, flux = self.model, self.family == "flux"
        p = p if isinstance(p, FlowPass) else FlowPass(**{f.name: getattr(p, f.name) for f in fields(Pass)})
        if p.width % 16 or p.height % 16:
            raise ValueError(f"Flux and SD 3 need a width and height that are multiples of 16; {p.width}x{p.height} is not.")
        batch = len(seeds)
        img2img = init is not None
        total, run = _steps(p) if img2img else (p.steps, p.steps)
        if img2img and run == 0:
            return engines.Outcome(init)
        sampler = flow_sampler(p.sampler.name, p.schedule.name, img2img_flux=img2img and flux,
                               beta_default=(p.options.beta_alpha, p.options.beta_beta) == (0.6, 0.6))

        # 1. Conditioning: true CFG on Flux only with a negative prompt (as Forge), classic CFG on SD 3.
        self._use_loras(p.loras, job)
        prompt, negative = self._texts(p)
        with_uncond = p.cfg_scale > 1.0 and (bool(negative.strip()) or not flux)
        cond, uncond = self.text.pair(prompt, negative if with_uncond else None, p.encoding, self._text_state())
        kwargs: dict[str, Any] = dict(prompt_embeds=cond.embeds.repeat(batch, 1, 1), pooled_prompt_embeds=cond.pooled.repeat(batch, 1))
        if with_uncond:
            kwargs.update(negative_prompt_embeds=uncond.embeds.repeat(batch, 1, 1), negative_pooled_prompt_embeds=uncond.pooled.repeat(batch, 1))
        if flux:
            kwargs.update(guidance_scale=p.distilled_cfg_scale, true_cfg_scale=p.cfg_scale if with_uncond else 1.0)
        else:
            kwargs.update(guidance_scale=p.cfg_scale if with_uncond else 1.0)
        info = PassInfo(p.width, p.height, p.hires, max(run, 1), batch, 2 if with_uncond else 1, with_uncond, m.device, m.dtype,
                        img2img=img2img, crop=crop)
        if hooks:
            hooks.pass_started(info)

        # 2. Noise: one generator per image, as the SD runner draws it.
        shape = (self.latent_channels, p.height // self.vae_scale, p.width // self.vae_scale)
        first = noise.ImageNoise(seeds, shape, m.device, cond.embeds.dtype, p.randn_source, p.ensd, subseeds=subseeds,
                                 subseed_strength=p.subseed_strength, resize_from=self._seed_resize(p)).first()
        pipe = self._pipeline(img2img)
        latents = first
        if img2img:
            strength = p.strength if not (p.exact_steps or p.hires) else min((run - 0.5) / total, 1.0)  # exactly `run` steps
            kwargs.update(image=init.to(first.dtype), strength=strength)
            latents = self._noised(pipe, sampler, p, init.to(first.dtype), first, total, strength)
        pipe.scheduler = sampler.build(m.scheduler_config, p.shift)
        packed = self._pack(latents)

        # 3. Denoise, watching each step.
        watch = _Watch(self, pipe, control, report, offset, hooks, info, packed, p, inpainting, first)
        out = pipe(height=p.height, width=p.width, num_inference_steps=total, latents=packed, output_type="latent",
                   return_dict=False, callback_on_step_end=watch, **kwargs)[0]
        if watch.stopped:
            return engines.Outcome(watch.estimate, stopped=True)
        return engines.Outcome(self._unpack(out, p))

    def _noised(self, pipe, sampler, p: FlowPass, init: torch.Tensor, first: torch.Tensor, total: int, strength: float) -> torch.Tensor:
        """The init latents noised to the pass's first timestep, with the pipeline's own
        schedule (its retrieve_timesteps, shift and get_timesteps) and scheduler's scale_noise."""
        import importlib

        import numpy as np

        module = importlib.import_module(type(pipe).__module__)
        scheduler = sampler.build(self.model.scheduler_config, p.shift)
        pipe.scheduler = scheduler
        kwargs: dict[str, Any] = {}
        if self.family == "flux":
            seq = (p.height // self.vae_scale // 2) * (p.width // self.vae_scale // 2)
            kwargs["sigmas"] = np.linspace(1.0, 1 / total, total)
            kwargs["mu"] = module.calculate_shift(seq, scheduler.config.get("base_image_seq_len", 256), scheduler.config.get("max_image_seq_len", 4096),
                                                  scheduler.config.get("base_shift", 0.5), scheduler.config.get("max_shift", 1.15))
        elif scheduler.config.get("use_dynamic_shifting", None):
            patch = self.model.unet.config.patch_size
            seq = (p.height // self.vae_scale // patch) * (p.width // self.vae_scale // patch)
            kwargs["mu"] = module.calculate_shift(seq, scheduler.config.get("base_image_seq_len", 256), scheduler.config.get("max_image_seq_len", 4096),
                                                  scheduler.config.get("base_shift", 0.5), scheduler.config.get("max_shift", 1.16))
        module.retrieve_timesteps(scheduler, total, self.model.device, **kwargs)
        timesteps, _ = pipe.get_timesteps(total, strength, self.model.device)
        return scheduler.scale_noise(init, timesteps[:1].repeat(init.shape[0]), first)

    def _pack(self, latents: torch.Tensor) -> torch.Tensor:
        if self.family != "flux":
            return latents
        from diffusers import FluxPipeline

        b, c, h, w = latents.shape
        return FluxPipeline._pack_latents(latents, b, c, h, w)

    def _unpack(self, latents: torch.Tensor, p: Pass) -> torch.Tensor:
        if self.family != "flux":
            return latents
        from diffusers import FluxPipeline

        return FluxPipeline._unpack_latents(latents, p.height, p.width, self.vae_scale)


def _steps(p: Pass) -> tuple[int, int]:
    """(schedule length, steps run) of an img2img pass as diffusers' img2img pipelines cut it
    (`get_timesteps`), or exactly `steps` out of a longer schedule for hires fix and A1111's
    img2img_fix_steps."""
    if p.strength <= 0:
        return p.steps, 0
    if p.exact_steps or p.hires:
        return p.schedule_steps()
    total = p.steps
    return total, total - int(max(total - min(total * p.strength, total), 0))


class _Watch:
    """The pipeline's callback_on_step_end: progress with the current estimate of the picture,
    inpainting's blend, and interrupt/skip (it sets the pipeline's `interrupt`, which makes the
    pipeline skip its remaining steps; the last estimate is what the batch returns)."""

    def __init__(self, runner: FlowRunner, pipe, control: RunControl, report, offset: int, hooks: Hooks | None, info: PassInfo,
                 start: torch.Tensor, p: Pass, inpainting: Inpainting | None, first_noise: torch.Tensor):
        self.runner, self.pipe, self.control, self.report = runner, pipe, control, report
        self.offset, self.hooks, self.info, self.p = offset, hooks, info, p
        self.previous = start
        self.stopped = False
        self.estimate: torch.Tensor | None = None
        self.blend = None
        if inpainting is not None:  # (mask, keep, noise), packed like the latents
            mask = inpainting.mask.to(start.dtype).repeat(1, runner.latent_channels, 1, 1)
            self.blend = tuple(runner._pack(t.to(start.dtype)) for t in (mask, inpainting.keep_latents, first_noise))

    def __call__(self, pipe, i: int, t, kwargs: dict) -> dict:
        latents = kwargs["latents"]
        scheduler = pipe.scheduler
        index = scheduler.step_index
        sigmas = scheduler.sigmas
        sigma_next = float(sigmas[index]) if index is not None and index < len(sigmas) else 0.0
        sigma_prev = float(sigmas[index - 1]) if index else 1.0
        if self.blend is not None:  # outside the mask: the original, noised to the next level
            mask, keep, fresh = self.blend
            latents = (1 - mask) * (sigma_next * fresh + (1 - sigma_next) * keep) + mask * latents
        estimate = latents
        if sigma_prev != sigma_next:  # the picture the last step points at: x - sigma * velocity
            velocity = (latents - self.previous) / (sigma_next - sigma_prev)
            estimate = latents - sigma_next * velocity
        self.previous = latents
        unpacked = self.runner._unpack(estimate, self.p)
        if self.hooks:
            self.hooks.step_done(self.info, i + 1)
        self.report(self.offset + i + 1, unpacked)
        if self.control.stop_requested() and not self.stopped:
            self.stopped = True
            self.estimate = unpacked
            pipe._interrupt = True
        return {"latents": latents}
