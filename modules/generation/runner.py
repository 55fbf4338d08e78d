"""txt2img: parameters in, images out.

Reads like diffusers' StableDiffusionPipeline.__call__ (encode prompt, prepare timesteps,
prepare latents, denoise, decode) and stays numerically equal to it, but owns the loop so it
can report progress per step, stop on interrupt or skip, and reuse cached prompt embeddings.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Iterator

import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from modules.generation import noise, samplers
from modules.generation.control import RunControl, StepInfo
from modules.generation.params import GenerationParams
from modules.generation.text_encoding import PromptEncoder
from modules.models.loaded import LoadedModel


@dataclass(frozen=True)
class Batch:
    images: list[Image.Image]
    seeds: list[int]
    index: int


class Txt2Img:
    """Runs txt2img jobs on one loaded model. Make a new one when the model changes."""

    def __init__(self, model: LoadedModel):
        self.model = model
        self.prompts = PromptEncoder(model)
        self.vae_scale = 2 ** (len(model.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale)

    def run(self, params: GenerationParams, first_seed: int, control: RunControl | None = None) -> Iterator[Batch]:
        """Yield each finished batch; a skipped batch yields nothing, an interrupt ends the job."""
        control = control or RunControl()
        batches = noise.job_seeds(first_seed, params.n_iter, params.batch_size)
        with torch.inference_mode():
            for index, seeds in enumerate(batches):
                if control.interrupted:
                    return
                latents = self._sample(params, seeds, index, len(batches), control)
                if control.interrupted:
                    return
                if latents is None:
                    continue
                yield Batch(self.decode(latents), seeds, index)

    def _sample(self, params: GenerationParams, seeds: list[int], index: int, count: int, control: RunControl) -> torch.Tensor | None:
        m = self.model
        batch = len(seeds)
        unet_cfg = m.unet.config
        do_cfg = params.cfg_scale > 1.0 and unet_cfg.get("time_cond_proj_dim") is None

        # 1. Conditioning (cached per prompt), repeated for the batch; uncond first, as diffusers does.
        cond = self.prompts.encode(params.prompt, params.clip_skip)
        embeds = cond.embeds.repeat(batch, 1, 1)
        pooled = cond.pooled.repeat(batch, 1) if cond.pooled is not None else None
        if do_cfg:
            uncond = self.prompts.encode(params.negative_prompt, params.clip_skip, negative=True)
            embeds = torch.cat([uncond.embeds.repeat(batch, 1, 1), embeds])
            if pooled is not None:
                pooled = torch.cat([uncond.pooled.repeat(batch, 1), pooled])
        added = self._sdxl_added_cond(params, pooled, embeds.shape[0]) if m.is_sdxl else None

        # 2. Timesteps.
        sampler, schedule = samplers.resolve(params.sampler_name, params.scheduler)
        scheduler = samplers.build_scheduler(m.scheduler_config, sampler, schedule, seeds)
        scheduler.set_timesteps(params.steps, device=m.device)
        timesteps = scheduler.timesteps

        # 3. Initial latents, one generator per image; the same generators feed ancestral noise.
        gens = noise.generators(seeds)
        shape = (unet_cfg.in_channels, params.height // self.vae_scale, params.width // self.vae_scale)
        latents = noise.initial_noise(gens, shape, m.device, embeds.dtype) * scheduler.init_noise_sigma
        step_kwargs = _step_kwargs(scheduler, gens)

        # 4. Denoise.
        order = getattr(scheduler, "order", 1)
        for i, t in enumerate(timesteps):
            if control.stop_requested():
                control.take_skip()
                return None
            model_in = torch.cat([latents] * 2) if do_cfg else latents
            model_in = scheduler.scale_model_input(model_in, t)
            pred = m.unet(model_in, t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False)[0]
            if do_cfg:
                pred_uncond, pred_cond = pred.chunk(2)
                pred = pred_uncond + params.cfg_scale * (pred_cond - pred_uncond)
            latents = scheduler.step(pred, t, latents, **step_kwargs, return_dict=False)[0]
            if control.on_step is not None:
                step = min(params.steps, (i + order) // order)
                control.on_step(StepInfo(index, count, step, params.steps, latents))
        return latents

    def _sdxl_added_cond(self, params: GenerationParams, pooled: torch.Tensor, rows: int) -> dict:
        """SDXL's micro-conditioning: original size, crop (0, 0) and target size, all the requested size."""
        h, w = params.height, params.width
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=pooled.dtype, device=self.model.device).repeat(rows, 1)
        return {"text_embeds": pooled, "time_ids": time_ids}

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Latents to images; an fp16 VAE that overflows to NaN (A1111's black images) is
        retried once in fp32 and kept there."""
        vae = self.model.vae
        scaled = latents / vae.config.scaling_factor
        if vae.config.get("shift_factor") is not None:
            scaled = scaled + vae.config.shift_factor
        if vae.dtype == torch.float16 and vae.config.get("force_upcast", False):
            vae.to(torch.float32)
        image = vae.decode(scaled.to(vae.dtype), return_dict=False)[0]
        if vae.dtype != torch.float32 and torch.isnan(image).any():
            vae.to(torch.float32)
            image = vae.decode(scaled.to(torch.float32), return_dict=False)[0]
        return self.image_processor.postprocess(image, output_type="pil")


def _step_kwargs(scheduler, gens: list[torch.Generator]) -> dict:
    """Pass the generators (and DDIM's eta 0) only to schedulers that take them, as diffusers does."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if "generator" in accepted:
        kwargs["generator"] = gens
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    return kwargs
