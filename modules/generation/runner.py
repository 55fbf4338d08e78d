"""The generation core: txt2img (with hires fix), img2img and inpainting on one sampling loop.

Reads like diffusers' StableDiffusion(Img2Img|Inpaint)Pipeline.__call__ (encode prompt,
prepare timesteps, prepare latents, denoise, decode) and stays numerically equal to them, but
owns the loop so it can report progress per step, stop on interrupt or skip, and reuse cached
prompt embeddings. Every mode is one or two `Pass`es through `_denoise`; the pixel work
(resize modes, masks, crops, compositing) lives in modules.generation.images.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from diffusers.image_processor import VaeImageProcessor
from PIL import Image, ImageOps

from modules.generation import images as imgops
from modules.generation import noise, samplers
from modules.generation.conditioning import ScheduledPrompts, StepConditioning, combine
from modules.generation.control import RunControl, StepInfo
from modules.generation.job_prompts import JobPrompts, LoraUse, PassText, add_notes, infotext_extras, pass_text
from modules.generation.params import LATENT_UPSCALERS, GenerationParams, Img2ImgParams
from modules.generation.text_encoding import EncodingOptions, PromptEncoder
from modules.models.loaded import LoadedModel

if TYPE_CHECKING:
    from modules.models.embeddings import EmbeddingLibrary
    from modules.models.lora import LoraLibrary, LoraStack
    from modules.models.vae import VaeSwitch

FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = range(4)  # masked content, by index


@dataclass(frozen=True)
class Batch:
    images: list[Image.Image]
    seeds: list[int]
    index: int


@dataclass(frozen=True)
class InitImages:
    """img2img's inputs beside its parameters: one or more init images (image i of a batch
    uses image i modulo their count, as A1111's API does) and an optional mask, white where
    the picture is to be repainted."""

    images: tuple[Image.Image, ...]
    mask: Image.Image | None = None


@dataclass(frozen=True)
class PromptSetup:
    """What prompts may call on beyond the checkpoint (LoRA files, textual-inversion
    embeddings) and A1111's prompt settings that are not per-request parameters."""

    loras: "LoraLibrary | None" = None
    embeddings: "EmbeddingLibrary | None" = None
    comma_padding_backtrack: int = 20
    use_old_scheduling: bool = False


@dataclass(frozen=True)
class Pass:
    """One sampling pass: what to condition on, how to sample, and how much to denoise
    (strength 1 starts from pure noise, below 1 from noised `init` latents)."""

    prompts: ScheduledPrompts
    encoding: EncodingOptions
    loras: tuple[LoraUse, ...]
    cfg_scale: float
    sampler: samplers.Sampler
    schedule: samplers.Schedule
    steps: int
    width: int
    height: int
    strength: float = 1.0
    exact_steps: bool = False

    def schedule_steps(self) -> tuple[int, int]:
        """(steps the scheduler is set to, steps actually run). A1111 runs steps x strength,
        or exactly `steps` out of a longer schedule with its img2img_fix_steps setting."""
        if self.strength >= 1.0:
            return self.steps, self.steps
        if self.strength <= 0.0:
            return self.steps, 0
        if self.exact_steps:
            return min(math.ceil(self.steps / self.strength), 1000), self.steps
        return self.steps, int(self.steps * self.strength)


@dataclass(frozen=True)
class Inpainting:
    """What a masked pass needs: the init latents to keep outside the mask, and the mask at
    latent size (1 = repaint). Ordinary models blend with them after every step; inpainting
    models (9-channel UNet) take mask and masked-image latents as extra input channels."""

    mask: torch.Tensor  # [B, 1, h, w]
    keep_latents: torch.Tensor  # [B, C, h, w]
    masked_image_latents: torch.Tensor | None = None  # 9-channel models only


@dataclass(frozen=True)
class _Prepared:
    """An img2img job's pixel work, done once: the images to encode at the generation size,
    what the results are composited onto, and the masks."""

    work: list[Image.Image]
    originals: list[Image.Image]
    work_mask: Image.Image | None  # blurred, at the generation size
    composite_mask: Image.Image | None  # blurred, at the output size
    region: imgops.Region | None


class Runner:
    """Runs generation jobs on one loaded model. Make a new one when the model changes."""

    def __init__(self, model: LoadedModel, setup: PromptSetup | None = None):
        self.model = model
        self.setup = setup or PromptSetup()
        self.prompts = PromptEncoder(model, self.setup.embeddings)
        self._loras: LoraStack | None = None  # made on first use: it imports peft
        self._vae: VaeSwitch | None = None
        self.vae_scale = 2 ** (len(model.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale)
        self.latent_channels = model.vae.config.latent_channels
        self.inpainting_model = model.unet.config.in_channels == 2 * self.latent_channels + 1

    # ------------------------------------------------------------------ prompts

    def prepare(self, params: GenerationParams) -> JobPrompts:
        """The job's prompts with comments and extra-network tags resolved; warnings for what
        cannot be used (unknown LoRA, malformed tag, LoRA for another model) go in `warnings`."""
        warnings: list[str] = []
        if self.setup.embeddings is not None:
            self.setup.embeddings.refresh()  # files added or changed since the last job count (a folder scan)
        networks = not params.disable_extra_networks
        first = pass_text(params.prompt, params.negative_prompt, self.setup.loras, warnings, networks)
        hires = None
        if params.enable_hr:
            hires = pass_text(params.hr_prompt or params.prompt, params.hr_negative_prompt or params.negative_prompt, self.setup.loras,
                              warnings, networks)
        job = JobPrompts(first, hires, warnings)
        for text in job.texts():
            tokenized = self.prompts.tokenize(text, self._encoding(params))
            job.embeddings += [name for name in tokenized.embeddings if name not in job.embeddings]
            add_notes(warnings, [f"Embedding '{name}' was read as a plain word: {reason}." for name, reason in tokenized.unfit])
        self._use_loras(first.loras, job)
        return job

    def infotext_extras(self, params: GenerationParams, job: JobPrompts) -> list[tuple[str, str | None]]:
        """Emphasis, Lora hashes and TI hashes for the job's infotext."""
        library = self.setup.embeddings
        embeddings = [(name, library.shorthash(library.get(name))) for name in job.embeddings] if library is not None else []
        library = self.setup.loras

        def lora_hash(file) -> str | None:  # only LoRAs that were applied (in either pass), as A1111 lists them
            return library.shorthash(file) if library is not None and file.path in job.applied else None

        return infotext_extras(job, lora_hash, embeddings, params.emphasis)

    def _use_loras(self, loras: tuple[LoraUse, ...], job: JobPrompts | None = None) -> None:
        """Make exactly these LoRAs active. The stack keeps files it has read while LoRAs are in
        use, so this is cheap when nothing changed; a job without LoRAs removes them all, so it
        runs at the base model's speed and memory (A1111 keeps none in memory either)."""
        if not loras:
            if self._loras is not None and self._loras.loaded:
                self._loras.clear()
            return
        if self._loras is None:
            from modules.models.lora import LoraStack

            self._loras = LoraStack(self.model)
        warnings = self._loras.apply([(u.file, u.te, u.unet) for u in loras])
        if job is not None:
            add_notes(job.warnings, warnings)
            job.applied.update(file.path for file, _, _ in self._loras.active)

    def use_vae(self, path: Path | None) -> None:
        """Decode and encode with this VAE file (None: the checkpoint's own); ValueError if it does not fit."""
        if self._vae is None:
            if path is None:
                return
            from modules.models.vae import VaeSwitch

            self._vae = VaeSwitch(self.model)
        self._vae.apply(path)

    @property
    def vae_file(self) -> Path | None:
        return self._vae.current if self._vae is not None else None

    def _text_state(self):
        return self._loras.text_state() if self._loras is not None else None

    def _encoding(self, params: GenerationParams) -> EncodingOptions:
        return self.prompts.options(params.clip_skip, params.emphasis, self.setup.comma_padding_backtrack)

    # ------------------------------------------------------------------ txt2img

    def txt2img(self, params: GenerationParams, first_seed: int, control: RunControl | None = None,
                prompts: JobPrompts | None = None) -> Iterator[Batch]:
        """Yield each finished batch; a skipped batch yields nothing, an interrupt ends the job.
        `prompts` is what `prepare` gave (made here if not given)."""
        control = control or RunControl()
        prompts = prompts or self.prepare(params)
        first = self._pass(params, prompts.first)
        second = self._hires_pass(params, prompts.hires or prompts.first) if params.enable_hr else None
        per_batch = first.schedule_steps()[1] + (second.schedule_steps()[1] if second else 0)
        batches = noise.job_seeds(first_seed, params.n_iter, params.batch_size)
        with torch.inference_mode():
            for index, seeds in enumerate(batches):
                report = _reporter(control, index, len(batches), per_batch)
                latents = self._denoise(first, seeds, control, report, job=prompts)
                if latents is not None and second is not None:
                    latents = self._denoise(second, seeds, control, report, init=self._upscale(latents, params), offset=first.steps, job=prompts)
                if control.interrupted:
                    return
                if latents is None:
                    control.take_skip()
                    continue
                yield Batch(self.decode(latents), seeds, index)

    def _pass(self, params: GenerationParams, text: PassText, strength: float = 1.0) -> Pass:
        sampler, schedule = samplers.resolve(params.sampler_name, params.scheduler)
        scheduled = ScheduledPrompts.build(text.prompt, text.negative, params.steps, use_old_scheduling=self.setup.use_old_scheduling)
        return Pass(
            scheduled, self._encoding(params), text.loras, params.cfg_scale, sampler, schedule, params.steps,
            params.width, params.height, strength, params.img2img_fix_steps,
        )

    def _hires_pass(self, params: GenerationParams, text: PassText) -> Pass:
        """The second pass: its prompts on A1111's hires timeline (`[a:b:1.5]` switches halfway
        through it; plain step numbers count on from the first pass)."""
        sampler, schedule = params.hires_sampler()
        width, height = params.hires_size()
        steps = params.hr_second_pass_steps or params.steps
        scheduled = ScheduledPrompts.build(text.prompt, text.negative, params.steps, steps, self.setup.use_old_scheduling)
        return Pass(
            scheduled, self._encoding(params), text.loras, params.cfg_scale, sampler, schedule, steps, width, height,
            params.denoising_strength, params.img2img_fix_steps,
        )

    def _upscale(self, latents: torch.Tensor, params: GenerationParams) -> torch.Tensor:
        """First-pass latents at the hires size: interpolated in latent space, or decoded,
        resized with a pixel upscaler and encoded again. Both fill the size and crop the excess."""
        width, height = params.hires_size()
        if params.hr_upscaler in LATENT_UPSCALERS:
            mode, antialias = LATENT_UPSCALERS[params.hr_upscaler]
            return _resize_latents(latents, height // self.vae_scale, width // self.vae_scale, mode, antialias)
        resample = imgops.PIXEL_RESAMPLING[params.hr_upscaler]
        upscaled = [imgops.resize_image(im, width, height, mode=1, resample=resample) for im in self.decode(latents)]
        return self.encode(upscaled)

    # ------------------------------------------------------------------ img2img

    def img2img(self, params: Img2ImgParams, init: InitImages, first_seed: int, control: RunControl | None = None,
                prompts: JobPrompts | None = None) -> Iterator[Batch]:
        """img2img and inpainting: yields batches like `txt2img`. Raises ValueError for an
        init the request cannot use (an empty mask)."""
        control = control or RunControl()
        prepared = self._prepare(params, init)
        prompts = prompts or self.prepare(params)
        first = self._pass(params, prompts.first, params.denoising_strength)
        batches = noise.job_seeds(first_seed, params.n_iter, params.batch_size)
        with torch.inference_mode():
            for index, seeds in enumerate(batches):
                report = _reporter(control, index, len(batches), first.schedule_steps()[1])
                pick = [(index * params.batch_size + i) % len(prepared.work) for i in range(len(seeds))]
                init_latents, inpainting = self._init_latents(params, prepared, pick, seeds)
                latents = self._denoise(first, seeds, control, report, init=init_latents, inpainting=inpainting, job=prompts)
                if control.interrupted:
                    return
                if latents is None:
                    control.take_skip()
                    continue
                decoded = self.decode(latents)
                if prepared.composite_mask is not None:
                    decoded = [
                        imgops.composite(prepared.originals[p], im, prepared.composite_mask, prepared.region) for p, im in zip(pick, decoded)
                    ]
                yield Batch(decoded, seeds, index)

    def _prepare(self, params: Img2ImgParams, init: InitImages) -> _Prepared:
        if not init.images:
            raise ValueError("img2img needs an init image.")
        width, height = params.width, params.height
        sources = [imgops.flatten(im) for im in init.images]
        if init.mask is None:
            if params.resize_mode == imgops.LATENT_RESIZE:  # encoded at their own size, resized as latents
                work = [im.resize((_multiple_of(im.width, self.vae_scale), _multiple_of(im.height, self.vae_scale)), Image.Resampling.LANCZOS) for im in sources]
            else:
                work = [imgops.resize_image(im, width, height, params.resize_mode) for im in sources]
            return _Prepared(work, work, None, None, None)

        mask = imgops.mask_from_image(init.mask, sources[0].size)
        if params.inpainting_mask_invert:
            mask = ImageOps.invert(mask)
        if imgops.is_empty(mask):
            raise ValueError("The mask is empty: paint over the part of the image to change (or use the img2img tab).")
        if params.inpaint_full_res:  # "Only masked": work on a crop around the mask, paste it back
            blurred = imgops.blur_mask(mask, params.mask_blur)
            region = imgops.masked_region(blurred.point(lambda v: 255 if v else 0), params.inpaint_full_res_padding, width, height)
            work = [imgops.resize_image(im.resize(sources[0].size).crop(region.box), width, height, mode=2) for im in sources]
            work_mask = imgops.resize_image(blurred.crop(region.box), width, height, mode=2)
            return _Prepared(work, [im.resize(sources[0].size) for im in sources], work_mask, blurred, region)
        mode = 0 if params.resize_mode == imgops.LATENT_RESIZE else params.resize_mode
        work = [imgops.resize_image(im, width, height, mode) for im in sources]
        blurred = imgops.blur_mask(imgops.resize_image(mask, width, height, mode), params.mask_blur)
        return _Prepared(work, work, blurred, blurred, None)

    def _init_latents(
        self, params: Img2ImgParams, prepared: _Prepared, pick: list[int], seeds: list[int]
    ) -> tuple[torch.Tensor, Inpainting | None]:
        """The batch's init latents and, with a mask, what the masked pass needs; masked
        content decides what the masked area starts from (A1111's fill/original/latent noise/nothing)."""
        originals = [prepared.work[p] for p in pick]
        keep = self.encode(originals)
        if prepared.work_mask is None:
            if params.resize_mode == imgops.LATENT_RESIZE:
                keep = _resize_latents(keep, params.height // self.vae_scale, params.width // self.vae_scale, "bilinear", False)
            return keep, None
        mask = self._latent_mask(prepared.work_mask, len(pick), keep)
        binary = prepared.work_mask.point(lambda v: 255 if v >= 128 else 0)
        if params.inpainting_fill == FILL:
            latents = self.encode([imgops.fill_masked(im, binary) for im in originals])
        elif params.inpainting_fill == LATENT_NOISE:
            fresh = noise.initial_noise(noise.generators(seeds), tuple(keep.shape[1:]), keep.device, keep.dtype)
            latents = keep * (1 - mask) + fresh * mask
        elif params.inpainting_fill == LATENT_NOTHING:
            latents = keep * (1 - mask)
        else:
            latents = keep
        masked_image = None
        if self.inpainting_model:  # the picture with the masked part blanked out (0 is mid-grey in [-1, 1])
            hole = torch.from_numpy(_array(binary)).to(self.model.device, self.model.vae_dtype)
            masked_image = self._encode_pixels(self._pixels(originals) * (1 - hole))
        return latents, Inpainting(mask, keep, masked_image)

    def _latent_mask(self, mask: Image.Image, batch: int, like: torch.Tensor) -> torch.Tensor:
        """The blurred mask at latent size, rounded to 0/1 as A1111 does for latent blending."""
        small = mask.resize((like.shape[-1], like.shape[-2]), Image.Resampling.BILINEAR)
        tensor = torch.from_numpy(_array(small)).round()
        return tensor[None, None].repeat(batch, 1, 1, 1).to(like.device, like.dtype)

    # ------------------------------------------------------------------ the loop

    def _denoise(
        self,
        p: Pass,
        seeds: list[int],
        control: RunControl,
        report: Callable[[int], None],
        init: torch.Tensor | None = None,
        inpainting: Inpainting | None = None,
        offset: int = 0,
        job: JobPrompts | None = None,
    ) -> torch.Tensor | None:
        """Run one pass; None if it was skipped or interrupted. `offset` is how many steps of
        this batch earlier passes reported."""
        if control.stop_requested():
            return None
        m = self.model
        batch = len(seeds)
        unet_cfg = m.unet.config

        # 1. Conditioning per step (prompt editing, alternation, AND), uncond first as diffusers does.
        self._use_loras(p.loras, job)
        with_uncond = (p.cfg_scale > 1.0 or not p.prompts.plain) and unet_cfg.get("time_cond_proj_dim") is None
        conditioning = StepConditioning(self.prompts, p.prompts, p.encoding, batch, with_uncond, self._text_state())
        embeds, pooled = conditioning.at(0)
        blocks = embeds.shape[0] // batch
        time_ids = self._time_ids(p, pooled)

        # 2. Timesteps: the last `run` of `total`, as diffusers' img2img pipelines cut them.
        scheduler = samplers.build_scheduler(m.scheduler_config, p.sampler, p.schedule, seeds)
        total, run = p.schedule_steps()
        scheduler.set_timesteps(total, device=m.device)
        order = getattr(scheduler, "order", 1)
        start = (total - run) * order
        timesteps = scheduler.timesteps[start:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)

        # 3. Initial latents, one generator per image; the same generators feed ancestral noise.
        gens = noise.generators(seeds)
        shape = (self.latent_channels, p.height // self.vae_scale, p.width // self.vae_scale)
        fresh = noise.initial_noise(gens, shape, m.device, embeds.dtype)
        if init is None or p.strength >= 1.0:
            latents = fresh * scheduler.init_noise_sigma
        elif run == 0:
            return init
        else:
            latents = scheduler.add_noise(init.to(embeds.dtype), fresh, timesteps[:1].repeat(batch))
        extra = self._extra_channels(inpainting, batch, p)
        blend = inpainting if inpainting is not None and extra is None else None
        step_kwargs = _step_kwargs(scheduler, gens)

        # 4. Denoise.
        for i, t in enumerate(timesteps):
            if control.stop_requested():
                return None
            model_in = scheduler.scale_model_input(latents, t)
            if extra is not None:
                model_in = torch.cat([model_in, *extra], dim=1)
            if blocks > 1:
                model_in = torch.cat([model_in] * blocks)
            embeds, pooled = conditioning.at(i // order)
            added = {"text_embeds": pooled, "time_ids": time_ids} if pooled is not None else None
            pred = m.unet(model_in, t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False)[0]
            pred = combine(pred, conditioning.weights, p.cfg_scale, with_uncond)
            latents = scheduler.step(pred, t, latents, **step_kwargs, return_dict=False)[0]
            if blend is not None:  # keep the unmasked area on the original's noise path
                keep = blend.keep_latents.to(latents.dtype)
                if i < len(timesteps) - 1:
                    keep = scheduler.add_noise(keep, fresh, timesteps[i + 1 : i + 2].repeat(batch))
                latents = (1 - blend.mask) * keep + blend.mask * latents
            report(offset + min(run, (i + order) // order), latents)
        return latents

    def _time_ids(self, p: Pass, pooled: torch.Tensor | None) -> torch.Tensor | None:
        """SDXL's micro-conditioning: original size, crop (0, 0) and target size, all the pass's
        size; made once per pass (a tensor built in the loop would sync with the GPU every step)."""
        if pooled is None:
            return None
        time_ids = torch.tensor([[p.height, p.width, 0, 0, p.height, p.width]], dtype=pooled.dtype, device=self.model.device)
        return time_ids.repeat(pooled.shape[0], 1)

    def _extra_channels(self, inpainting: Inpainting | None, batch: int, p: Pass) -> list[torch.Tensor] | None:
        """An inpainting model's mask and masked-image channels. Without a mask the whole
        picture counts as masked over a blank image, as A1111 feeds these models for txt2img."""
        if not self.inpainting_model:
            return None
        if inpainting is not None and inpainting.masked_image_latents is not None:
            return [inpainting.mask, inpainting.masked_image_latents]
        h, w = p.height // self.vae_scale, p.width // self.vae_scale
        blank = self._encode_pixels(torch.zeros((1, 3, p.height, p.width), device=self.model.device, dtype=self.model.vae_dtype))
        ones = torch.ones((batch, 1, h, w), device=self.model.device, dtype=blank.dtype)
        return [ones, blank.repeat(batch, 1, 1, 1)]

    # ------------------------------------------------------------------ VAE

    def _pixels(self, pictures: Sequence[Image.Image]) -> torch.Tensor:
        tensor = self.image_processor.preprocess(list(pictures), height=pictures[0].height, width=pictures[0].width)
        return tensor.to(self.model.device, self.model.vae_dtype)

    def encode(self, pictures: Sequence[Image.Image]) -> torch.Tensor:
        """Images (all one size) to scaled latents, taking the mode of the VAE's distribution so
        the same image always gives the same latents."""
        return self._encode_pixels(self._pixels(pictures))

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        vae = self.model.vae
        self._upcast_if_needed(vae)
        latents = vae.encode(pixels.to(vae.dtype)).latent_dist.mode()
        if vae.dtype != torch.float32 and torch.isnan(latents).any():
            vae.to(torch.float32)
            latents = vae.encode(pixels.to(torch.float32)).latent_dist.mode()
        if vae.config.get("shift_factor") is not None:
            latents = latents - vae.config.shift_factor
        return (latents * vae.config.scaling_factor).to(self.model.dtype)

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Latents to images; an fp16 VAE that overflows to NaN (A1111's black images) is
        retried once in fp32 and kept there."""
        vae = self.model.vae
        scaled = latents / vae.config.scaling_factor
        if vae.config.get("shift_factor") is not None:
            scaled = scaled + vae.config.shift_factor
        self._upcast_if_needed(vae)
        image = vae.decode(scaled.to(vae.dtype), return_dict=False)[0]
        if vae.dtype != torch.float32 and torch.isnan(image).any():
            vae.to(torch.float32)
            image = vae.decode(scaled.to(torch.float32), return_dict=False)[0]
        return self.image_processor.postprocess(image, output_type="pil")

    @staticmethod
    def _upcast_if_needed(vae) -> None:
        if vae.dtype == torch.float16 and vae.config.get("force_upcast", False):
            vae.to(torch.float32)


def _reporter(control: RunControl, index: int, count: int, steps: int) -> Callable[[int, torch.Tensor], None]:
    def report(step: int, latents: torch.Tensor) -> None:
        if control.on_step is not None:
            control.on_step(StepInfo(index, count, step, steps, latents))

    return report


def _resize_latents(latents: torch.Tensor, height: int, width: int, mode: str, antialias: bool) -> torch.Tensor:
    """Interpolate latents to cover height x width, then crop the centre (hires "crop to fill")."""
    h, w = latents.shape[-2:]
    scale = max(height / h, width / w)
    cover = (max(height, math.ceil(h * scale)), max(width, math.ceil(w * scale)))
    kwargs = {"antialias": antialias, "align_corners": False} if mode in ("bilinear", "bicubic") else {}
    resized = F.interpolate(latents.float(), size=cover, mode=mode, **kwargs).to(latents.dtype)
    top, left = (cover[0] - height) // 2, (cover[1] - width) // 2
    return resized[..., top : top + height, left : left + width]


def _multiple_of(value: int, unit: int) -> int:
    return max(unit, value // unit * unit)


def _array(image: Image.Image):
    import numpy as np

    return np.asarray(image.convert("L"), dtype="float32") / 255.0


def _step_kwargs(scheduler, gens: list[torch.Generator]) -> dict:
    """Pass the generators (and DDIM's eta 0) only to schedulers that take them, as diffusers does."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if "generator" in accepted:
        kwargs["generator"] = gens
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    return kwargs
