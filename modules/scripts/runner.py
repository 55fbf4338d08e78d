"""Starting scripts for the page and the API: find the script, read its arguments, check the
request (all before any job is queued), then run it in a thread of its own."""

from __future__ import annotations

import asyncio
import logging
import threading
import traceback
from typing import TYPE_CHECKING, Callable

from modules.scripts.base import Script, ScriptEnv, ScriptRequest, ScriptResult
from modules.scripts.args import parse_args
from modules.scripts.context import ScriptContext, ScriptStopped
from modules.scripts.registry import ScriptRegistry

if TYPE_CHECKING:
    from modules.jobs.generation_task import GenerationService
    from modules.jobs.queue import Job, JobQueue

log = logging.getLogger(__name__)


class ScriptRun:
    """One script run going on in its own thread: await `wait()`, then read `result` or `error`."""

    def __init__(self, script: Script, context: ScriptContext):
        self.script, self.context = script, context
        self.done = threading.Event()
        self.result: ScriptResult | None = None
        self.error: str | None = None
        self._waiters: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def _finish(self) -> None:
        with self._lock:
            self.done.set()
            waiters, self._waiters = self._waiters, []
        for wake in waiters:
            wake()

    async def wait(self) -> None:
        """Until the run ends, without holding a server thread."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(lambda: future.done() or future.set_result(None))
            except RuntimeError:  # the loop closed: nobody waits any more
                pass

        with self._lock:
            if self.done.is_set():
                return
            self._waiters.append(wake)
        await future

    def interrupt(self) -> None:
        self.context.stop()

    @property
    def server_stopping(self) -> bool:
        """The queue stopped under the run: its saved jobs stay queued for the next start."""
        return self.context.server_stopping

    @property
    def current(self) -> "Job | None":
        return self.context.current

    @property
    def progress(self) -> tuple[int, int, str]:
        c = self.context
        return c.done, c.total, c.text


class ScriptRunner:
    """The app's scripts and what they run on: the queue, the generation service, the server's lists."""

    def __init__(self, queue: "JobQueue", service: "GenerationService", env: ScriptEnv, registry: ScriptRegistry | None = None):
        from modules.scripts.registry import builtin_scripts

        self.queue, self.service, self.env = queue, service, env
        self.registry = registry if registry is not None else ScriptRegistry(builtin_scripts())

    @classmethod
    def for_app(cls, queue: "JobQueue", service: "GenerationService", settings, interrogator=None,
                registry: ScriptRegistry | None = None) -> "ScriptRunner":
        """Scripts over the app's queue and service, with lists read from its models, upscalers,
        styles and settings (`settings`: the SettingsStore) when a script asks. `registry`: the
        loaded extensions' scripts (the built-in classic scripts when not given)."""
        from modules.generation.params import HIRES_UPSCALERS

        models = service.models

        def find_checkpoint(name: str) -> str:
            return models.require(name).title

        def upscalers() -> list[str]:
            return list(service.upscalers.registry.names) if service.upscalers is not None else ["None", "Lanczos", "Nearest"]

        def upscale(image, name: str, width: int, height: int):
            from modules.generation.upscaling import UpscalerRegistry

            # Without the app's library, the built-in resamplers that upscalers() lists.
            registry = service.upscalers.registry if service.upscalers is not None else UpscalerRegistry()
            return registry.get(name).resize_to(image, (width, height))

        def check_job(params):
            checked = type(params).create(service.hires_upscalers(), **params.model_dump())
            service.check_limits(checked)
            return checked

        styles = service.libraries.styles
        env = ScriptEnv(
            checkpoints=models.titles, find_checkpoint=find_checkpoint,
            vaes=lambda: service.libraries.vaes.choices() if service.libraries.vaes is not None else ["Automatic", "None"],
            hires_upscalers=lambda: [*HIRES_UPSCALERS, *service.hires_upscalers()], upscalers=upscalers,
            styles=lambda: list(styles.names) if styles is not None else [],
            max_jobs=lambda: int(settings["script_max_jobs"]), upscale=upscale, check_job=check_job, interrogator=interrogator,
            max_pixels=lambda: service.limits.max_pixels,
        )
        return cls(queue, service, env, registry)

    def titles(self, kind: str) -> list[str]:
        return [s.title for s in self.registry.for_kind(kind)]

    def script(self, title: str, kind: str) -> Script:
        return self.registry.find(title, kind)

    def describe(self) -> list[dict]:
        """A1111's /sdapi/v1/script-info: each script once per tab it shows on."""
        info = []
        for kind in ("txt2img", "img2img"):
            for script in self.registry.for_kind(kind):
                args = [a.describe() for a in script.args(self.env, kind == "img2img")]
                info.append({"name": script.name, "is_alwayson": False, "is_img2img": kind == "img2img", "args": args})
        return info

    def start(self, title: str, request: ScriptRequest, args: list | dict | None, user: str = "",
              on_submit: Callable[["Job"], None] | None = None) -> ScriptRun:
        """Read and check everything now (ValueError, before any job is queued), then run."""
        script = self.script(title, request.kind)
        values = parse_args(script.title, script.args(self.env, request.img2img), args)
        run_script = script.prepare(request, values, self.env)
        context = ScriptContext(request, self.env, self.queue, self.service, user, on_submit)
        run = ScriptRun(script, context)

        def work() -> None:
            try:
                run.result = run_script(context)
                if context.stopped and run.result is not None:
                    run.result.interrupted = True
            except ScriptStopped:
                run.result = ScriptResult(request.params, interrupted=True)
            except ValueError as exc:
                run.error = str(exc)
            except Exception as exc:  # keep serving whatever a script does
                log.error("Script %s failed:\n%s", script.title, traceback.format_exc())
                run.error = f"{type(exc).__name__}: {exc}"
            finally:
                if run.error is not None:
                    context.stop()  # its queued jobs are no use now
                run._finish()

        threading.Thread(target=work, name=f"script-{script.name}", daemon=True).start()
        return run
