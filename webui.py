"""Build the app from command-line options and serve it: the gradio page on one port.

The `App` object owns everything stateful (settings, the loaded model, the job queue) and
hands it to the parts that need it; there are no module-level globals to reach into.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from modules.login_limits import LoginLimits  # noqa: E402
from modules.options import OutputSettings, Paths, parse_args  # noqa: E402
from modules.version import VERSION  # noqa: E402

if TYPE_CHECKING:
    from modules.jobs.queue import Job, JobQueue
    from modules.jobs.generation_task import GenerationService, Libraries
    from modules.models.manager import ModelManager
    from modules.models.downloads import Downloads
    from modules.models.fetch import FetchProgress
    from modules.jobs.extras_task import ExtrasService
    from modules.jobs.interrogate_task import InterrogateService
    from modules.controlnet.service import ControlNetService
    from modules.extensions.layout import ExtensionDirs
    from modules.extensions.loaded import LoadedExtensions
    from modules.extensions.manage import ExtensionManager
    from modules.localization import Localizations
    from modules.models.network_cards import NetworkCards
    from modules.jobs.ray_pool import RayPool
    from modules.scripts.runner import ScriptRunner
    from modules.outputs.gallery import GalleryIndex
    from modules.network import ServerAccess
    from modules.settings import SettingsStore
    from modules.training.service import TrainingService

log = logging.getLogger("webui")
RESTART_EXIT_CODE = 3  # main()'s answer to "Apply and restart"; launch.py (its RESTART_EXIT_CODE) then starts a fresh process


@dataclass
class App:
    paths: Paths
    models: "ModelManager"
    queue: "JobQueue"
    service: "GenerationService"
    settings: "SettingsStore"
    gallery: "GalleryIndex"
    extras: "ExtrasService"
    startup: "Job | None" = None  # the job that loads the first model
    ui_warnings: list[str] = field(default_factory=list)  # from ui-config.json, when the page was built
    logins: bool = False  # --gradio-auth/--api-auth: outputs and the Gallery are per user
    access: "ServerAccess | None" = None  # what visitors may do with the server's folders (None: a local server, everything)
    downloads: "Downloads | None" = None  # model downloads running in the background (the page's Models section)
    default_download: "FetchProgress | None" = None  # first start's fetch of the default checkpoint, while there is one
    login_limits: LoginLimits = field(default_factory=LoginLimits)  # wrong-password back-off, shared by the page's and the API's log-ins
    interrogate: "InterrogateService | None" = None  # Interrogate CLIP / DeepBooru (models/BLIP, CLIP, deepbooru)
    scripts: "ScriptRunner | None" = None  # the Script menu and the API's script_name (modules/scripts)
    extensions: "LoadedExtensions | None" = None  # the enabled extensions' scripts, callbacks, settings, page code (modules/extensions)
    extension_dirs: "ExtensionDirs | None" = None  # extensions-builtin/ and <data-dir>/extensions/
    args: "argparse.Namespace | None" = None  # the parsed flags (the extension switches read --disable-*-extensions)
    restart_requested: threading.Event = field(default_factory=threading.Event)  # set by request_restart: main() returns RESTART_EXIT_CODE
    ray: "RayPool | None" = None  # Ray workers (--ray-address, several --device-id): generation jobs run on them
    training: "TrainingService | None" = None  # LoRA training jobs and their run folders (the Train tab, /sdapi/v1/train/lora)

    @functools.cached_property
    def extension_manager(self) -> "ExtensionManager":
        """Installing, updating and switching extensions (the Extensions tab, GET /sdapi/v1/extensions)."""
        from modules.extensions.layout import ExtensionDirs
        from modules.extensions.manage import ExtensionManager

        return ExtensionManager(self.extension_dirs or ExtensionDirs.for_paths(self.paths), self.settings, self.access, args=self.args)

    @functools.cached_property
    def localizations(self) -> "Localizations":
        """The UI translations: configs/localizations, --localizations-dir, the enabled extensions' (modules/localization.py)."""
        from modules.localization import Localizations

        return Localizations.for_app(self.paths, self.extensions)

    @functools.cached_property
    def network_cards(self) -> "NetworkCards":
        """The Extra networks cards' data (modules/models/network_cards.py), one for both tabs and the
        picture route, so a LoRA's header and a preview's thumbnail are read once."""
        from modules.models.network_cards import NetworkCards

        return NetworkCards(self.service.libraries, self.models)

    @property
    def restartable(self) -> bool:
        """Whether something starts the server again when it stops for a restart (launch.py sets
        SD_WEBUI_RESTART, as A1111's webui.sh does)."""
        return bool(os.environ.get("SD_WEBUI_RESTART"))

    def request_restart(self) -> None:
        """"Apply and restart": stop the queue and the server gracefully; main() then returns
        RESTART_EXIT_CODE and launch.py runs the extensions' install steps and starts a fresh
        process. Refused (ValueError) on a shared server, or when nothing would start it again."""
        if self.access is not None:
            self.access.require_extension_access("Restarting the server")
        if not self.restartable:
            raise ValueError("This server was not started by launch.py (webui.sh / webui.bat), so it cannot start itself again: "
                             "stop it and start it again by hand.")
        log.info("Restarting the server, as asked from the page.")
        self.restart_requested.set()

    @property
    def controlnet(self) -> "ControlNetService | None":
        """ControlNet units' models and preprocessors: the generation service's, which its jobs use."""
        return self.service.controlnet

    @classmethod
    def create(cls, args) -> "App":
        """Everything cheap. torch, diffusers and the model load in `start()`, on the worker,
        while the main thread imports gradio and starts serving."""
        from modules.jobs.queue import JobQueue
        from modules.jobs.generation_task import GenerationService

        from modules.settings import SettingsStore

        paths = Paths.from_args(args)
        paths.ensure()
        settings = SettingsStore.open(paths.settings)
        from modules.network import ServerAccess

        access = ServerAccess.from_args(args, paths.data_dir)
        settings.add_guard(access.check_setting)
        settings.add_guard(lambda key, value: access.check_limit(key, value, settings.get(key)))

        models = cls.models_for(args, paths)
        hashes = models.hashes
        from modules.jobs.generation_task import register_generation_jobs
        from modules.jobs.store import JobStore
        from modules.training.service import register_training_jobs

        queue = JobQueue(store=JobStore(paths.data_dir / "queue.sqlite3"))
        logins = bool(args.gradio_auth or getattr(args, "gradio_auth_path", None) or args.api_auth)  # then each user gets own folders
        service = GenerationService(models, OutputSettings.from_values(settings.values), paths.data_dir,
                                    console_progress=not args.disable_console_progressbars, libraries=cls.libraries(paths, hashes, args),
                                    user_folders=logins)
        from modules.jobs.extras_task import ExtrasService
        from modules.outputs.gallery import GalleryIndex

        cls.add_model_addons(service, paths, args, settings)
        extras = ExtrasService(paths.outputs_dir / "extras-images", user_folders=logins, upscalers=service.upscalers,  # bind_settings sets the configured folder
                               faces=service.libraries.faces)
        cls.bind_settings(settings, service, extras)
        register_generation_jobs(queue, service)
        ray = cls.ray_pool_for(args, paths, queue, service, settings, models)
        downloads = cls.downloads_for(paths, models, console=not args.disable_console_progressbars)
        from modules.jobs.interrogate_task import InterrogateService
        from modules.models.downloadable import model_folders

        interrogate = InterrogateService.for_folders(model_folders(paths), lambda: settings.values,
                                                     use_cpu=bool({"all", "interrogate"} & set(args.use_cpu)), no_half=args.no_half,
                                                     device_id=args.device_id)
        from modules.scripts.runner import ScriptRunner

        extension_dirs, extensions = cls.extensions_for(paths, settings, service, args)
        scripts = ScriptRunner.for_app(queue, service, settings, interrogator=interrogate, registry=cls.script_registry(extensions))
        training = cls.training_for(paths, models, service, access, args)
        register_training_jobs(queue, training)
        app = cls(paths, models, queue, service, settings, GalleryIndex(paths.outputs_dir, paths.gallery_index), extras, logins=logins,
                  downloads=downloads, access=access, interrogate=interrogate, scripts=scripts, extensions=extensions,
                  extension_dirs=extension_dirs, args=args, ray=ray, training=training)
        settings.add_guard(app.localizations.check_setting)  # the localization setting names a file that is there
        return app

    @staticmethod
    def training_for(paths: Paths, models: "ModelManager", service: "GenerationService", access: "ServerAccess",
                     args) -> "TrainingService":
        """LoRA training into models/Lora, run folders under <data-dir>/train; a saved LoRA
        joins the LoRA list at once."""
        from modules.training.service import TrainingService

        training = TrainingService(models, paths.loras, paths.data_dir, paths.models_dir, access=access,
                                   console=not args.disable_console_progressbars)
        loras = service.libraries.loras
        if loras is not None:
            training.on_saved = lambda path: loras.refresh()
        return training

    @staticmethod
    def models_for(args, paths: Paths) -> "ModelManager":
        """The checkpoints of `paths` (and the shipped demo model) on the device the flags pick,
        probed on first use. Also what each Ray worker builds over its own machine's folders."""
        from modules.demo.embedded import EMBEDDED_PATH
        from modules.models.catalog import HashCache
        from modules.models.flow_loader import PartFolders
        from modules.models.manager import ModelManager

        def devices():
            from modules.generation.devices import device_settings

            found = device_settings(
                use_cpu=bool({"all", "sd"} & set(args.use_cpu)), device_id=args.device_id, precision=args.precision,
                no_half=args.no_half, no_half_vae=args.no_half_vae, xformers=args.xformers,
                medvram=args.medvram, medvram_sdxl=args.medvram_sdxl, lowvram=args.lowvram,
                always_high_vram=args.always_high_vram, always_normal_vram=args.always_normal_vram, always_low_vram=args.always_low_vram,
            )
            if found.device.type == "cpu":
                log.warning("No CUDA or MPS device: running on the CPU in fp32 (slow for real models).")
            return found

        hashes = HashCache(paths.hash_cache, hashing=not args.no_hashing)
        parts = PartFolders((paths.model_dir("text_encoder"),), (paths.vaes,))  # Flux/SD3 files' encoders and VAE, as Forge keeps them
        return ModelManager(paths.ckpt_dirs, paths.configs_dir, devices, hashes, extra_ckpt=args.ckpt, builtin=(EMBEDDED_PATH,),
                            parts=parts)

    @classmethod
    def add_model_addons(cls, service: "GenerationService", paths: Paths, args, settings) -> None:
        """The upscaler models (models/ESRGAN, RealESRGAN, ...; listed now, loaded on first use)
        for Extras and hires fix, and ControlNet, on `service`, following `settings` (anything
        with `values` and `on_change`); a checkpoint switch or unload frees them and the face
        restorers' GPU memory; the speed options follow `settings` too. Also how a Ray worker equips
        its service."""
        from modules.generation.params import LATENT_UPSCALERS
        from modules.postprocessing.upscalers import library_for

        models = service.models
        service.upscalers = library_for(paths, cpu=bool({"all", "esrgan"} & set(args.use_cpu)), half=not args.no_half,
                                        console=not args.disable_console_progressbars, reserved=LATENT_UPSCALERS, device_id=args.device_id)
        service.upscalers.models.use_settings(settings.values)
        settings.on_change(service.upscalers.models.use_settings)
        models.add_unload_listener(service.upscalers.models.unload)
        if service.libraries.faces is not None:
            models.add_unload_listener(service.libraries.faces.unload)
        service.controlnet = cls.controlnet_for(paths, settings, cpu=bool({"all", "controlnet"} & set(args.use_cpu)))
        models.add_unload_listener(service.controlnet.unload)
        from modules.generation.speed import SpeedOptions

        models.use_speed(SpeedOptions.from_settings(settings.values, args))  # Settings > Optimizations, flags winning
        settings.on_change(lambda _changed: models.use_speed(SpeedOptions.from_settings(settings.values, args)))

    @staticmethod
    def ray_pool_for(args, paths: Paths, queue: "JobQueue", service: "GenerationService", settings: "SettingsStore",
                     models: "ModelManager") -> "RayPool | None":
        """With --ray-address or several --device-id: generation jobs go to Ray workers (one per
        GPU), the rest stay on this process's worker. None otherwise (Ray is not imported)."""
        from modules.options import ray_mode

        if not ray_mode(args):
            return None
        from modules.jobs.ray_pool import PoolOptions, RayPool, remote_spec_for
        from modules.jobs.ray_worker import WorkerSetup

        flags = [flag for flag, on in (("--no-half", args.no_half), ("--no-half-vae", args.no_half_vae), ("--xformers", args.xformers),
                                       ("--medvram", args.medvram), ("--medvram-sdxl", args.medvram_sdxl), ("--lowvram", args.lowvram),
                                       ("--always-high-vram", args.always_high_vram), ("--always-normal-vram", args.always_normal_vram),
                                       ("--always-low-vram", args.always_low_vram), ("--opt-channelslast", args.opt_channelslast),
                                       ("--no-tf32", args.no_tf32), ("--unet-in-fp8-e4m3fn", args.unet_in_fp8_e4m3fn),
                                       ("--unet-in-fp8-e5m2", args.unet_in_fp8_e5m2), ("--no-hashing", args.no_hashing)) if on]
        flags += ["--precision", args.precision]
        flags += [part for flag, value in (("--compile", args.compile), ("--compile-mode", args.compile_mode)) if value for part in (flag, value)]
        models_dir = args.ray_models_dir or args.models_dir
        path_flags = tuple((flag, str(value)) for flag, value in (("--ckpt-dir", args.ckpt_dir), ("--ckpt", args.ckpt), ("--lora-dir", args.lora_dir),
                                                                  ("--vae-dir", args.vae_dir), ("--embeddings-dir", args.embeddings_dir)) if value)
        setup = WorkerSetup(tuple(flags), str(paths.data_dir), str(models_dir) if models_dir else None, max(0, args.ray_worker_threads),
                            path_flags=path_flags)
        ids = tuple(i for i in args.device_ids if i != "all")
        options = PoolOptions(args.ray_address, ids, max(0, args.ray_cpu_workers), args.ray_dashboard, setup)
        queue.send_generation(remote_spec_for(models, service))  # the in-process worker keeps Extras, Interrogate, scripts' own work
        selected = lambda: models.selected.filename if models.selected is not None else None  # noqa: E731
        return RayPool(options, queue, service, lambda: dict(settings.values), selected)

    @staticmethod
    def extensions_for(paths: Paths, settings: "SettingsStore", service: "GenerationService", args) -> tuple:
        """Load the enabled extensions (built-in first): their settings join config.json's, their
        always-on scripts and callbacks reach every job through the generation service."""
        from modules.extensions.layout import ExtensionDirs
        from modules.extensions.loader import load_extensions

        dirs = ExtensionDirs.for_paths(paths)
        loaded = load_extensions(dirs, settings.values, args)
        settings.add_definitions(loaded.settings)
        service.extensions = loaded
        service.settings_values = lambda: dict(settings.values)
        return dirs, loaded

    @staticmethod
    def script_registry(loaded: "LoadedExtensions"):
        """The Script menu: every enabled extension's selectable scripts in load order. A second
        script with a title already taken is left out, and its extension's error says so."""
        from modules.scripts.registry import ScriptRegistry

        registry = ScriptRegistry()
        for script in loaded.selectable():
            try:
                registry.add(script)
            except ValueError as exc:
                owner = getattr(script, "extension", "") or "?"  # the loader names each extension's scripts
                log.error("Extension '%s': %s", owner, exc)
                loaded.errors.setdefault(owner, str(exc))
        return registry

    @staticmethod
    def controlnet_for(paths: Paths, settings: "SettingsStore", cpu: bool = False) -> "ControlNetService":
        """ControlNets from models/ControlNet (listed now, loaded on first use) and the
        preprocessors with their annotator weights in models/ControlNetPreprocessor."""
        from modules.controlnet.models import ControlNetLibrary
        from modules.controlnet.preprocessors import Preprocessors
        from modules.controlnet.service import ControlNetService

        library = ControlNetLibrary.for_paths(paths)
        preprocessors = Preprocessors(paths.model_dir("ControlNetPreprocessor"), device="cpu")
        controlnet = ControlNetService(library, preprocessors, annotator_device="cpu" if cpu else "auto")
        controlnet.use_settings(settings.values)
        settings.on_change(controlnet.use_settings)
        return controlnet

    @staticmethod
    def bind_settings(settings: "SettingsStore", service: "GenerationService", extras: "ExtrasService") -> None:
        """config.json's values reach the services now and on every change. A VAE named in the
        file that is no longer there leaves "Automatic" in use, with a warning (the file keeps it)."""
        start = {k: v for k, v in settings.values.items() if k != "sd_vae"}
        service.use_settings(start)
        try:
            service.use_settings({"sd_vae": settings["sd_vae"]})
        except ValueError as exc:
            settings.warnings.append(f"{settings.path.name}: {exc} \"Automatic\" is used.")
            log.warning("%s", settings.warnings[-1])

        def configure_extras(_changed: dict) -> None:  # after the service has taken the change
            saving = service.settings
            extras.configure(directory=saving.resolve(service.data_dir, saving.outdir_extras_samples), file_format=saving.samples_format,
                             jpeg_quality=saving.jpeg_quality, use_original_name_batch=saving.use_original_name_batch, save_txt=saving.save_txt)

        configure_extras(start)
        settings.on_change(service.use_settings)
        settings.on_change(configure_extras)

    @staticmethod
    def libraries(paths: Paths, hashes, args=None) -> "Libraries":
        """LoRAs, embeddings, VAEs and styles from their folders (listing only: files load when used)."""
        from modules.generation.styles import StyleStore
        from modules.jobs.generation_task import Libraries
        from modules.models.embeddings import EmbeddingLibrary
        from modules.models.lora import LoraLibrary
        from modules.models.vae import VaeLibrary
        from modules.postprocessing.face_restoration import FaceRestoration

        return Libraries(LoraLibrary((paths.loras,), hashes), EmbeddingLibrary((paths.embeddings,), hashes), VaeLibrary((paths.vaes,), hashes),
                         StyleStore(paths.styles_files), faces=FaceRestoration.for_paths(paths, face_device(args)), vae_approx=paths.model_dir("VAE-approx"))

    @staticmethod
    def downloads_for(paths: Paths, models: "ModelManager", console: bool = True) -> "Downloads":
        """Downloads into the models/ folders. A finished checkpoint joins the list at once (the
        manager rescans safely from any thread); LoRA, VAE and embedding lists pick new files up
        on their next refresh."""
        from modules.models.downloadable import CHECKPOINT_FOLDER, Catalog, model_folders
        from modules.models.downloads import Downloads

        try:
            catalog = Catalog.load()
        except ValueError as exc:
            log.error("%s", exc)
            catalog = Catalog((), "")

        def rescan(folder: str, status) -> None:
            if status.state == "done" and folder == CHECKPOINT_FOLDER:
                models.refresh()

        return Downloads(model_folders(paths), catalog, console=console, hashes=models.hashes, on_finished=rescan)

    def fetch_default_checkpoint(self) -> "FetchProgress | None":
        """A1111's first start: with no checkpoint of the user's own, fetch the catalog's default
        (SD 1.5) in the background. The page starts at once on the demo model; the download
        joins the checkpoint list when it is done, and a failure (no network) is one log line."""
        default = self.downloads.catalog.default if self.downloads else None
        if default is None or self.models.has_user_checkpoint():
            return None
        log.info("No checkpoint of your own in %s: downloading %s (%s, %.1f GB) in the background; the demo model is used meanwhile. "
                 "--no-download-sd-model skips this.", self.paths.ckpt_dirs[0], default.title, default.filename, default.size / 1e9)
        self.default_download = self.downloads.start(
            default.name, failure_note="Carrying on with the demo model; put a checkpoint in models/Stable-diffusion or use --download.")
        return self.default_download

    def start(self, ckpt: str | None = None, fetch_default: bool = False) -> "Job":
        """Queue the start-up work first, so any generation waits for it: the tiny model when
        there is no checkpoint at all, then the first model, then hashing the rest. With
        `fetch_default` (and no `ckpt`), also fetch the default checkpoint in the background."""

        if self.ray is not None:  # the workers load models; this process only selects one, before restored jobs ask for it
            self.models.ensure_default()
            self.select_initial_model(ckpt)

        def start_up(_job) -> None:
            if self.ray is not None:
                self.ray.start(on_failure=self.ray_failed)
            else:
                self.models.ensure_default()
                self.load_initial_model(ckpt)
            if self.models.hashes.hashing:
                threading.Thread(target=self.models.hash_all, name="hash-checkpoints", daemon=True).start()

        self.startup = self.queue.submit("load_model", start_up)
        from modules.training.embedding_trainer import EmbeddingService, register_embedding_jobs

        register_embedding_jobs(self.queue, EmbeddingService.for_app(self))
        for job in self.queue.restore():  # jobs left waiting by the last run go after the start-up work
            if self.training is not None:
                self.training.watch(job)  # a LoRA run cancelled while it waits says so in its folder
        if fetch_default and not ckpt:
            self.fetch_default_checkpoint()
        return self.startup

    def ray_failed(self, exc: Exception) -> None:
        """Ray could not be reached or started: generate in this process rather than leave the
        jobs waiting."""
        log.error("Could not start the Ray workers (%s): generation jobs run in this process instead.", exc)
        self.queue.send_generation(None)

    def select_initial_model(self, query: str | None) -> None:
        """Ray mode: choose the checkpoint jobs use (the asked-for one, config.json's, the first
        in start-up order) without loading it here; the workers load it."""
        saved = self.settings["sd_model_checkpoint"]
        for title in [query] if query else [*([saved] if saved else []), *(c.title for c in self.models.startup_order())]:
            if self.models.find(title) is not None:
                self.models.select(title)
                return

    def load_initial_model(self, query: str | None) -> None:
        """Load the asked-for checkpoint, else the first one that loads: one broken file in
        models/ must not leave the server without a model (the page can still pick another)."""
        saved = self.settings["sd_model_checkpoint"]  # config.json: the model in use when the app last stopped
        candidates = [query] if query else [*([saved] if saved and self.models.find(saved) else []), *(c.title for c in self.models.startup_order())]
        for title in candidates:
            try:
                self.models.load(title)
                return
            except ValueError as exc:
                log.error("%s", exc)

    def warnings(self) -> list[str]:
        """Problems found in the settings files at start, for the Settings tab to show."""
        return [*self.settings.warnings, *self.ui_warnings]

    def build_asgi(self, args=None):
        """The one ASGI app: the A1111 API (with --api or --nowebui) and the page (unless --nowebui)."""
        from fastapi import FastAPI
        from fastapi.middleware.cors import CORSMiddleware

        from modules.api.auth import parse_users
        from modules.api.body_limit import BodyLimit
        from modules.api.routes import ApiState, add_docs, build_router, install_error_handlers

        args = args or parse_args([])
        with_api = args.api or args.nowebui
        app = FastAPI(title="Stable Diffusion web UI", version=VERSION, docs_url=None, redoc_url=None, openapi_url=None)
        if args.cors_allow_origins or args.cors_allow_origins_regex:
            origins = [o.strip() for o in (args.cors_allow_origins or "").split(",") if o.strip()]
            app.add_middleware(CORSMiddleware, allow_origins=origins, allow_origin_regex=args.cors_allow_origins_regex, allow_methods=["*"],
                               allow_headers=["*"], allow_credentials=True)
        if with_api:
            install_error_handlers(app)
            flags = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
            flags["api_auth"] = "***" if args.api_auth else None
            flags["gradio_auth"] = "***" if args.gradio_auth else None
            state = ApiState(self.models, self.queue, self.service, flags, self.paths.data_dir, self.settings,
                             users=parse_users(args.api_auth), extras=self.extras, login_limits=self.login_limits)
            state.interrogate = self.interrogate
            state.controlnet = self.controlnet  # alwayson_scripts.controlnet and the extension's routes
            state.scripts = self.scripts  # script_name / script_args, /scripts, /script-info
            state.extensions = self.extensions  # alwayson_scripts of the extensions
            state.extension_manager = self.extension_manager  # GET /extensions
            app.include_router(build_router(state))
            from modules.controlnet.routes import build_controlnet_router

            app.include_router(build_controlnet_router(state))
            from modules.training.embedding_routes import build_embedding_router
            from modules.training.routes import build_training_router

            state.access = self.access
            state.training = self.training
            app.include_router(build_embedding_router(state))
            app.include_router(build_training_router(state))
            settings = self.settings
            app.add_middleware(BodyLimit, limits=lambda: (settings["limit_request_megabytes"], settings["limit_image_request_megabytes"]))
            add_docs(app, state.users, self.login_limits)
        if not args.nowebui:
            app = self._mount_page(app, args)
        elif self.extensions is not None:
            self.extensions.callbacks.app_started(None, app)  # extensions' routes
        return self._guard(app, args, with_api)

    def _guard(self, app, args, with_api: bool):
        """The network rules over the whole app (modules/network.py): the page's log-in on every
        gradio route, no fetching of other sites, the --subpath prefix (outermost); with a page
        log-in, the back-off on wrong passwords (modules/login_limits.py); with log-ins, each
        user's files served to that user only (modules/user_files.py)."""
        from starlette.routing import Mount

        from modules.api.auth import parse_users
        from modules.login_limits import PageLoginLimit
        from modules.network import GradioGuard, Subpath, gradio_session_user, page_users, subpath
        from modules.user_files import HandedFiles, OutputOwners, UserFiles

        gradio_app = next((r.app for r in app.routes if isinstance(r, Mount) and hasattr(r.app, "tokens")), None)
        session = gradio_session_user(gradio_app) if gradio_app is not None and gradio_app.auth else None
        if self.logins:  # added first: innermost, it sees only requests the guards let through
            from gradio.utils import get_upload_folder

            outputs = OutputOwners.of(self.paths.outputs_dir, self.gallery.trash_dir, [*page_users(args), *parse_users(args.api_auth)],
                                      shared=lambda: bool(self.settings["gallery_show_all_users"]))
            handed = HandedFiles([gradio_app.uploaded_file_dir, get_upload_folder()]) if session is not None else None
            app.add_middleware(UserFiles, outputs=outputs, session_user=session, handed=handed)
        if session is not None:
            app.add_middleware(PageLoginLimit, limits=self.login_limits)
        # With a page log-in and no --api-auth, the API's schema and docs need the page's log-in: the log-in
        # page must not hand anonymous visitors the generation endpoints' schemas.
        docs = ("/docs", "/redoc", "/openapi.json") if args.api_auth or session is None else ()
        app.add_middleware(GradioGuard, session_user=session, api_paths=("/sdapi", "/controlnet", *docs) if with_api else ())
        prefix = subpath(getattr(args, "subpath", None))
        if prefix:
            app.add_middleware(Subpath, prefix=prefix)
        return app

    def _mount_page(self, app, args):
        import gradio as gr

        from modules.network import page_users, subpath
        from modules.ui.page import CSS, HEAD, build_page
        from modules.ui.network_previews import build_network_previews_router

        from modules.ui.ui_config import UiConfig

        page = build_page(self)
        self.ui_warnings = UiConfig(self.paths.ui_config).apply(page)  # control defaults, before the page is served
        page.queue(default_concurrency_limit=None)
        head, css = HEAD, CSS
        if self.extensions is not None:
            # Before the page is mounted at "/": routes added after it would never be reached.
            self.extensions.callbacks.app_started(page, app)
            head, css = head + self.extensions.head(), css + self.extensions.css()
        app.include_router(build_network_previews_router(self))  # GET /extra-networks/thumb: the Extra networks cards' pictures
        from modules.ui.localization import LocalizedPage, active_name, asked_name, page_data
        from modules.ui.localization_routes import build_localization_router
        from modules.ui.notifications import build_notifications_router

        app.include_router(build_localization_router(self))  # GET /internal/localization
        app.include_router(build_notifications_router(self))  # GET /internal/notification(.mp3): the job-done sound
        settings, localizations = self.settings, self.localizations
        app.add_middleware(LocalizedPage, page_path="/",  # the page's language in its HTML, before gradio reads navigator.language
                           data_for=lambda query: page_data(active_name(settings, localizations, asked_name(query)), localizations))
        users = page_users(args)  # --gradio-auth and --gradio-auth-path
        auth = list(users.items()) or None
        if getattr(args, "theme", None):  # --theme: gradio reads it from the page address (?__theme=dark)
            from modules.ui.theme import ForcedTheme

            app.add_middleware(ForcedTheme, theme=args.theme, page_path="/")
        return gr.mount_gradio_app(app, page, path="/", allowed_paths=[str(self.paths.outputs_dir)], css=css, head=head, auth=auth,
                                   root_path=subpath(getattr(args, "subpath", None)) or None)


def face_device(args):
    """Where GFPGAN/CodeFormer run: the app's GPU (--device-id), or the CPU with A1111's
    --use-cpu all/gfpgan/codeformer. None (found at first use) without flags."""
    if args is None:
        return None
    on_cpu = bool({"all", "gfpgan", "codeformer"} & set(args.use_cpu))

    def device():
        from modules.generation.devices import pick_device

        return pick_device(on_cpu, args.device_id)

    return device


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=getattr(logging, str(args.loglevel).upper(), logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from modules.network import exposure_warnings, page_users, subpath, tls_options

    try:  # the LAN flags' files and values, before anything starts
        tls, _, _ = tls_options(args), page_users(args), subpath(args.subpath)
    except ValueError as exc:
        print(f"ERROR: {exc}", file=sys.stderr, flush=True)
        return 2
    app = App.create(args)
    for warning in exposure_warnings(args):
        log.warning("%s", warning)
    app.start(str(args.ckpt) if args.ckpt else None, fetch_default=not args.no_download_sd_model)
    host = args.server_name or ("0.0.0.0" if args.listen else "127.0.0.1")
    port = args.port or (7861 if args.nowebui else 7860)

    asgi = app.build_asgi(args)
    local_url = f"{'https' if tls else 'http'}://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    print(f"Running on local URL:  {local_url}", flush=True)
    from modules.sharing import StartupLinks

    links = StartupLinks(args, local_url)  # once the server answers: --share/--cloudflared tunnels, --autolaunch
    links.start()
    # On SIGTERM uvicorn shuts down, then ends the process with the signal (no finally, no atexit):
    # the tunnels close at the app's shutdown, so none outlives the server.
    asgi.router.on_shutdown.append(links.close)
    try:
        serve(asgi, app.queue, host=host, port=port, log_level="warning", timeout_keep_alive=30, timeout_graceful_shutdown=3,
              stop=app.restart_requested, **tls)
    finally:
        links.close()
    app.queue.shutdown()
    if app.ray is not None:
        app.ray.stop()
    return RESTART_EXIT_CODE if app.restart_requested.is_set() else 0


def serve(asgi, queue: "JobQueue", stop: threading.Event | None = None, **config) -> None:
    """uvicorn, but Ctrl+C or SIGTERM first stops the queue: the running job is cut off and
    every waiting client answered (their jobs stay queued on disk for the next start), so
    the server stops in seconds rather than after the last queued job. Setting `stop` (a
    restart asked from the page) shuts down the same way."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # On a thread: the signal may land while this thread holds a lock stop() needs.
            threading.Thread(target=queue.stop, name="stop-queue", daemon=True).start()
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(asgi, **config))
    if stop is not None:
        def watch() -> None:
            stop.wait()
            queue.stop()
            server.should_exit = True

        threading.Thread(target=watch, name="restart-watch", daemon=True).start()
    server.run()


if __name__ == "__main__":
    sys.exit(main())
