"""What the worker does for a generation job: run the core, then save each image with its
infotext and the grid, reporting progress as it goes. The page and the API both end here,
for txt2img, img2img and the img2img batch over a folder alike."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from tqdm import tqdm

from modules.generation.control import StepInfo
from modules.generation.job_prompts import add_notes
from modules.generation.limits import WorkLimits
from modules.generation.previews import LivePreviews
from modules.generation.params import SETTING_FIELDS, GenerationParams, Img2ImgParams, infotext_fields
from modules.generation.prompt_parser import strip_comments
from modules.jobs.queue import Job, login_of
from modules.jobs.resume import Resumed
from modules.models.manager import ActiveModel, ModelManager
from modules.options import OutputSettings
from modules.outputs.infotext import format_infotext
from modules.outputs.naming import NameValues
from modules.outputs.saving import OutputWriter, SaveFailures, SaveSettings
from modules.version import VERSION

if TYPE_CHECKING:
    from PIL import Image

    from modules.controlnet.service import ControlNetService
    from modules.controlnet.units import ControlUnit
    from modules.extensions.job_scripts import AlwaysOnArgs
    from modules.extensions.loaded import LoadedExtensions
    from modules.generation.job_prompts import JobPrompts
    from modules.generation.runner import Batch, InitImages, Runner
    from modules.generation.styles import StyleStore
    from modules.generation.vae_tiling import VaeTiling
    from modules.models.embeddings import EmbeddingLibrary
    from modules.models.lora import LoraLibrary
    from modules.models.vae import VaeLibrary
    from modules.postprocessing.upscalers import UpscalerLibrary
    from modules.postprocessing.face_restoration import FaceRestoration

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


@dataclass
class Libraries:
    """The user's add-on files beside the checkpoints (models/Lora, models/embeddings,
    models/VAE, styles.csv) and A1111's prompt settings that are not request fields."""

    loras: "LoraLibrary | None" = None
    embeddings: "EmbeddingLibrary | None" = None
    vaes: "VaeLibrary | None" = None
    styles: "StyleStore | None" = None
    faces: "FaceRestoration | None" = None  # GFPGAN / CodeFormer for Restore faces
    comma_padding_backtrack: int = 20
    use_old_scheduling: bool = False
    vae_approx: Path | None = None  # models/VAE-approx: TAESD decoders for live previews


@dataclass
class GenerationResult:
    params: GenerationParams
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)  # each image's variation seed (A1111's all_subseeds)
    images: list["Image.Image"] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    grid_path: Path | None = None
    notes: list[str] = field(default_factory=list)  # e.g. files a folder batch skipped, and why
    unfinished: list[int] = field(default_factory=list)  # indices of images cut short by interrupt or skip (not saved)
    model_name: str | None = None  # the model it ran on: by the time someone reads the result,
    model_hash: str | None = None  # another job may have loaded another one
    vae_name: str | None = None  # a VAE file in use, else None (the checkpoint's own)
    vae_hash: str | None = None
    inpainting_model: bool = False
    started: datetime | None = None
    detected_maps: list["Image.Image"] = field(default_factory=list)  # ControlNet units' maps, shown after the images
    # A1111's p.extra_generation_params as its API's info reports them: Lora hashes, ControlNet N, ...
    extra_generation_params: dict[str, str] = field(default_factory=dict)

    def record(self) -> dict:
        """What the job store keeps of a finished job (images stay in their files, if saved)."""
        return {"seeds": self.seeds, "infotexts": self.infotexts, "paths": [str(p) for p in self.paths], "notes": self.notes,
                "model_name": self.model_name}


@dataclass(frozen=True)
class _JobControl:
    """A job's add-ons for the runner, and what they add to the result."""

    hooks: Any  # modules.generation.hooks.Hooks
    infotext: list
    detected_maps: list
    scripts: Any = None  # modules.extensions.job_scripts.JobScripts: always-on scripts and extension callbacks


def job_setting_defaults() -> dict:
    """The parameter model's defaults for the settings jobs carry (A1111's defaults)."""
    return {name: GenerationParams.model_fields[name].default for name in SETTING_FIELDS}


class GenerationService:
    """Holds the writers and the per-model runner (whose prompt cache lives as long as the model)."""

    def __init__(self, models: ModelManager, settings: OutputSettings, data_dir: Path, console_progress: bool = True,
                 clock: Callable[[], datetime] = datetime.now, libraries: Libraries | None = None, user_folders: bool = False):
        self.models = models
        self.console_progress = console_progress
        self.libraries = libraries or Libraries()
        # A1111's settings for jobs that do not ask otherwise (the page's, and API requests without override_settings).
        self.sd_vae = "Automatic"
        self.job_settings = job_setting_defaults()  # parameter field -> value, for SETTING_FIELDS
        self.limits = WorkLimits()  # the limit_* settings: how much one job may ask for
        self.previews = LivePreviews(self.libraries.vae_approx)  # show_progress_type
        self.vae_tiling_megapixels = 0.0  # vae_tiling_megapixels (0: never tile)
        self.data_dir = data_dir
        self.user_folders = user_folders  # log-ins are on: each user's images go to <outdir>/<user>/...
        self._clock = clock
        self.apply_settings(settings)
        self._runner: tuple[ActiveModel, Runner] | None = None
        self._other_runners: dict[Path, tuple[ActiveModel, Runner]] = {}  # the refiner's and hires checkpoint's (models.ensure_other)
        self._job_others: tuple[Path, ...] = ()  # the paths of the refiner and hires checkpoint the running job uses
        self._counter: tuple | None = None  # (tokenizer, Tokenizing) for the page's token counter
        self._fallback_tokenizer = None
        self._limit_tokenizing = None  # the limits' own CLIP tokenizer (see _token_counter)
        self._limit_lock = threading.Lock()
        self.upscalers: "UpscalerLibrary | None" = None  # model upscalers hires fix may use (the app's library)
        self.controlnet: "ControlNetService | None" = None  # ControlNet units' models and preprocessors (the app's)
        self.extensions: "LoadedExtensions | None" = None  # always-on scripts and callbacks of the loaded extensions (the app's)
        self.settings_values: Callable[[], dict] = dict  # config.json as jobs' scripts see it (p.opts)
        # How a resumed job reads back its saved pictures, (image, infotext) by path: None reads
        # this machine's files; a Ray worker is handed them by the serving machine.
        self.saved_images: Callable[[str], tuple] | None = None
        models.add_unload_listener(self._drop_runner)

    def apply_settings(self, settings: OutputSettings) -> None:
        """Use new saving settings (folders, formats) from the next image on. Checked first:
        a bad format raises ValueError and leaves the old settings in place."""

        def writer(folder: str, fmt: str, dated: bool) -> OutputWriter:
            return OutputWriter(SaveSettings(
                settings.resolve(self.data_dir, folder), fmt, dated, embed_infotext=settings.enable_pnginfo, jpeg_quality=settings.jpeg_quality,
                webp_lossless=settings.webp_lossless, filename_pattern=settings.samples_filename_pattern,
                directory_pattern=settings.directories_filename_pattern, max_prompt_words=settings.directories_max_prompt_words,
                user_folders=self.user_folders, save_txt=settings.save_txt,
            ), self._clock)

        writers = {
            "txt2img": (writer(settings.outdir_txt2img_samples, settings.samples_format, settings.save_to_dirs),
                        writer(settings.outdir_txt2img_grids, settings.grid_format, settings.grid_save_to_dirs)),
            "img2img": (writer(settings.outdir_img2img_samples, settings.samples_format, settings.save_to_dirs),
                        writer(settings.outdir_img2img_grids, settings.grid_format, settings.grid_save_to_dirs)),
        }
        self.settings, self.writers = settings, writers

    def use_settings(self, changed: dict) -> None:
        """Apply the config.json values this service uses (the settings store calls this on each
        change; ValueError, e.g. for a VAE that is not there, refuses the change)."""
        saving = {f.name for f in fields(OutputSettings)}
        if saving & set(changed):
            self.apply_settings(replace(self.settings, **{k: v for k, v in changed.items() if k in saving}))
        if "sd_vae" in changed:
            self.select_vae(changed["sd_vae"])
        for name, key in SETTING_FIELDS.items():
            if key in changed:
                self.job_settings[name] = changed[key]
        self.limits = self.limits.updated(changed)
        self.previews.use_settings(changed)
        self.vae_tiling_megapixels = changed.get("vae_tiling_megapixels", self.vae_tiling_megapixels)
        if self.libraries.faces is not None:
            self.libraries.faces.use_settings(changed)
        if changed.get("comma_padding_backtrack", self.libraries.comma_padding_backtrack) != self.libraries.comma_padding_backtrack:
            self.libraries.comma_padding_backtrack = changed["comma_padding_backtrack"]
            self._runner = None  # its prompt encoder was built with the old value

    def _drop_runner(self) -> None:
        self._runner = None
        self._other_runners = {}

    def _prompt_setup(self):
        from modules.generation.runner import PromptSetup

        libs = self.libraries
        return PromptSetup(libs.loras, libs.embeddings, libs.comma_padding_backtrack, libs.use_old_scheduling)

    def other_runner(self, name: str) -> tuple[str, "Runner"]:
        """("name [hash]", runner) of a checkpoint a job uses beside its own (its refiner or hires
        checkpoint), loaded beside it by the model manager; the job's own runner when it names
        the checkpoint in use. ValueError for one that is not there."""
        from modules.generation.runner import Runner

        info = self.models.require(name)
        active = self.models.active
        if self._runner is not None and active is self._runner[0] and active.info.path == info.path:
            return active.info.short_title, self._runner[1]
        if info.path not in self._other_runners:  # let go of those the job does not use before another loads
            self._other_runners = {p: r for p, r in self._other_runners.items() if p in self._job_others}
        other = self.models.ensure_other(name, keep=self._job_others)
        if other.model.family != "sd":
            raise ValueError(f"{info.title} is a {other.model.arch} checkpoint: a refiner or hires checkpoint must be an SD 1.x, 2.x or SDXL one.")
        self._other_runners = {p: r for p, r in self._other_runners.items() if any(r[0] is m for m in self.models.others)}
        if info.path not in self._other_runners:
            self._other_runners[info.path] = (other, Runner(other.model, self._prompt_setup()))
        runner = self._other_runners[info.path][1]
        if self._runner is not None:
            self._runner[1].vae_tiling = self._vae_tiling(self._runner[0].model.arch)  # less room if both models stay on the GPU
            runner.vae_tiling, runner.upscalers = self._runner[1].vae_tiling, self._runner[1].upscalers
        return other.info.short_title, runner

    def _vae_tiling(self, arch: str) -> "VaeTiling":
        """vae_tiling_megapixels, lowered to the card's cap (devices.auto_memory), which shrinks
        by what a refiner or hires checkpoint held whole beside the model takes of the room the
        cap was set for."""
        from modules.generation.devices import DECODE_GIB_PER_MP, GIB, family
        from modules.generation.vae_tiling import VaeTiling

        devices = self.models.devices
        plan, held = devices.memory, self.models.held_on_gpu()
        cap_name = "tiling_" + family(arch)
        if held and getattr(plan, cap_name) > 0:
            per_mp = DECODE_GIB_PER_MP * (2.0 if devices.vae_dtype.itemsize >= 4 else 1.0)
            plan = replace(plan, **{cap_name: max(0.1, int((getattr(plan, cap_name) - held / GIB / per_mp) * 10 + 1e-6) / 10)})
        return VaeTiling(plan.tiling_megapixels(arch, self.vae_tiling_megapixels))

    def _park_unused(self, params: GenerationParams) -> None:
        """At a job's start: a held refiner or hires checkpoint the job does not name waits in
        system RAM rather than on the GPU (ModelManager.park_other says why it is kept), and
        those it names are kept for it, so loading one never drops the other mid-job."""
        found = (self.models.find(name) if name else None for name in (params.refiner, params.hires_checkpoint))
        self._job_others = tuple(info.path for info in found if info is not None)
        self.models.park_other(keep=self._job_others)

    def check_checkpoints(self, params: GenerationParams, checkpoint: str | None = None) -> None:
        """Refuse, before the job waits, a refiner or hires checkpoint that is not there or, as
        far as the files tell without loading them, draws in another latent space than the
        job's checkpoint (`checkpoint`, as ModelManager.pin gave it; else the selected one)."""
        main = self.models.find(checkpoint) if checkpoint else self.models.selected
        size = flow_size_problem(params)
        names = [(what, name) for what, name in (("Refiner", params.refiner), ("Hires checkpoint", params.hires_checkpoint)) if name]
        mine = latent_space(main.path) if main is not None and (size or names) else None  # reads the file: once, when needed
        if size and mine in ("Flux", "SD 3"):
            raise ValueError(size)
        if not names:
            return
        if mine in ("Flux", "SD 3"):
            raise ValueError(f"{names[0][0]} works with SD 1.x, 2.x and SDXL checkpoints; {main.title} is a {mine} one.")
        for what, name in names:
            try:
                info = self.models.require(name)
            except ValueError as exc:
                raise ValueError(f"{what}: {exc}") from None
            if main is not None and info.path != main.path:
                theirs = latent_space(info.path)
                if mine and theirs and mine != theirs:
                    raise ValueError(f"{what} {info.title} is a {theirs} checkpoint, {main.title} a {mine} one: they draw in different "
                                     "latent spaces, so choose a checkpoint of the same family (an SDXL refiner for SDXL, SD 1.x/2.x for SD 1.x/2.x).")

    def runner(self, checkpoint: str | None = None, vae: str | None = None, notes: list[str] | None = None) -> tuple[ActiveModel, "Runner"]:
        """The runner for the job's model (`checkpoint`, as ModelManager.pin gave it, else the
        selected one), loading it first if needed, with the VAE choice `vae` (else sd_vae) in
        place. A VAE file that is gone or does not fit this model leaves the checkpoint's own
        VAE in use and says so in `notes`: the picture is still made."""
        from modules.generation.flow_runner import runner_for  # imports diffusers: not needed to serve the page

        active = self.models.ensure(checkpoint)
        if self._runner is None or self._runner[0] is not active:
            self._runner = (active, runner_for(active.model, self._prompt_setup()))
            self._runner[1].checkpoints = self.other_runner
        self._runner[1].vae_tiling = self._vae_tiling(active.model.arch)
        self._runner[1].upscalers = self.upscalers.registry if self.upscalers is not None else None  # as last scanned
        if self.libraries.vaes is not None:
            try:
                self._runner[1].use_vae(self.libraries.vaes.resolve(vae or self.sd_vae, active.info.path))
            except ValueError as exc:
                self._runner[1].use_vae(None)
                if notes is not None:
                    notes.append(f"{exc}: the checkpoint's own VAE was used.")
        return self._runner

    def runner_loaded(self) -> "Runner | None":
        """The runner of the model loaded now, without loading one (None before the first job)."""
        return self._runner[1] if self._runner is not None else None

    def hires_upscalers(self) -> tuple[str, ...]:
        """The model upscaler names hires fix accepts besides the latent modes and resamplers."""
        return self.upscalers.model_names if self.upscalers is not None else ()

    def prompt_settings(self) -> dict:
        """The settings that travel with a job as its parameters (and so into its infotext):
        Clip skip, emphasis and the sampler parameters, by parameter name."""
        return dict(self.job_settings)

    def select_vae(self, choice: str) -> None:
        """Set sd_vae ("Automatic", "None" or a file in models/VAE); ValueError if unknown."""
        self.pin_vae(choice)
        self.sd_vae = choice

    def pin_vae(self, choice: str | None = None) -> str:
        """The VAE choice a job submitted now runs with: `choice` (checked), else sd_vae."""
        if choice is None:
            return self.sd_vae
        if not isinstance(choice, str):
            raise ValueError(f"sd_vae must be a string, got {choice!r}")
        vaes = self.libraries.vaes
        if choice not in ("Automatic", "None") and (vaes is None or vaes.find(choice) is None):
            known = ", ".join(vaes.choices() if vaes is not None else ("Automatic", "None"))
            raise ValueError(f"VAE '{choice}' not found in models/VAE. Choose one of: {known}.")
        return choice

    def count_tokens(self, prompt: str, steps: int = 20, negative: bool = False, styles: tuple[str, ...] = ()) -> tuple[int, int]:
        """The page's "N/75" counter, with the chosen styles applied (A1111's default), the
        loaded model's tokenizer and embeddings (the shared CLIP vocabulary before a model is loaded)."""
        from modules.generation.job_prompts import token_count
        from modules.generation.text_encoding import EncodingOptions

        tokenizing, width = self._tokenizing()
        known, _ = self._known_styles(styles)
        if known:
            styled = self.libraries.styles.apply("" if negative else prompt, prompt if negative else "", known)
            prompt = styled[1] if negative else styled[0]
        return token_count(prompt, lambda text: tokenizing(text, EncodingOptions(), width).token_count, steps, negative)

    def check_limits(self, params: GenerationParams) -> None:
        """Refuse (ValueError naming the limit and the value) a job that asks for more work than
        the limit_* settings allow, its styles applied, before it waits in the queue."""
        styled, _ = self.styled(params)
        self.limits.check(styled, self._token_counter())
        self.check_checkpoints(params)
        if params.restore_faces:
            self._face_restorer(params)  # no restorer present: say what to download before the job waits

    def _face_restorer(self, params: GenerationParams) -> GenerationParams:
        """The params naming the face restorer that will run (the chosen one, else the one
        present), so the infotext records it; a ValueError when there is none."""
        if self.libraries.faces is None:
            raise ValueError("Restore faces is not available in this server.")
        name = self.libraries.faces.pick(params.face_restoration_model).name
        return params if name == params.face_restoration_model else params.model_copy(update={"face_restoration_model": name})

    def _restore_faces(self, image, params: GenerationParams, notes: list[str]):
        """The picture with its faces restored, and the params its infotext records. A restorer
        that fails here (out of GPU memory) costs the restoration, not the picture."""
        try:
            return self.libraries.faces.restore(image, params.face_restoration_model, weight=params.code_former_weight), params
        except (ValueError, RuntimeError) as exc:
            log.warning("Restore faces failed: %s", exc)
            note = f"Restore faces failed ({exc}): the picture is saved without it."
            if note not in notes:
                notes.append(note)
            return image, params.model_copy(update={"restore_faces": False})

    def _token_counter(self) -> Callable[[str], int]:
        """One plain prompt's token count for the limits: the shared CLIP vocabulary (every SD
        family's), its own copy behind a lock, since jobs use the model's tokenizer meanwhile."""
        from modules.generation.text_encoding import EncodingOptions, Tokenizing

        with self._limit_lock:
            if self._limit_tokenizing is None:
                from modules.models.loader import build_tokenizer

                self._limit_tokenizing = Tokenizing(build_tokenizer(self.models.configs_dir), None, (768,))

        def count(text: str) -> int:
            with self._limit_lock:
                return self._limit_tokenizing(text, EncodingOptions(), 768).token_count

        return count

    def _tokenizing(self) -> tuple[Any, int]:
        """(Tokenizing, encoder width) of the loaded model, or of the shared CLIP vocabulary
        while the first model is still loading (built once)."""
        from modules.generation.text_encoding import Tokenizing

        active = self.models.active
        if active is not None:
            m = active.model
            first = (m.tokenizer, m.text_encoder) if m.text_encoder is not None else (m.tokenizer_2, m.text_encoder_2)  # the SDXL refiner: bigG only
            tokenizer, width = first[0], first[1].config.hidden_size
        else:
            if self._fallback_tokenizer is None:
                from modules.models.loader import build_tokenizer

                self._fallback_tokenizer = build_tokenizer(self.models.configs_dir)
            tokenizer, width = self._fallback_tokenizer, 768
        if self._counter is None or self._counter[0] is not tokenizer:
            self._counter = (tokenizer, Tokenizing(tokenizer, self.libraries.embeddings, (width,)))
        return self._counter[1], width

    def styled(self, params: GenerationParams) -> tuple[GenerationParams, list[str]]:
        """The params with their styles applied to the prompts, hires prompts included, then
        `#` comments removed: the infotext records the prompts as A1111 does, styled and
        without comments. Also a note for each style not found: A1111 skips those, so a
        client's or a queued job's stale style name does not fail the job."""
        params, notes = self._with_styles(params)
        prompts = ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt")
        stripped = {name: strip_comments(getattr(params, name)) for name in prompts if "#" in getattr(params, name)}
        return (params.model_copy(update=stripped) if stripped else params), notes

    def _known_styles(self, names) -> tuple[list[str], list[str]]:
        """(the names styles.csv has, the ones it does not), in the order given."""
        known = set(self.libraries.styles.names) if self.libraries.styles is not None else set()
        return [n for n in names if n in known], [n for n in names if n not in known]

    def _with_styles(self, params: GenerationParams) -> tuple[GenerationParams, list[str]]:
        if not params.styles:
            return params, []
        store = self.libraries.styles
        names, unknown = self._known_styles(params.styles)
        notes = [f"Style '{name}' not found in styles.csv: it was not applied." for name in unknown]
        if not names:
            return params, notes
        update = dict(zip(("prompt", "negative_prompt"), store.apply(params.prompt, params.negative_prompt, names)))
        if params.hr_prompt or params.hr_negative_prompt:
            hr_prompt, hr_negative = store.apply(params.hr_prompt, params.hr_negative_prompt, names)
            update["hr_prompt"] = hr_prompt if params.hr_prompt else ""
            update["hr_negative_prompt"] = hr_negative if params.hr_negative_prompt else ""
        return params.model_copy(update=update), notes

    def infotext(self, params: GenerationParams, seed: int, active: ActiveModel, masked: bool = False,
                 extras: list[tuple[str, str | None]] = (), vae: tuple[str | None, str | None] = (None, None),
                 subseed: int | None = None) -> str:
        fields = infotext_fields(
            params, seed=seed, model_hash=active.info.shorthash, model_name=active.info.model_name, version=VERSION,
            clip_skip_applies=active.model.honours_clip_skip, masked=masked, vae_name=vae[0], vae_hash=vae[1], extras=extras,
            subseed=subseed, fp8_weight=active.model.extra.get("fp8_storage"),
        )
        return format_infotext(params.prompt, params.negative_prompt, fields)

    def run_txt2img(self, job: Job, params: GenerationParams, save: bool | None = None, checkpoint: str | None = None,
                    vae: str | None = None, controlnet: "Sequence[ControlUnit]" = (), grid: bool = True,
                    alwayson: "Sequence[AlwaysOnArgs]" = ()) -> GenerationResult:
        """`save` overrides the samples_save and grid_save settings (the API's save_images);
        `controlnet` are the job's ControlNet units; `grid` False saves no grid of the batch
        (a script's job: the script makes its own, as A1111's do_not_save_grid); `alwayson`
        the extensions' always-on scripts with their arguments."""
        notes: list[str] = []
        model = self.runner(checkpoint, vae, notes)
        self._park_unused(params)
        if params.hires_checkpoint:  # loaded now, and named in the infotext as A1111 writes it: "name [hash]"
            params = params.model_copy(update={"hr_checkpoint_name": self.other_runner(params.hires_checkpoint)[0]})
        scripts = self._scripts("txt2img", alwayson, job, notes)
        params = self._ready(params, scripts, None, model[0], notes)
        control = self._controlnet(controlnet, model[0], params, scripts=scripts)
        return self._collect(job, params, model,
                             lambda seed, prompts, start, subseed: model[1].txt2img(params, seed, job.control, prompts, start, control.hooks, subseed),
                             self.writers["txt2img"] if grid else (self.writers["txt2img"][0], None), save=save, notes=notes,
                             control=control)

    def _ready(self, params: GenerationParams, scripts, init, active: ActiveModel, notes: list[str]) -> GenerationParams:
        """The params a job runs with: styles applied; with always-on scripts, their
        before_process and process run around that (see JobScripts.start)."""
        if not scripts:
            params, style_notes = self.styled(params)
            add_notes(notes, style_notes)
            return params
        return scripts.start(params, init, self.hires_upscalers(), (active.info.model_name, active.info.shorthash), self.styled)

    def _scripts(self, kind: str, alwayson: "Sequence[AlwaysOnArgs]", job: Job, notes: list[str]):
        """The job's always-on scripts and extension callbacks (None without extensions)."""
        if self.extensions is None:
            return None
        from modules.extensions.job_scripts import JobScripts

        scripts = JobScripts(self.extensions, kind, alwayson, notes, self.settings_values(), login_of(job.user))
        return scripts if scripts else None

    def _controlnet(self, units: "Sequence[ControlUnit]", active: ActiveModel, params: GenerationParams,
                    init: "InitImages | None" = None, scripts=None) -> "_JobControl":
        """The job's ControlNet units made ready on the loaded checkpoint (preprocessed, models
        loaded), after the job's always-on scripts' hooks (`scripts`)."""
        from modules.generation.hooks import Hooks

        first_hooks = [scripts] if scripts else []
        if not any(u.settings.enabled for u in units):
            return _JobControl(Hooks(first_hooks), [], [], scripts)
        if self.controlnet is None:
            raise ValueError("ControlNet is not available on this server.")
        first = init.images[0] if init is not None and init.images else None
        seed = params.seed if params.seed >= 0 else None
        prepared = self.controlnet.prepare(units, active.model, params.width, params.height, first, init.mask if init else None, seed)
        return _JobControl(Hooks([*first_hooks, *([prepared.hook] if prepared.hook else [])]), prepared.infotext, prepared.detected_maps,
                           scripts)

    def run_img2img(self, job: Job, params: Img2ImgParams, init: "InitImages", output_dir: Path | None = None, name: str | None = None,
                    save: bool | None = None, checkpoint: str | None = None, vae: str | None = None,
                    controlnet: "Sequence[ControlUnit]" = (), grid: bool = True, alwayson: "Sequence[AlwaysOnArgs]" = ()) -> GenerationResult:
        """One img2img or inpaint job. With `output_dir` (a folder batch) images are saved
        there under `name` instead of the numbered img2img outputs, and no grid is made (nor
        with `grid` False: a script's job).
        ControlNet units without a picture of their own use the init image (and mask)."""
        notes: list[str] = []
        model = self.runner(checkpoint, vae, notes)
        self._park_unused(params)
        scripts = self._scripts("img2img", alwayson, job, notes)
        params = self._ready(params, scripts, init, model[0], notes)
        control = self._controlnet(controlnet, model[0], params, init, scripts)
        writers = self.writers["img2img"] if grid else (self.writers["img2img"][0], None)
        if output_dir is not None:
            writers = (OutputWriter(SaveSettings(output_dir, self.settings.samples_format, False, jpeg_quality=self.settings.jpeg_quality,
                                                 save_txt=self.settings.save_txt)), None)
        masked = init.mask is not None
        return self._collect(job, params, model,
                             lambda seed, prompts, start, subseed: model[1].img2img(params, init, seed, job.control, prompts, start, control.hooks,
                                                                                   subseed),
                             writers, masked, name, save, notes, control)

    def run_img2img_folder(self, job: Job, params: Img2ImgParams, input_dir: Path, output_dir: Path | None, mask_dir: Path | None = None,
                           checkpoint: str | None = None, vae: str | None = None, controlnet: "Sequence[ControlUnit]" = (),
                           alwayson: "Sequence[AlwaysOnArgs]" = ()) -> GenerationResult:
        """A1111's img2img Batch "From directory": every image in `input_dir`, with the mask of
        the same name from `mask_dir` (or its only file), saved under the input's name to
        `output_dir` (the usual img2img folder when empty). Files that are not images are
        skipped and listed in the result's notes; an interrupt ends the whole batch."""
        from modules.generation import images as imgops
        from modules.generation.runner import InitImages

        input_dir = Path(input_dir)
        if not input_dir.is_dir():
            raise ValueError(f"Input directory not found: {input_dir}")
        files = sorted(p for p in input_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        masks = sorted(p for p in Path(mask_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if mask_dir else []
        if mask_dir and not masks:
            raise ValueError(f"No mask images found in {mask_dir}")
        total = GenerationResult(params)
        for path in files:
            if job.control.interrupted:
                break
            try:
                image = imgops.open_image(str(path))
            except ValueError:
                total.notes.append(f"Skipped {path.name}: not an image.")
                continue
            mask = None
            if masks:
                match = [m for m in masks if m.stem == path.stem] or (masks if len(masks) == 1 else [])
                if not match:
                    total.notes.append(f"Skipped {path.name}: no mask named {path.stem}.* in {mask_dir}.")
                    continue
                mask = imgops.open_mask(str(match[0]))
            try:
                one = self.run_img2img(job, params, InitImages((image,), mask), Path(output_dir) if output_dir else None,
                                       name=path.stem if output_dir else None, checkpoint=checkpoint, vae=vae, controlnet=controlnet,
                                       alwayson=alwayson)
            except ValueError as exc:  # e.g. an empty mask: say so and go on with the next file
                total.notes.append(f"Skipped {path.name}: {exc}")
                continue
            total.unfinished.extend(len(total.images) + i for i in one.unfinished)
            for key in ("seeds", "subseeds", "images", "infotexts", "paths", "detected_maps"):
                getattr(total, key).extend(getattr(one, key))
            add_notes(total.notes, one.notes)
        if not total.images and not total.notes:
            total.notes.append(f"No images found in {input_dir}.")
        return total

    def _collect(
        self,
        job: Job,
        params: GenerationParams,
        model: tuple[ActiveModel, "Runner"],
        batches: Callable[[int, "JobPrompts", int, int], Iterator["Batch"]],
        writers: tuple[OutputWriter, OutputWriter | None],
        masked: bool = False,
        name: str | None = None,
        save: bool | None = None,
        notes: list[str] = (),
        control: "_JobControl | None" = None,
    ) -> GenerationResult:
        from modules.generation.noise import resolve_seed

        active, runner = model
        params, changed = runner.job_params(params)  # what runs, as the infotext must say (Flux: Automatic is Simple)
        notes = [*notes, *changed]
        scripts = control.scripts if control is not None else None
        if params.restore_faces:
            params = self._face_restorer(params)  # the restorer that runs, for the infotext and the API's info
            self.libraries.faces.pick(params.face_restoration_model).load()  # a broken model file fails now, not after sampling

        resumed = Resumed.of(job, params)  # a run cut off by a crash: go on after its saved batches
        first_seed = resumed.first_seed if resumed else resolve_seed(params.seed)
        first_subseed = resumed.first_subseed if resumed and resumed.first_subseed is not None else resolve_seed(params.subseed)
        vae_file = runner.vae_file
        vae = (vae_file.name, self.libraries.vaes.shorthash(vae_file)) if vae_file is not None and self.libraries.vaes else (None, None)
        result = GenerationResult(params, model_name=active.info.model_name, model_hash=active.info.shorthash, vae_name=vae[0],
                                  vae_hash=vae[1], inpainting_model=active.model.unet.config.in_channels == 9, started=self._clock())
        result.notes.extend(notes)
        if control is not None:
            result.detected_maps = list(control.detected_maps)
        prompts = runner.prepare(params)
        extras = None  # after the first batch: only then have the hires pass's LoRAs been applied too
        images_writer, grids_writer = writers
        bar = tqdm(total=params.n_iter * params.steps, desc=job.id, unit="step", disable=not self.console_progress)
        report = job.control.on_step

        def on_step(info: StepInfo) -> None:
            report(info)
            bar.total = info.batch_count * info.steps  # img2img and hires change the count
            bar.n = info.batch_index * info.steps + info.step
            bar.refresh()
            if info.latents is not None and job.progress.preview_due(info.step):
                job.progress.preview = self.previews.image(active.model, info.latents, lambda x: runner.decode(x.clone(), check=False)[0])

        job.control.on_step = on_step
        saving = SaveFailures(result.notes)
        if resumed:
            resumed.restore(result, self.saved_images)
        try:
            for batch in batches(first_seed, prompts, resumed.batches if resumed else 0, first_subseed):
                if extras is None:
                    extras = runner.infotext_extras(params, prompts) + (control.infotext if control is not None else [])
                    if scripts:
                        extras = extras + scripts.infotext_extras()
                    result.extra_generation_params = {key: str(value) for key, value in extras if value is not None}
                if batch.partial:  # A1111 returns an interrupted or skipped batch's last estimate, and does not save it
                    why = "interrupted" if job.control.interrupted else "skipped"
                    result.notes.append(f"Batch {batch.index + 1} of {params.n_iter} was {why}: its unfinished picture is returned, not saved.")
                batch_params = params if batch.prompts is None else params.model_copy(
                    update={"prompt": batch.prompts[0], "negative_prompt": batch.prompts[1]})  # an always-on script's prompts
                images = scripts.postprocess_batch(batch.images, batch.index) if scripts and not batch.partial else batch.images
                for position, (image, seed) in enumerate(zip(images, batch.seeds)):
                    subseed = batch.subseeds[position] if position < len(batch.subseeds) else params.subseed
                    image_params = batch_params
                    if params.restore_faces and not batch.partial:  # after decoding, before saving (as A1111)
                        image, image_params = self._restore_faces(image, batch_params, result.notes)
                        if batch.overlay is not None:  # inpainting: the unmasked part stays the original's
                            image = batch.overlay(image, position)
                    if scripts and not batch.partial:
                        image = scripts.postprocess_image(image, position)
                    text = self.infotext(image_params, seed, active, masked, extras, vae, subseed)
                    result.images.append(image)
                    result.seeds.append(seed)
                    result.subseeds.append(subseed)
                    result.infotexts.append(text)
                    if batch.partial:
                        result.unfinished.append(len(result.images) - 1)
                        continue
                    saved_before = len(result.paths)
                    if scripts and (name is not None or (self.settings.samples_save if save is None else save)):
                        image, text = scripts.before_saving(image, text)  # on_before_image_saved
                        result.images[-1], result.infotexts[-1] = image, text
                    if name is not None:
                        saving.attempt(images_writer, result.paths, lambda: images_writer.save_as(image, name, infotext=text))
                    elif self.settings.samples_save if save is None else save:
                        values = self._name_values(image_params, active, seed, result, job)
                        saving.attempt(images_writer, result.paths, lambda: images_writer.save_image(image, infotext=text, values=values))
                    if scripts and len(result.paths) > saved_before:
                        scripts.saved(image, result.paths[-1], text)  # on_image_saved
                if not batch.partial and result.paths:
                    job.record_progress({"first_seed": first_seed, "first_subseed": first_subseed, "batches": batch.index + 1,
                                         "paths": [str(p) for p in result.paths]})
        finally:
            job.control.on_step = report
            bar.close()
            for warning in prompts.warnings:
                log.warning("%s: %s", job.id, warning)
            add_notes(result.notes, prompts.warnings)
        finished = [im for i, im in enumerate(result.images) if i not in result.unfinished]
        if grids_writer is not None and (self.settings.grid_save if save is None else save) and len(finished) > 1:
            values = self._name_values(params, active, result.seeds[0], result, job)
            grids: list[Path] = []
            saving.attempt(grids_writer, grids, lambda: grids_writer.save_grid(finished, infotext=result.infotexts[0], values=values))
            result.grid_path = grids[0] if grids else None
        if scripts:  # after the grid, as A1111: pictures a script adds here are returned, not put in the grid
            scripts.postprocess(result.images, result.infotexts, result.seeds, result.subseeds)
        return result

    @staticmethod
    def _name_values(params: GenerationParams, active: ActiveModel, seed: int, result: GenerationResult, job: Job) -> NameValues:
        """What the filename patterns ([seed], [model_name], [prompt_spaces], ...) may use."""
        return NameValues(
            seed=seed, prompt=params.prompt, negative_prompt=params.negative_prompt, model_name=active.info.model_name,
            model_hash=active.info.shorthash, steps=params.steps, cfg_scale=params.cfg_scale, width=params.width, height=params.height,
            sampler=params.sampler_name, scheduler=params.scheduler, styles=tuple(params.styles), clip_skip=params.clip_skip,
            denoising_strength=params.denoising_strength if isinstance(params, Img2ImgParams) else None,
            batch_number=(len(result.seeds) - 1) % params.batch_size + 1 if result.seeds else None, batch_size=params.batch_size,
            job_timestamp=result.started, all_seeds=tuple(result.seeds), user=login_of(job.user),
        )


# ---------------------------------------------------------------- recorded jobs

def latent_space(path: Path) -> str | None:
    """The family whose latent space a checkpoint file draws in ("SD", "SDXL", "Flux", "SD 3"),
    from its tensor names alone; None when the file cannot tell (the job finds out when it loads)."""
    from modules.models.arch import detect_architecture, read_checkpoint_shapes
    from modules.models.loaded import family_of

    try:
        arch = _folder_arch(Path(path)) if Path(path).is_dir() else detect_architecture(read_checkpoint_shapes(path))
    except (OSError, ValueError):
        return None
    if arch in ("sdxl", "sdxl-refiner"):
        return "SDXL"
    return {"sd": "SD", "flux": "Flux", "sd3": "SD 3"}.get(family_of(arch))


def _folder_arch(folder: Path) -> str | None:
    """A diffusers folder's architecture from its model_index.json (and the transformer's config
    for Flux/SD 3), enough to tell its latent space; None for an unknown pipeline."""
    import json

    from modules.models.flow_loader import folder_arch

    arch = folder_arch(folder)
    if arch is not None:
        return arch
    name = str(json.loads((folder / "model_index.json").read_text()).get("_class_name", ""))
    if name.startswith("StableDiffusionXL"):
        return "sdxl"
    return "sd1" if name.startswith("StableDiffusion") else None


def flow_size_problem(params: GenerationParams) -> str | None:
    """Flux and SD 3 draw in multiples of 16 (8x VAE, 2x2 patches): the sentence refusing the
    first pass's or the hires pass's size, naming the nearest that work; None when both fit."""
    sizes = [(params.width, params.height)]
    if params.enable_hr:
        sizes.append(params.hires_size())
    for i, (width, height) in enumerate(sizes):
        if width % 16 or height % 16:
            below = f"{max(16, width // 16 * 16)}x{max(16, height // 16 * 16)}"
            above = f"{-(-width // 16) * 16}x{-(-height // 16) * 16}"
            what = "the hires size " if i else ""
            return f"Flux and SD 3 draw in multiples of 16: {what}{width}x{height} is not; {below} or {above} are."
    return None


def _png_base64(image: "Image.Image") -> str:
    import base64
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _from_base64(text: str) -> "Image.Image":
    import base64
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(text)))
    image.load()
    return image


def saved_path_per_image(result: GenerationResult) -> list[Path | None]:
    """Each image's saved file, None for the unsaved (unfinished pictures, saving off or failed)."""
    finished = [i for i in range(len(result.images)) if i not in set(result.unfinished)]
    if len(result.paths) != len(finished):  # some saves failed or were off: which is which is not known
        return [None] * len(result.images)
    saved = dict(zip(finished, result.paths))
    return [saved.get(i) for i in range(len(result.images))]


def txt2img_payload(params: GenerationParams, save: bool | None = None, checkpoint: str | None = None, vae: str | None = None,
                    controlnet: "Sequence[ControlUnit]" = (), grid: bool = True, alwayson: "Sequence[AlwaysOnArgs]" = ()) -> dict:
    payload = {"params": params.model_dump(), "save": save, "checkpoint": checkpoint, "vae": vae}
    if not grid:
        payload["grid"] = False
    if alwayson:
        from modules.extensions.job_scripts import alwayson_payload

        payload["alwayson"] = alwayson_payload(alwayson)
    if controlnet:
        from modules.controlnet.units import unit_to_payload

        payload["controlnet"] = [unit_to_payload(u) for u in controlnet]
    return payload


def _units(payload: dict) -> list:
    from modules.controlnet.units import unit_from_payload

    return [unit_from_payload(u) for u in payload.get("controlnet") or ()]


def img2img_payload(params: Img2ImgParams, init: "InitImages", save: bool | None = None, checkpoint: str | None = None,
                    vae: str | None = None, controlnet: "Sequence[ControlUnit]" = (), grid: bool = True,
                    alwayson: "Sequence[AlwaysOnArgs]" = ()) -> dict:
    """Everything the job needs to run again after a restart, images included (as PNG base64)."""
    return {
        **txt2img_payload(params, save, checkpoint, vae, controlnet, grid, alwayson), "images": [_png_base64(im) for im in init.images],
        "mask": _png_base64(init.mask) if init.mask is not None else None,
    }


def task_from_payload(kind: str, payload: dict, service: GenerationService) -> Callable[[Job], GenerationResult]:
    """The txt2img or img2img task a recorded payload describes, on `service`: how the queue
    rebuilds a job after a restart, and how a Ray worker runs one it is handed."""
    from modules.extensions.job_scripts import alwayson_from_payload
    from modules.generation.runner import InitImages

    units, alwayson = _units(payload), alwayson_from_payload(payload.get("alwayson"))
    common = dict(save=payload.get("save"), checkpoint=payload.get("checkpoint"), vae=payload.get("vae"), controlnet=units,
                  grid=payload.get("grid", True), alwayson=alwayson)
    if kind == "txt2img":
        params = GenerationParams.model_validate(payload["params"], context={"upscalers": service.hires_upscalers()})
        return lambda job: service.run_txt2img(job, params, **common)
    if kind == "img2img":
        params = Img2ImgParams(**payload["params"])
        mask = _from_base64(payload["mask"]) if payload.get("mask") else None
        init = InitImages(tuple(_from_base64(i) for i in payload["images"]), mask)
        return lambda job: service.run_img2img(job, params, init, **common)
    raise ValueError(f"'{kind}' is not a generation job.")


def register_generation_jobs(queue, service: GenerationService) -> None:
    """Teach the queue to rebuild recorded txt2img and img2img jobs after a restart."""
    # Import diffusers now, on one thread: a request and the worker importing it at once
    # (the runner's first use) can meet a half-initialised diffusers module.
    import modules.generation.runner  # noqa: F401

    for kind in ("txt2img", "img2img"):
        queue.register(kind, lambda payload, kind=kind: task_from_payload(kind, payload, service))
