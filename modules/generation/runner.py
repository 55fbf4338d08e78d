"""The generation core: txt2img (with hires fix), img2img and inpainting on one sampling loop.

Reads like diffusers' StableDiffusion(Img2Img|Inpaint)Pipeline.__call__ (encode prompt,
prepare timesteps, prepare latents, denoise, decode) and stays numerically equal to them, but
owns the loop so it can report progress per step, stop on interrupt or skip, and reuse cached
prompt embeddings. Every mode is one or two `Pass`es through `_denoise`; the pixel work
(resize modes, masks, crops, compositing) lives in modules.generation.images.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from diffusers.image_processor import VaeImageProcessor
from PIL import Image, ImageOps

from modules.generation import images as imgops
from modules.generation import engines, noise, samplers, tiling, vae_tiling
from modules.generation.conditioning import ScheduledPrompts, StepConditioning
from modules.generation.control import RunControl, StepInfo
from modules.generation.hooks import Hooks, PassInfo
from modules.generation.job_prompts import JobPrompts, LoraUse, PassText, add_notes, infotext_extras, pass_text
from modules.generation.ksampling import brownian
from modules.generation.params import LATENT_UPSCALERS, GenerationParams, Img2ImgParams, format_number
from modules.generation.text_encoding import EncodingOptions, PromptEncoder
from modules.models.loaded import LoadedModel

if TYPE_CHECKING:
    from modules.generation.upscaling import UpscalerRegistry
    from modules.models.embeddings import EmbeddingLibrary
    from modules.models.lora import LoraLibrary, LoraStack
    from modules.models.vae import VaeSwitch

FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = range(4)  # masked content, by index


@dataclass(frozen=True)
class Batch:
    images: list[Image.Image]
    seeds: list[int]
    index: int
    partial: bool = False  # cut short by interrupt or skip: the model's last estimate, as A1111 returns it
    # Inpainting: puts image i's unmasked part back from the original, for whoever changes the
    # picture afterwards (face restoration), so only the masked area ever changes.
    overlay: Callable[[Image.Image, int], Image.Image] | None = None
    subseeds: list[int] = field(default_factory=list)  # each image's variation seed (A1111's all_subseeds)
    prompts: tuple[str, str] | None = None  # (prompt, negative) an add-on drew this batch with instead of the job's


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
    options: samplers.SamplerOptions = samplers.SamplerOptions()
    randn_source: str = "GPU"
    ensd: int = 0
    hires: bool = False  # A1111 runs its own samplers' hires pass for exactly `steps`
    subseed_strength: float = 0.0  # variation seeds: how far the first noise goes towards the variation seed's
    seed_resize_from: tuple[int, int] = (0, 0)  # "Resize seed from" (width, height) in pixels; 0 = off
    min_uncond_sigma: float = 0.0  # A1111's s_min_uncond (NGMS): skip the negative prompt on alternate late steps
    token_merging: float = 0.0  # the ratio of tokens merged before self-attention (modules.generation.token_merging)
    aesthetic_scores: tuple[float, float] = (6.0, 2.5)  # the SDXL refiner's, for the prompt and the negative prompt

    def schedule_steps(self) -> tuple[int, int]:
        """(steps the scheduler is set to, steps actually run) on the diffusers engine, as
        diffusers' img2img pipelines cut the schedule: steps x strength, or exactly `steps` out
        of a longer schedule with A1111's img2img_fix_steps setting (and always for the hires
        pass, which A1111 runs for exactly its steps)."""
        if self.strength >= 1.0:
            return self.steps, self.steps
        if self.strength <= 0.0:
            return self.steps, 0
        if self.exact_steps or self.hires:
            return min(math.ceil(self.steps / self.strength), 1000), self.steps
        return self.steps, int(self.steps * self.strength)

    def a1111_steps(self) -> tuple[int, int]:
        """(schedule length, steps run) as A1111 cuts its own samplers' schedules: t_enc + 1
        steps of `steps`, or exactly `steps` out of steps / strength with img2img_fix_steps
        (always for the hires pass)."""
        if self.strength >= 1.0:
            return self.steps, self.steps
        if self.strength <= 0.0:  # nothing to denoise: the init comes back as it is
            return self.steps, 0
        strength = min(self.strength, 0.999)
        if self.exact_steps or self.hires:
            return int(self.steps / strength), self.steps
        return self.steps, int(strength * self.steps) + 1

    @property
    def engine(self) -> str:
        return samplers.engine(self.sampler, self.schedule, self.options, nv_noise=self.randn_source == "NV")

    def steps_run(self) -> int:
        """The steps this pass reports (progress bars count them)."""
        engine = self.engine
        if engine == samplers.DIFFUSERS:
            return self.schedule_steps()[1]
        if engine == samplers.TIMESTEPS:
            return max(len(self.timesteps(self.strength < 1.0)[1]) - 1, 0)
        return self.a1111_steps()[1]

    def timesteps(self, img2img: bool) -> tuple[int | None, torch.Tensor]:
        """A1111's DDIM-style pass: the timestep an img2img init is noised to (None for
        txt2img) and the timesteps the pass visits, every (1000 // steps)-th from 1; img2img
        keeps the first t_enc of them."""
        total, run = self.a1111_steps()
        discard = self.options.discard_penultimate and not self.sampler.discard_penultimate
        timesteps = engines.ddim_timesteps(max(total + (1 if discard else 0), 1))
        if not img2img:
            return None, timesteps
        t_enc = max(run - 1, 0)
        return int(timesteps[min(t_enc, len(timesteps) - 1)]), timesteps[:t_enc]


@dataclass(frozen=True)
class Refiner:
    """A1111's refiner for a job: the checkpoint's runner, its "name [hash]" for the infotext,
    and the share of the model's timesteps after which it takes over."""

    title: str
    runner: "Runner"
    switch_at: float
    by_steps: bool = False  # A1111's refiner_switch_by_sample_steps: the share of the pass's model calls decides


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
        self._cache: dict = {}  # the model's sigma tables, made on first use
        self._vae: VaeSwitch | None = None
        self.vae_scale = 2 ** (len(model.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale)
        self.latent_channels = model.vae.config.latent_channels
        self.inpainting_model = model.unet.config.in_channels == 2 * self.latent_channels + 1
        self.upscalers: UpscalerRegistry | None = None  # hires fix's model upscalers (the service sets the app's list)
        self.vae_tiling = vae_tiling.VaeTiling()  # the service sets the tiled-VAE threshold from the settings
        # Another checkpoint's runner by name, for the refiner and the hires checkpoint: (its
        # "name [hash]", runner). The service sets it; None: only this model is available.
        self.checkpoints: Callable[[str], tuple[str, "Runner"]] | None = None
        self.took_over = False  # whether the refiner took over in the last pass

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

    def job_params(self, params: GenerationParams) -> tuple[GenerationParams, list[str]]:
        """The parameters as this runner carries them out, for the infotext, with notes on what
        it changed (nothing for SD models; see FlowRunner)."""
        return params, []

    def infotext_extras(self, params: GenerationParams, job: JobPrompts) -> list[tuple[str, str | None]]:
        """Emphasis, Lora hashes and TI hashes for the job's infotext."""
        library = self.setup.embeddings
        embeddings = [(name, library.shorthash(library.get(name))) for name in job.embeddings] if library is not None else []
        library = self.setup.loras

        def lora_hash(file) -> str | None:  # only LoRAs that were applied (in either pass), as A1111 lists them
            return library.shorthash(file) if library is not None and file.path in job.applied else None

        ngms = [("NGMS", format_number(params.s_min_uncond) if job.skipped_uncond else None)]  # as A1111, after the hashes
        # A1111 names the refiner only when it took over (a switch at 1 never does).
        hires_pass = params.hires_fix_refiner_pass if job.refiner and params.enable_hr and params.hires_fix_refiner_pass != "second pass" else None
        refiner = [("Refiner switch by sampling steps", "True" if params.refiner and params.refiner_switch_by_sample_steps else None),
                   ("Hires refiner", hires_pass), ("Refiner", job.refiner),
                   ("Refiner switch at", format_number(params.refiner_switch_at) if job.refiner else None)]
        return infotext_extras(job, lora_hash, embeddings, params.emphasis) + refiner + ngms

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

    @property
    def lora_names(self) -> tuple[str, ...]:
        """The LoRAs applied now (as `<lora:name>` names them): the next job with them skips loading."""
        return tuple(file.name for file, _, _ in self._loras.active) if self._loras is not None else ()

    def _text_state(self):
        return self._loras.text_state() if self._loras is not None else None

    def _encoding(self, params: GenerationParams) -> EncodingOptions:
        return self.prompts.options(params.clip_skip, params.emphasis, self.setup.comma_padding_backtrack)

    # ------------------------------------------------------------------ txt2img

    def txt2img(self, params: GenerationParams, first_seed: int, control: RunControl | None = None,
                prompts: JobPrompts | None = None, start: int = 0, hooks: Hooks | None = None,
                first_subseed: int | None = None) -> Iterator[Batch]:
        """Yield each finished batch. Interrupt and skip cut the current batch short: it is
        still yielded, marked partial (the model's last estimate, as A1111 returns it); after
        an interrupt nothing more runs, after a skip the next batch does. `prompts` is what
        `prepare` gave (made here if not given); `start` skips the batches a run cut off by a
        crash had already finished (their seeds stay theirs). `hooks` are the job's add-ons
        (ControlNet), called at the points of modules.generation.hooks. `first_subseed` is the
        job's first variation seed (None: params.subseed, drawn at random when -1)."""
        control = control or RunControl()
        hooks = hooks or Hooks()
        prompts = prompts or self.prepare(params)
        refiner = self.refiner(params)
        hires = self._hires_runner(params)
        first = self._pass(params, prompts.first)
        second = hires._hires_pass(params, prompts.hires or prompts.first) if params.enable_hr else None
        per_batch = first.steps_run() + (second.steps_run() if second else 0)
        batches = noise.job_seeds(first_seed, params.n_iter, params.batch_size, params.subseed_strength)
        subseeds = noise.job_subseeds(_first_subseed(params, first_subseed), params.n_iter, params.batch_size)
        with torch.inference_mode():
            for index, seeds in enumerate(batches[start:], start):
                if control.interrupted:
                    return
                control.take_skip()  # a skip asked between batches applies to none
                report = _reporter(control, index, len(batches), per_batch)
                decoded = None
                texts, job, one, two = self._batch_prompts(params, prompts, hooks, index, seeds, subseeds[index], (first, second))
                with self._tiling(params, hires, refiner.runner if refiner else None):
                    # With hires fix the refiner joins the pass(es) A1111's hires_fix_refiner_pass names.
                    joins = ("first pass", "both passes") if two is not None else ()
                    outcome = self._denoise(one, seeds, control, report, job=job, hooks=hooks, subseeds=subseeds[index],
                                            refiner=refiner if two is None or params.hires_fix_refiner_pass in joins else None)
                    if not outcome.stopped and two is not None:
                        upscaled = self._upscale(outcome.latents, params, control)
                        # As in A1111, a refiner that took over in the first pass is the model the hires pass runs on,
                        # unless a hires checkpoint is chosen.
                        second_runner = refiner.runner if self.took_over and hires is self else hires
                        outcome = second_runner._denoise(two, seeds, control, report, init=upscaled, offset=one.steps_run(), job=job,
                                                         hooks=hooks, subseeds=subseeds[index],
                                                         refiner=refiner if params.hires_fix_refiner_pass != "first pass" else None)
                        if outcome.stopped and outcome.latents is None:  # stopped before the hires pass made anything
                            outcome = replace(outcome, latents=upscaled)
                    if outcome.latents is not None:
                        decoded = [hooks.image_decoded(im, i) for i, im in enumerate(self.decode(outcome.latents))]
                if decoded is not None:
                    yield Batch(decoded, seeds, index, partial=outcome.stopped, subseeds=subseeds[index], prompts=texts)

    def _batch_prompts(self, params: GenerationParams, prompts: JobPrompts, hooks: Hooks, index: int, seeds: list[int],
                       subseeds: list[int], passes: tuple) -> tuple:
        """(the batch's prompts when an add-on changed them, else None; its JobPrompts; its passes).
        A changed prompt is prepared as a job's is (LoRA tags resolved, warnings kept)."""
        changed = hooks.batch_prompts(index, seeds, subseeds) if hooks else None
        if changed is None or tuple(changed) == (params.prompt, params.negative_prompt):
            return None, prompts, *passes
        changed = (str(changed[0]), str(changed[1]))
        job = self.prepare(params.model_copy(update={"prompt": changed[0], "negative_prompt": changed[1]}))
        for warning in job.warnings:
            if warning not in prompts.warnings:
                prompts.warnings.append(warning)
        strength = passes[0].strength
        first = self._pass(params, job.first, strength)
        second = self._hires_runner(params)._hires_pass(params, job.hires or job.first) if passes[1] is not None else None
        return changed, job, first, second

    def refiner(self, params: GenerationParams) -> Refiner | None:
        """The job's refiner, loaded (None when it has none); a ValueError for one that is not
        there or draws in another latent space."""
        if params.refiner is None:
            return None
        title, runner = self._other(params.refiner, "Refiner")
        if runner.model.prediction_type != self.model.prediction_type:
            raise ValueError(f"Refiner {title} predicts {runner.model.prediction_type}, this checkpoint {self.model.prediction_type}: "
                             "a refiner takes over in the middle of sampling, so both must predict the same kind of output.")
        return Refiner(title, runner, params.refiner_switch_at, params.refiner_switch_by_sample_steps)

    def _hires_runner(self, params: GenerationParams) -> "Runner":
        """The runner of the hires pass: the hires checkpoint's (A1111's hr_checkpoint_name), else this one."""
        name = params.hires_checkpoint
        return self._other(name, "Hires checkpoint")[1] if name is not None else self

    def _other(self, name: str, what: str) -> tuple[str, "Runner"]:
        """Another checkpoint's runner, which must share this model's latent space (the latents
        go from one model to the other as they are)."""
        if self.checkpoints is None:
            raise ValueError(f"{what} '{name}' cannot be used here: no other checkpoint can be loaded beside this one.")
        title, runner = self.checkpoints(name)
        if runner is not self and not same_latent_space(self.model, runner.model):
            raise ValueError(f"{what} {title} ({runner.model.arch}) draws in another latent space than this checkpoint "
                             f"({self.model.arch}): choose a checkpoint of the same family (an SDXL refiner for SDXL, SD 1.x/2.x for SD 1.x/2.x).")
        return title, runner

    def _takeover(self, p: Pass, batch: int, with_uncond: bool) -> tuple:
        """What the refiner runs with from the switch on: its UNet, the pass's prompts encoded by
        its own text encoders (A1111 encodes them again for the refiner), its micro-conditioning.
        It runs without the job's LoRAs, which were made for the first model."""
        self._use_loras(())
        options = self.prompts.options(p.encoding.clip_skip, p.encoding.emphasis, p.encoding.comma_padding_backtrack)
        conditioning = StepConditioning(self.prompts, p.prompts, options, batch, with_uncond, self._text_state())
        _, pooled = conditioning.at(0)
        return self.model.unet, conditioning, self._time_ids(p, pooled, batch if with_uncond else 0)

    def _completed(self, p: Pass, by_steps: bool) -> Callable[[float, int], float]:
        """A1111's refiner clock: the model timestep nearest the call's noise level (in sigma),
        as the share of the schedule behind, (999 - timestep) / 1000; or, with by_steps, the share
        of the pass's model calls made (two a step for the second-order samplers)."""
        if by_steps:
            total = max(p.steps_run(), 1) * (2 if p.sampler.second_order else 1)
            return lambda t, call: call / total
        table = self._model_sigmas(False)

        def completed(t: float, call: int) -> float:
            sigma = table.t_to_sigma(torch.tensor(float(t)))
            index = int(torch.argmin((table.sigmas - sigma).abs()))
            return (len(table) - 1 - index) / len(table)

        return completed

    def _tiling(self, params: GenerationParams, *others: "Runner | None"):
        """Seamless pictures for this job's sampling, encoding and decoding only (A1111's Tiling),
        on the other checkpoints it uses too (refiner, hires checkpoint)."""
        models = [self.model, *(o.model for o in others if o is not None and o is not self)]
        return tiling.circular(tuple(part for m in models for part in (m.unet, m.vae)), params.tiling)

    def _pass(self, params: GenerationParams, text: PassText, strength: float = 1.0) -> Pass:
        sampler, schedule = samplers.resolve(params.sampler_name, params.scheduler)
        scheduled = ScheduledPrompts.build(text.prompt, text.negative, params.steps, use_old_scheduling=self.setup.use_old_scheduling)
        return Pass(
            scheduled, self._encoding(params), text.loras, params.cfg_scale, sampler, schedule, params.steps,
            params.width, params.height, strength, params.img2img_fix_steps, params.sampler_options(), params.randn_source,
            params.eta_noise_seed_delta, subseed_strength=params.subseed_strength,
            seed_resize_from=(params.seed_resize_from_w, params.seed_resize_from_h),
            min_uncond_sigma=params.s_min_uncond, token_merging=params.token_merging(),
            aesthetic_scores=(params.sdxl_refiner_high_aesthetic_score, params.sdxl_refiner_low_aesthetic_score),
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
            params.denoising_strength, params.img2img_fix_steps, params.sampler_options(), params.randn_source,
            params.eta_noise_seed_delta, hires=True, subseed_strength=params.subseed_strength,
            seed_resize_from=(params.seed_resize_from_w, params.seed_resize_from_h),
            min_uncond_sigma=params.s_min_uncond, token_merging=params.token_merging(hires=True),
            aesthetic_scores=(params.sdxl_refiner_high_aesthetic_score, params.sdxl_refiner_low_aesthetic_score),
        )

    def _upscale(self, latents: torch.Tensor, params: GenerationParams, control: RunControl | None = None) -> torch.Tensor:
        """First-pass latents at the hires size: interpolated in latent space, or decoded,
        resized with a pixel or model upscaler and encoded again. All fill the size and crop the excess."""
        width, height = params.hires_size()
        if params.hr_upscaler in LATENT_UPSCALERS:
            mode, antialias = LATENT_UPSCALERS[params.hr_upscaler]
            return _resize_latents(latents, height // self.vae_scale, width // self.vae_scale, mode, antialias)
        if params.hr_upscaler in imgops.PIXEL_RESAMPLING:
            resample = imgops.PIXEL_RESAMPLING[params.hr_upscaler]
            upscaled = [imgops.resize_image(im, width, height, mode=1, resample=resample) for im in self.decode(latents)]
        else:
            upscaled = [self._model_upscale(im, width, height, params.hr_upscaler, control) for im in self.decode(latents)]
        return self.encode(upscaled)

    def _model_upscale(self, image: Image.Image, width: int, height: int, name: str, control: RunControl | None) -> Image.Image:
        """A model upscaler's picture cropped to fill the hires size. An interrupt or skip between
        its tiles leaves a plain Lanczos resize, which the stopped pass then returns."""
        from modules.generation.upscaling import UpscaleInterrupted, UpscaleWatch

        if self.upscalers is None:
            raise ValueError(f"Hires upscaler '{name}' not found: no model upscalers are available here.")
        upscaler = self.upscalers.get(name, "Hires upscaler")
        if control is not None:
            upscaler = upscaler.watched(UpscaleWatch(stop=control.stop_requested))
        try:
            image = upscaler.upscale(image, max(width / image.width, height / image.height))
        except UpscaleInterrupted:
            pass
        return imgops.resize_image(image, width, height, mode=1, resample=Image.Resampling.LANCZOS)

    # ------------------------------------------------------------------ img2img

    def img2img(self, params: Img2ImgParams, init: InitImages, first_seed: int, control: RunControl | None = None,
                prompts: JobPrompts | None = None, start: int = 0, hooks: Hooks | None = None,
                first_subseed: int | None = None) -> Iterator[Batch]:
        """img2img and inpainting: yields batches like `txt2img`. Raises ValueError for an
        init the request cannot use (an empty mask)."""
        control = control or RunControl()
        hooks = hooks or Hooks()
        prepared = self._prepare(params, init)
        prompts = prompts or self.prepare(params)
        refiner = self.refiner(params)
        first = self._pass(params, prompts.first, params.denoising_strength)
        crop = (prepared.originals[0].size, prepared.region.box) if prepared.region is not None else None
        batches = noise.job_seeds(first_seed, params.n_iter, params.batch_size, params.subseed_strength)
        subseeds = noise.job_subseeds(_first_subseed(params, first_subseed), params.n_iter, params.batch_size)
        with torch.inference_mode():
            for index, seeds in enumerate(batches[start:], start):
                if control.interrupted:
                    return
                control.take_skip()
                report = _reporter(control, index, len(batches), first.steps_run())
                pick = [(index * params.batch_size + i) % len(prepared.work) for i in range(len(seeds))]
                texts, job, one, _ = self._batch_prompts(params, prompts, hooks, index, seeds, subseeds[index], (first, None))
                with self._tiling(params, refiner.runner if refiner else None):
                    init_latents, inpainting = self._init_latents(params, prepared, pick, seeds)
                    outcome = self._denoise(one, seeds, control, report, init=init_latents, inpainting=inpainting, job=job,
                                            hooks=hooks, crop=crop, subseeds=subseeds[index], refiner=refiner)
                    if outcome.latents is None:
                        continue
                    decoded = [hooks.image_decoded(im, i) for i, im in enumerate(self.decode(outcome.latents))]
                overlay = None
                if prepared.composite_mask is not None:
                    def overlay(image: Image.Image, i: int, pick=pick) -> Image.Image:
                        return imgops.composite(prepared.originals[pick[i]], image, prepared.composite_mask, prepared.region)

                    decoded = [overlay(im, i) for i, im in enumerate(decoded)]
                yield Batch(decoded, seeds, index, partial=outcome.stopped, overlay=overlay, subseeds=subseeds[index], prompts=texts)

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
            fresh = noise.ImageNoise(seeds, tuple(keep.shape[1:]), keep.device, keep.dtype, params.randn_source).first()
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
        report: Callable[[int, torch.Tensor], None],
        init: torch.Tensor | None = None,
        inpainting: Inpainting | None = None,
        offset: int = 0,
        job: JobPrompts | None = None,
        hooks: Hooks | None = None,
        crop: tuple | None = None,
        subseeds: Sequence[int] = (),
        refiner: Refiner | None = None,
    ) -> engines.Outcome:
        """Run one pass on the engine its sampler and schedule call for (see
        modules.generation.samplers). `offset` is how many steps of this batch earlier passes
        reported; `subseeds` are the images' variation seeds; `refiner` takes over at its switch."""
        if control.stop_requested():
            return engines.Outcome(None, stopped=True)
        m = self.model
        batch = len(seeds)

        # 1. Conditioning per step (prompt editing, alternation, AND), uncond first as diffusers does.
        self._use_loras(p.loras, job)
        with_uncond = (p.cfg_scale > 1.0 or not p.prompts.plain) and m.unet.config.get("time_cond_proj_dim") is None
        conditioning = StepConditioning(self.prompts, p.prompts, p.encoding, batch, with_uncond, self._text_state())
        embeds, pooled = conditioning.at(0)
        blocks = embeds.shape[0] // batch
        extra = self._extra_channels(inpainting, batch, p)
        cfg_scale = p.cfg_scale / 12.5 if p.sampler.solver == "ddim_cfgpp" else p.cfg_scale  # CFG++ takes guidance in [0, 1]
        info = PassInfo(p.width, p.height, p.hires, max(p.steps_run(), 1), batch, blocks, with_uncond, m.device, m.dtype,
                        img2img=init is not None, crop=crop)
        if hooks:
            hooks.pass_started(info)
        sigma_of = self._model_sigmas(p.sampler.solver == "lcm").t_to_sigma if p.min_uncond_sigma > 0 else None
        takeover = None
        if refiner is not None and refiner.runner is not self:  # A1111 does not switch to the model already running
            takeover = engines.Takeover(refiner.switch_at, self._completed(p, refiner.by_steps), lambda: refiner.runner._takeover(p, batch, with_uncond))
        predict = engines.Prediction(m.unet, conditioning, cfg_scale, with_uncond, blocks, self._time_ids(p, pooled, batch if with_uncond else 0),
                                     extra, control, hooks, info, skip_uncond_below=p.min_uncond_sigma, sigma_of=sigma_of, takeover=takeover)

        # 2. Noise: one generator per image on the job's source; the SDE samplers' trees draw from it too.
        shape = (self.latent_channels, p.height // self.vae_scale, p.width // self.vae_scale)
        engine = p.engine  # diffusers keeps the latents in the model's dtype; our samplers work in float32, as A1111's
        latent_dtype = embeds.dtype if engine == samplers.DIFFUSERS else torch.float32
        image_noise = noise.ImageNoise(seeds, shape, m.device, latent_dtype, p.randn_source, p.ensd, subseeds=subseeds,
                                       subseed_strength=p.subseed_strength, resize_from=self._seed_resize(p))
        blend = None
        if inpainting is not None and extra is None:
            blend = engines.Blend(inpainting.mask, inpainting.keep_latents)
        if engine == samplers.DIFFUSERS and p.strength >= 1.0:
            init = None  # diffusers' pipelines start from noise alone; A1111's samplers add the noise to the init
        elif init is not None and p.a1111_steps()[1] == 0 and engine != samplers.DIFFUSERS:
            return engines.Outcome(init)
        def progress(steps: int, estimate: torch.Tensor) -> None:
            if hooks:
                hooks.step_done(info, steps)
            report(offset + steps, estimate)

        # 3. Denoise.
        with brownian.noise_source(lambda seed, size: noise.seeded_noise(p.randn_source, seed, size, m.device)), \
                self._token_merging(p):
            if engine == samplers.DIFFUSERS:
                scheduler = samplers.build_scheduler(m.scheduler_config, p.sampler, p.schedule, seeds)
                total, run = p.schedule_steps()
                outcome = engines.run_diffusers(predict, scheduler, total, run, image_noise, init, blend, m.prediction_type,
                                                p.options.eta_for(p.sampler), progress)
            elif engine == samplers.TIMESTEPS:
                outcome = engines.run_timesteps(predict, self._timestep_plan(p, init is not None), image_noise, init, blend, progress)
            else:
                outcome = engines.run_sigmas(predict, self._sigma_plan(p, seeds, init is not None), image_noise, init, blend, progress)
        if job is not None and predict.skipped_uncond:
            job.skipped_uncond = True
        self.took_over = takeover is not None and takeover.call is not None
        if job is not None and self.took_over:
            job.refiner = refiner.title
        return outcome

    def _token_merging(self, p: Pass):
        """Token merging on the UNet for this pass only; the plain path when the ratio is 0."""
        if p.token_merging <= 0:
            return contextlib.nullcontext()
        from modules.generation.token_merging import merging

        return merging(self.model.unet, p.token_merging)

    def _seed_resize(self, p: Pass) -> tuple[int, int] | None:
        """"Resize seed from" as the latent (height, width) the seed's noise is drawn at; None when off."""
        width, height = p.seed_resize_from
        if width <= 0 or height <= 0:
            return None
        return max(height // self.vae_scale, 1), max(width // self.vae_scale, 1)

    def _model_sigmas(self, lcm: bool):
        from modules.generation.ksampling.model_sigmas import LcmSigmas, ModelSigmas

        key = "lcm_sigmas" if lcm else "model_sigmas"
        if key not in self._cache:
            table = ModelSigmas.from_scheduler_config(self.model.scheduler_config)
            self._cache[key] = LcmSigmas(table.alphas_cumprod) if lcm else table
        return self._cache[key]

    def _sigma_plan(self, p: Pass, seeds: list[int], img2img: bool) -> engines.SigmaRun:
        """A1111's schedule for the pass (steps + 1 with the next-to-last sigma dropped for the
        samplers that want it), cut for img2img, and the sampler's options."""
        from modules.generation.ksampling import schedules

        sampler, options = p.sampler, p.options
        lcm = sampler.solver == "lcm"
        table = self._model_sigmas(lcm)
        total, run = p.a1111_steps()
        discard = sampler.discard_penultimate or options.discard_penultimate
        wanted = samplers.effective_schedule(sampler, p.schedule)
        rho = options.rho if wanted.default_rho != -1 and options.rho else None
        span = schedules.Range(table, options.sigma_min or table.sigma_min, options.sigma_max or table.sigma_max, rho,
                               self.model.is_sdxl, options.beta_alpha, options.beta_beta)
        sigmas = schedules.sigmas_for(wanted.name, total + (1 if discard else 0), span)
        if discard:
            sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
        if img2img:
            sigmas = sigmas[total - run :]
        context = {
            "eta": options.eta_for(sampler) if sampler.eta else 1.0,
            "s_churn": options.s_churn if sampler.churn else 0.0,
            "s_tmin": options.s_tmin if sampler.churn else 0.0,
            "s_tmax": (options.s_tmax or math.inf) if sampler.churn else math.inf,
            "s_noise": options.s_noise if sampler.churn or sampler.takes_s_noise else 1.0,
            "extra": dict(sampler.options),
        }
        schedule_free = None
        if sampler.schedule_free:  # DPM fast / adaptive integrate between two levels, not along the schedule
            low, high = (float(sigmas[-2]), float(sigmas[0])) if img2img else (table.sigma_min, table.sigma_max)
            schedule_free = (low, high, len(sigmas) - 1)
        return engines.SigmaRun(sampler.solver, sigmas, table, self.model.prediction_type, context,
                                seeds if sampler.seeded_noise_tree else None, lcm, schedule_free, run)

    def _timestep_plan(self, p: Pass, img2img: bool) -> engines.TimestepRun:
        start, timesteps = p.timesteps(img2img)
        return engines.TimestepRun(timesteps, start, self._model_sigmas(False).alphas_cumprod, self.model.prediction_type,
                                   p.options.eta_for(p.sampler), cfgpp=p.sampler.solver == "ddim_cfgpp",
                                   report_steps=max(len(timesteps) - 1, 1))

    def _time_ids(self, p: Pass, pooled: torch.Tensor | None, uncond_rows: int = 0) -> torch.Tensor | None:
        """SDXL's micro-conditioning: original size, crop (0, 0) and target size, all the pass's
        size; the refiner's (a UNet made for 5 numbers) has the aesthetic score in place of the
        target size, the low one for the negative prompt's `uncond_rows` (diffusers' img2img
        pipeline and A1111 alike). Made once per pass (a tensor built in the loop would sync
        with the GPU every step)."""
        if pooled is None:
            return None
        config = self.model.unet.config
        count = (config.projection_class_embeddings_input_dim - pooled.shape[-1]) // config.addition_time_embed_dim
        rows = pooled.shape[0]
        if count == 5:
            high, low = p.aesthetic_scores
            scores = [low] * uncond_rows + [high] * (rows - uncond_rows)
            values = [[p.height, p.width, 0, 0, score] for score in scores]
            return torch.tensor(values, dtype=pooled.dtype, device=self.model.device)
        time_ids = torch.tensor([[p.height, p.width, 0, 0, p.height, p.width]], dtype=pooled.dtype, device=self.model.device)
        return time_ids.repeat(rows, 1)

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
        latents = vae_tiling.encode_mode(vae, pixels.to(vae.dtype), self.vae_tiling)
        if vae.dtype != torch.float32 and torch.isnan(latents).any():
            vae.to(torch.float32)
            latents = vae_tiling.encode_mode(vae, pixels.to(torch.float32), self.vae_tiling)
        if vae.config.get("shift_factor") is not None:
            latents = latents - vae.config.shift_factor
        return (latents * vae.config.scaling_factor).to(self.model.dtype)

    def decode(self, latents: torch.Tensor, check: bool = True) -> list[Image.Image]:
        """Latents to images; an fp16 VAE that overflows to NaN (A1111's black images) is
        retried once in fp32 and kept there. With `check`, NaNs that remain (in the latents, or
        from an fp32 VAE) fail the job with a message instead of passing as a black picture."""
        if check and torch.isnan(latents).any():
            raise ValueError(UNET_NANS)
        vae = self.model.vae
        scaled = latents / vae.config.scaling_factor
        if vae.config.get("shift_factor") is not None:
            scaled = scaled + vae.config.shift_factor
        self._upcast_if_needed(vae)
        image = vae_tiling.decode(vae, scaled.to(vae.dtype), self.vae_tiling)
        if vae.dtype != torch.float32 and torch.isnan(image).any():
            vae.to(torch.float32)
            image = vae_tiling.decode(vae, scaled.to(torch.float32), self.vae_tiling)
        if check and torch.isnan(image).any():
            raise ValueError(VAE_NANS)
        return self.image_processor.postprocess(image, output_type="pil")

    @staticmethod
    def _upcast_if_needed(vae) -> None:
        if vae.dtype == torch.float16 and vae.config.get("force_upcast", False):
            vae.to(torch.float32)


# A1111's kind of message for a picture that cannot be represented (its NansException).
UNET_NANS = ("A tensor with NaNs was produced in the UNet: the picture cannot be represented. This happens when a prompt's weights "
             "overflow (for example thousands of nested parentheses, or a weight like (word:1e30)), or when the model runs in half "
             "precision on a card that does not support it: lower the weights, or start with --no-half.")
VAE_NANS = ("A tensor with NaNs was produced in the VAE, even in full precision: the picture cannot be decoded. Try another VAE "
            "(Settings > SD VAE), or start with --no-half-vae.")

def same_latent_space(a: LoadedModel, b: LoadedModel) -> bool:
    """Whether latents of one model mean the same to the other: the same VAE latent layout and scaling."""
    va, vb = a.vae.config, b.vae.config
    return (va.latent_channels, va.scaling_factor, va.get("shift_factor")) == (vb.latent_channels, vb.scaling_factor, vb.get("shift_factor"))


def _first_subseed(params: GenerationParams, given: int | None) -> int:
    """The job's first variation seed: the one given (a resumed job's), else the request's, random for -1."""
    return int(given) if given is not None else noise.resolve_seed(params.subseed)


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
