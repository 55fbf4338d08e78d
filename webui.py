"""Build the app from command-line options and serve it: the gradio page on one port.

The `App` object owns everything stateful (settings, the loaded model, the job queue) and
hands it to the parts that need it; there are no module-level globals to reach into.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import logging  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from modules.options import OutputSettings, Paths, parse_args  # noqa: E402
from modules.version import VERSION  # noqa: E402

if TYPE_CHECKING:
    from modules.jobs.queue import Job, JobQueue
    from modules.jobs.generation_task import GenerationService, Libraries
    from modules.models.manager import ModelManager
    from modules.jobs.extras_task import ExtrasService
    from modules.outputs.gallery import GalleryIndex
    from modules.settings import SettingsStore

log = logging.getLogger("webui")


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

    @classmethod
    def create(cls, args) -> "App":
        """Everything cheap. torch, diffusers and the model load in `start()`, on the worker,
        while the main thread imports gradio and starts serving."""
        from modules.jobs.queue import JobQueue
        from modules.jobs.generation_task import GenerationService
        from modules.models.catalog import HashCache
        from modules.models.manager import ModelManager

        from modules.settings import SettingsStore

        paths = Paths.from_args(args)
        paths.ensure()
        settings = SettingsStore.open(paths.settings)

        def devices():
            from modules.generation.devices import device_settings

            found = device_settings(
                use_cpu=bool({"all", "sd"} & set(args.use_cpu)), device_id=args.device_id, precision=args.precision,
                no_half=args.no_half, no_half_vae=args.no_half_vae, xformers=args.xformers,
            )
            if found.device.type == "cpu":
                log.warning("No CUDA or MPS device: running on the CPU in fp32 (slow for real models).")
            return found

        from modules.demo.embedded import EMBEDDED_PATH

        hashes = HashCache(paths.hash_cache, hashing=not args.no_hashing)
        models = ModelManager(paths.ckpt_dirs, paths.configs_dir, devices, hashes, extra_ckpt=args.ckpt, builtin=(EMBEDDED_PATH,))
        from modules.jobs.generation_task import register_generation_jobs
        from modules.jobs.store import JobStore

        queue = JobQueue(store=JobStore(paths.data_dir / "queue.sqlite3"))
        logins = bool(args.gradio_auth or getattr(args, "gradio_auth_path", None) or args.api_auth)  # then each user gets own folders
        service = GenerationService(models, OutputSettings.from_values(settings.values), paths.data_dir,
                                    console_progress=not args.disable_console_progressbars, libraries=cls.libraries(paths, hashes),
                                    user_folders=logins)
        from modules.jobs.extras_task import ExtrasService
        from modules.outputs.gallery import GalleryIndex

        extras = ExtrasService(paths.outputs_dir / "extras-images", user_folders=logins)  # bind_settings sets the configured folder
        cls.bind_settings(settings, service, extras)
        register_generation_jobs(queue, service)
        return cls(paths, models, queue, service, settings, GalleryIndex(paths.outputs_dir, paths.gallery_index), extras, logins=logins)

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
                             jpeg_quality=saving.jpeg_quality, use_original_name_batch=saving.use_original_name_batch)

        configure_extras(start)
        settings.on_change(service.use_settings)
        settings.on_change(configure_extras)

    @staticmethod
    def libraries(paths: Paths, hashes) -> "Libraries":
        """LoRAs, embeddings, VAEs and styles from their folders (listing only: files load when used)."""
        from modules.generation.styles import StyleStore
        from modules.jobs.generation_task import Libraries
        from modules.models.embeddings import EmbeddingLibrary
        from modules.models.lora import LoraLibrary
        from modules.models.vae import VaeLibrary

        return Libraries(LoraLibrary((paths.loras,), hashes), EmbeddingLibrary((paths.embeddings,), hashes), VaeLibrary((paths.vaes,), hashes),
                         StyleStore(paths.styles_files))

    def start(self, ckpt: str | None = None) -> "Job":
        """Queue the start-up work first, so any generation waits for it: the tiny model when
        there is no checkpoint at all, then the first model, then hashing the rest."""

        def start_up(_job) -> None:
            self.models.ensure_default()
            self.load_initial_model(ckpt)
            if self.models.hashes.hashing:
                threading.Thread(target=self.models.hash_all, name="hash-checkpoints", daemon=True).start()

        self.startup = self.queue.submit("load_model", start_up)
        self.queue.restore()  # jobs left waiting by the last run go after the start-up work
        return self.startup

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

        from modules.api.routes import ApiState, add_docs, build_router, install_error_handlers, parse_users

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
                             users=parse_users(args.api_auth), extras=self.extras)
            app.include_router(build_router(state))
            add_docs(app, state.users)
        if args.nowebui:
            return app
        return self._mount_page(app, args)

    def _mount_page(self, app, args):
        import gradio as gr

        from modules.api.routes import parse_users
        from modules.ui.page import CSS, HEAD, build_page

        from modules.ui.ui_config import UiConfig

        page = build_page(self)
        self.ui_warnings = UiConfig(self.paths.ui_config).apply(page)  # control defaults, before the page is served
        page.queue(default_concurrency_limit=None)
        users = parse_users(args.gradio_auth)
        auth = list(users.items()) or None
        return gr.mount_gradio_app(app, page, path="/", allowed_paths=[str(self.paths.outputs_dir)], css=CSS, head=HEAD, auth=auth)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=getattr(logging, str(args.loglevel).upper(), logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = App.create(args)
    app.start(str(args.ckpt) if args.ckpt else None)
    host = args.server_name or ("0.0.0.0" if args.listen else "127.0.0.1")
    port = args.port or (7861 if args.nowebui else 7860)

    asgi = app.build_asgi(args)
    print(f"Running on local URL:  http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}", flush=True)
    if args.autolaunch:
        import webbrowser

        threading.Timer(2.0, webbrowser.open, args=(f"http://127.0.0.1:{port}",)).start()
    serve(asgi, app.queue, host=host, port=port, log_level="warning", timeout_keep_alive=30, timeout_graceful_shutdown=3)
    app.queue.shutdown()
    return 0


def serve(asgi, queue: "JobQueue", **config) -> None:
    """uvicorn, but Ctrl+C or SIGTERM first stops the queue: the running job is cut off and
    every waiting client answered (their jobs stay queued on disk for the next start), so
    the server stops in seconds rather than after the last queued job."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # On a thread: the signal may land while this thread holds a lock stop() needs.
            threading.Thread(target=queue.stop, name="stop-queue", daemon=True).start()
            super().handle_exit(sig, frame)

    Server(uvicorn.Config(asgi, **config)).run()


if __name__ == "__main__":
    sys.exit(main())
