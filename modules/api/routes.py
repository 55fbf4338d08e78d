"""The /sdapi/v1 routes, with A1111's request and response shapes, over the app's job queue.

Generation routes submit a job and wait on that job alone; model switches are jobs too, so a
switch never lands in the middle of someone's generation. Readable request problems become
HTTP 4xx with A1111's error body ({error, detail, body, errors}); the server keeps serving.
"""

from __future__ import annotations

import html
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from modules.api.auth import user_dependency
from modules.api.models import MAX_LIST, ApiInt, Img2ImgRequest, Txt2ImgRequest, clip_skip_value, decode_image, encode_base64
from modules.generation import samplers
from modules.generation.image_input import to_mask, to_rgb
from modules.generation.params import LATENT_UPSCALERS, SETTING_FIELDS
from modules.jobs.extras_task import ExtrasService
from modules.jobs.generation_task import GenerationResult, GenerationService, saved_path_per_image
from modules.jobs.model_switch import switch_checkpoint
from modules.jobs.queue import FINISHED, Job, JobQueue, JobStatus, QueueStopped, done_future
from modules.models.manager import ModelManager
from modules.network import AccessRefused
from modules.settings import SettingsNotSaved, SettingsStore
from modules.version import VERSION

if TYPE_CHECKING:
    from modules.controlnet.service import ControlNetService
    from modules.extensions.loaded import LoadedExtensions
    from modules.extensions.manage import ExtensionManager
    from modules.scripts.base import ScriptRequest, ScriptResult
    from modules.scripts.runner import ScriptRun, ScriptRunner
    from modules.jobs.interrogate_task import InterrogateService
    from modules.login_limits import LoginLimits
    from modules.network import ServerAccess
    from modules.training.service import TrainingService

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def _bad(detail: str) -> ApiError:
    return ApiError(400, "BadRequest", detail)


@dataclass
class ApiState:
    """What the API needs from the app. `options` holds the A1111 settings the API can read
    and write; output settings go to the service, the rest are defaults for requests."""

    models: ModelManager
    queue: JobQueue
    service: GenerationService
    cmd_flags: dict[str, Any]
    data_dir: Path
    settings: SettingsStore  # config.json: GET/POST /options read and write it
    users: dict[str, str] = field(default_factory=dict)  # --api-auth, user -> password
    extras: "ExtrasService | None" = None  # the Extras tab's service; without one, the API's extras save to outputs/extras-images
    login_limits: "LoginLimits | None" = None  # the wrong-password back-off the page's log-in shares
    interrogate: "InterrogateService | None" = None  # /interrogate's models (modules/jobs/interrogate_task.py)
    controlnet: "ControlNetService | None" = None  # alwayson_scripts.controlnet and /controlnet/* (modules/controlnet/routes.py)
    extensions: "LoadedExtensions | None" = None  # the extensions' always-on scripts (alwayson_scripts by title, /script-info)
    extension_manager: "ExtensionManager | None" = None  # GET /extensions: the installed extensions and their versions
    scripts: "ScriptRunner | None" = None  # script_name / script_args (modules/scripts)
    access: "ServerAccess | None" = None  # the shared-server folder rules (training folders); None: a local server
    training: "TrainingService | None" = None  # /sdapi/v1/train/lora (modules/training/routes.py)

    @property
    def preview_every(self) -> int:
        return self.settings.preview_every()


class PngInfoRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    image: str = ""


class InterrogateRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    image: str = ""
    model: str | None = "clip"


class ExtrasOptions(BaseModel):
    """A1111's extras fields (ExtrasBaseRequest): upscaling, then GFPGAN and CodeFormer
    on the upscaled picture (A1111 1.x ignores upscale_first, and so does this); `save_images` (ours, default false as A1111's API never saves) saves the results
    to the Extras folder."""

    model_config = ConfigDict(extra="allow")
    resize_mode: ApiInt = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    upscaling_resize: float = 2.0
    upscaling_resize_w: ApiInt = 512
    upscaling_resize_h: ApiInt = 512
    upscaling_crop: bool = True
    upscaler_1: str | None = "None"
    upscaler_2: str | None = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False
    save_images: bool = False

    def extras_values(self) -> dict[str, Any]:
        from modules.generation.upscaling import ExtrasParams

        return {name: getattr(self, name) for name in ExtrasParams.model_fields}


class ExtraSingleImageRequest(ExtrasOptions):
    image: str = ""


class ExtrasImageData(BaseModel):
    data: str = ""
    name: str | None = None


class ExtraBatchImagesRequest(ExtrasOptions):
    imageList: list[ExtrasImageData] = Field([], max_length=MAX_LIST)  # noqa: N815 (A1111's name)


def add_docs(app: FastAPI, users: dict[str, str], limits: "LoginLimits | None" = None) -> None:
    """/docs, /redoc and /openapi.json, behind the API's log-in when --api-auth is set (the
    schema lists every route a LAN visitor could try)."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    guard = [Depends(user_dependency(users, limits))]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    def openapi(request: Request) -> dict:
        root = request.scope.get("root_path", "").rstrip("/")
        return {**app.openapi(), "servers": [{"url": root}]} if root else app.openapi()  # "Try it out" then keeps the prefix

    def schema_url(request: Request) -> str:  # behind a reverse proxy's --subpath prefix too
        return request.scope.get("root_path", "").rstrip("/") + "/openapi.json"

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    def docs(request: Request):
        return get_swagger_ui_html(openapi_url=schema_url(request), title=f"{app.title} - API docs")

    @app.get("/redoc", include_in_schema=False, dependencies=guard)
    def redoc(request: Request):
        return get_redoc_html(openapi_url=schema_url(request), title=f"{app.title} - API docs")


def readable(text: str, limit: int = 1000) -> str:
    """An error message fit to send: what it quotes from the request may be megabytes long or
    hold lone surrogates (JSON's "\\ud800"), which no JSON encoder writes."""
    text = str(text)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit:,} more characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def install_error_handlers(app: FastAPI) -> None:
    """A1111's error body for request problems, and X-Process-Time on every response."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        detail = readable(exc.detail)
        return JSONResponse(status_code=exc.status, content={"error": exc.error, "detail": detail, "body": "", "errors": detail})

    @app.exception_handler(QueueStopped)
    async def queue_stopped(request: Request, exc: QueueStopped):
        return await api_error(request, ApiError(503, "ServiceUnavailable", str(exc)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [readable(f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'request body'}: {e.get('msg')}", 300)
                  for e in exc.errors()[:20]]
        detail = readable("; ".join(errors) or "invalid request")
        return JSONResponse(status_code=422, content={"error": "ValidationError", "detail": detail, "body": "", "errors": errors})

    app.add_middleware(ProcessTime)
    build_schema = app.openapi

    def openapi() -> dict:
        """FastAPI's schema, with the 422 body it documents replaced by the one sent (A1111's)."""
        if app.openapi_schema is None:
            schema = build_schema()
            schema.setdefault("components", {}).setdefault("schemas", {})["HTTPValidationError"] = ERROR_BODY
        return app.openapi_schema

    app.openapi = openapi


# The body of every error answer (A1111's): `errors` lists each problem of a 422.
ERROR_BODY = {
    "title": "HTTPValidationError", "type": "object", "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "title": "Error"}, "detail": {"type": "string", "title": "Detail"},
        "body": {"type": "string", "title": "Body"},
        "errors": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}], "title": "Errors"},
    },
}


class ProcessTime:
    """A1111's X-Process-Time header, as plain ASGI middleware (starlette's BaseHTTPMiddleware
    adds a task and a copy of every response body to each request)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()

        async def timed_send(message):
            if message["type"] == "http.response.start":
                elapsed = f"{time.perf_counter() - start:.4f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"x-process-time", elapsed)]}
            await send(message)

        await self.app(scope, receive, timed_send)


def build_router(state: ApiState) -> APIRouter:
    current_user = user_dependency(state.users, state.login_limits)
    router = APIRouter(prefix="/sdapi/v1", dependencies=[Depends(current_user)], tags=["sdapi"])
    asked: dict[str, Txt2ImgRequest] = {}  # what each queued API job was asked, to answer in A1111's shape

    def check_outcome(job: Job, what: str) -> None:
        """An awaited job that did not end well, as the client's error: 503 when the server
        stopped first, 400 with the job's own message when it failed."""
        if job.status not in FINISHED:  # woken because the server is stopping
            if job.recorded:
                kept = f" stays queued and runs when the server starts again; its result will be at GET /sdapi/v1/queue/{job.id}"
            else:
                kept = " was not run"
            raise ApiError(503, "ServiceUnavailable", f"The server is stopping: {job.id}{kept}.")
        if job.status is JobStatus.FAILED:
            raise _bad(job.error or f"{what} failed")

    def respond(request: Txt2ImgRequest | None, job: Job) -> dict:
        """A1111's answer for a finished job. A job restored after a restart has no request:
        its parameters are echoed instead."""
        result: GenerationResult | None = job.result
        parameters = request.model_dump() if request is not None else (result.params.model_dump() if result is not None else {})
        if isinstance(request, Img2ImgRequest) and not request.include_init_images:
            parameters.update(init_images=None, mask=None)  # as A1111: the echo leaves the images out unless asked
        if result is None:  # interrupted before it started
            return {"images": [], "parameters": parameters, "info": json.dumps({"infotexts": [], "all_seeds": []})}
        settings = state.service.settings
        send = request is None or request.send_images is not False
        images = _pictures_base64(result, settings.samples_format, settings.jpeg_quality) if send else []
        if send:  # as the ControlNet extension: each unit's detected map after the pictures
            from modules.controlnet.routes import detected_maps_base64

            images += detected_maps_base64(result, settings.samples_format, settings.jpeg_quality)
        info = _info(result)
        info["warnings"] = [*(request.adjustments(state.service.hires_upscalers()) if request is not None else []), *result.notes]
        return {"images": images, "parameters": parameters, "info": json.dumps(info)}

    def read_request(request: Txt2ImgRequest, kind: str) -> "ScriptRequest":
        """Validate a generation request into what a job (or a script's jobs) runs with: the
        params, init images, ControlNet units, and the checkpoint and VAE pinned now, so no
        other job can switch the model from under it before its turn."""
        from modules.controlnet.routes import units_from_request
        from modules.generation.runner import InitImages
        from modules.scripts.base import ScriptRequest

        surrogate = request.text_problem()
        if surrogate:
            raise _bad(surrogate)
        problems = request.unsupported()
        if problems:
            raise ApiError(422, "Unsupported", "Not supported by this server: " + "; ".join(problems))
        save = bool(request.save_images)
        try:
            params = request.params(state.service.prompt_settings(), state.service.hires_upscalers())
            state.service.check_limits(params)
            # the ControlNet extension's units, checked ([] when the request enables none)
            units = units_from_request(state.controlnet, request, kind == "img2img", state.service.limits.max_pixels)
            alwayson = alwayson_from_request(request, kind)
            wanted = request.wanted_checkpoint()
            checkpoint = state.models.pin(wanted)  # the job runs on it whatever others switch to before its turn
            state.service.check_checkpoints(params, checkpoint)  # its refiner / hires checkpoint beside that one
            vae = state.service.pin_vae(request.wanted_vae())
            init = None
            if kind == "img2img":
                if not request.init_images:
                    raise ApiError(404, "NotFound", "Init image not found")
                limit = state.service.limits.max_pixels
                images = tuple(to_rgb(decode_image(data, f"init_images[{i}]", limit)) for i, data in enumerate(request.init_images))
                init = InitImages(images, to_mask(decode_image(request.mask, "mask", limit)) if request.mask else None)
        except (TypeError, ValueError) as exc:
            raise _bad(str(exc)) from None
        return ScriptRequest(kind, params, init, checkpoint, vae, tuple(units), save, alwayson)

    def alwayson_from_request(request: Txt2ImgRequest, kind: str) -> tuple:
        """The extensions' always-on scripts the request names, with their arguments (422 for an
        unknown title, as A1111 answers "always on script ... not found")."""
        from modules.extensions.hook_scripts import script_title
        from modules.extensions.job_scripts import AlwaysOnArgs

        wanted = request.extension_alwayson()
        if not wanted:
            return ()
        if state.extensions is None:
            raise ApiError(422, "Unsupported", f"alwayson_scripts {sorted(t for t, _ in wanted)}: no extensions are loaded on this server.")
        found = []
        for title, args in wanted:
            try:
                script = state.extensions.find_alwayson(title, kind)
            except ValueError as exc:
                raise ApiError(422, "Unsupported", str(exc)) from None
            found.append(AlwaysOnArgs(script_title(script), tuple(args)))
        return tuple(found)

    def keep_overrides(request: Txt2ImgRequest, accepted: "ScriptRequest") -> None:
        """A1111 keeps override_settings that are not to be restored afterwards: applied once the
        request is accepted (a refused one changes nothing)."""
        if request.override_settings_restore_afterwards is not False:
            return
        try:
            wanted = request.wanted_checkpoint()
            if wanted:
                state.models.select(wanted)
            kept = {key: getattr(accepted.params, name) for name, key in SETTING_FIELDS.items()
                    if name in ("clip_skip", "emphasis") or key in (request.override_settings or {})}
            state.settings.update({**kept, "sd_vae": accepted.vae} if request.wanted_vae() else kept)
        except (TypeError, ValueError) as exc:
            raise _bad(str(exc)) from None

    def enqueue(request: Txt2ImgRequest, kind: str, user: str) -> Job:
        """Validate a generation request and queue it in the caller's lane, recorded so it
        survives a restart. The checkpoint it asks for is loaded by the job itself when its
        turn comes."""
        from modules.jobs.generation_task import img2img_payload, txt2img_payload

        if request.script_name:
            raise ApiError(422, "Unsupported", f"script_name '{request.script_name}': scripts queue many jobs; send the request to "
                                               f"/sdapi/v1/{kind}, whose answer waits for them all.")
        r = read_request(request, kind)
        keep_overrides(request, r)
        params, units, save, checkpoint, vae, alwayson = r.params, r.controlnet, r.save, r.checkpoint, r.vae, r.alwayson
        if kind == "txt2img":
            task = lambda j: state.service.run_txt2img(j, params, save=save, checkpoint=checkpoint, vae=vae, controlnet=units,  # noqa: E731
                                                       alwayson=alwayson)
            payload = txt2img_payload(params, save, checkpoint, vae, controlnet=units, alwayson=alwayson)
        else:
            init = r.init
            task = lambda j: state.service.run_img2img(j, params, init, save=save, checkpoint=checkpoint, vae=vae,  # noqa: E731
                                                       controlnet=units, alwayson=alwayson)
            payload = img2img_payload(params, init, save, checkpoint, vae, controlnet=units, alwayson=alwayson)
        job = state.queue.submit(kind, task, user=user, payload=payload)
        for old in [k for k in list(asked) if state.queue.get(k) is None]:  # the queue forgot them: so do we
            asked.pop(old, None)
        asked[job.id] = request
        return job

    def start_script(request: Txt2ImgRequest, kind: str, user: str) -> "ScriptRun":
        """A1111's script_name / script_args: the script (400 with the tab's list when unknown)
        checks its arguments before any of its jobs is queued (400 naming the argument)."""
        if state.scripts is None:
            raise _bad("Scripts are not available on this server.")
        try:
            state.scripts.script(request.script_name, kind)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        script_request = read_request(request, kind)
        try:
            run = state.scripts.start(request.script_name, script_request, request.script_args, user=user)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        keep_overrides(request, script_request)
        return run

    async def run_script(request: Txt2ImgRequest, kind: str, user: str) -> dict:
        """Start the script, wait for all its jobs without holding a server thread, and answer
        as A1111 does: grids first, then the pictures, each with its infotext."""
        run = await run_in_threadpool(start_script, request, kind, user)
        await run.wait()
        if run.server_stopping:
            raise ApiError(503, "ServiceUnavailable", "The server is stopping: the script's jobs that save pictures stay queued and run "
                                                      "when it starts again (their grid is not made).")
        if run.error is not None:
            raise _bad(run.error)
        return await run_in_threadpool(respond_script, request, run.result)

    def respond_script(request: Txt2ImgRequest, result: "ScriptResult") -> dict:
        settings = state.service.settings
        parameters = request.model_dump()
        if isinstance(request, Img2ImgRequest) and not request.include_init_images:
            parameters.update(init_images=None, mask=None)
        send = request.send_images is not False
        images = [encode_base64(im, settings.samples_format, text, settings.jpeg_quality) for im, text in zip(result.images, result.infotexts)] if send else []
        info = _script_info(result)
        notes = ["Interrupted: the pictures finished before it are returned."] if result.interrupted else []
        info["warnings"] = [*request.adjustments(state.service.hires_upscalers()), *result.notes, *notes]
        return {"images": images, "parameters": parameters, "info": json.dumps(info)}

    async def generate(request: Txt2ImgRequest, kind: str, user: str) -> dict:
        """A1111's synchronous routes: queue the job, wait for it (without holding a server
        thread, so any number of clients can wait), answer with its result."""
        if request.script_name:
            return await run_script(request, kind, user)
        job = await run_in_threadpool(enqueue, request, kind, user)
        await done_future(job)  # no server thread is held while waiting: see done_future
        check_outcome(job, "generation")
        return await run_in_threadpool(respond, asked.pop(job.id, request), job)

    @router.post("/txt2img")
    async def txt2img(request: Txt2ImgRequest, user: str = Depends(current_user)) -> dict:
        return await generate(request, "txt2img", user)

    @router.post("/img2img")
    async def img2img(request: Img2ImgRequest, user: str = Depends(current_user)) -> dict:
        return await generate(request, "img2img", user)

    # -- the asynchronous side: submit, then poll or cancel by id ---------------------------

    def job_status(job: Job) -> dict:
        p = job.progress
        eta = p.eta_seconds() if job.status is JobStatus.RUNNING else None
        return {
            "id": job.id, "kind": job.kind, "status": job.status.value, "position": state.queue.position(job),
            "progress": round(p.fraction, 4) if job.status is JobStatus.RUNNING else (1.0 if job.status is JobStatus.DONE else 0.0),
            "eta_relative": round(eta, 2) if eta is not None else None, "textinfo": p.text() if job.status is JobStatus.RUNNING else None,
            "error": job.error, "worker": job.worker,
        }

    def own(job_user: str, user: str) -> None:
        """With --api-auth a job's result, preview and controls belong to the user who queued it."""
        if state.users and job_user != user:
            raise ApiError(403, "Forbidden", "That job belongs to another user.")

    @router.post("/queue/txt2img", summary="Queue a txt2img job; returns its id at once")
    def queue_txt2img(request: Txt2ImgRequest, user: str = Depends(current_user)) -> dict:
        return job_status(enqueue(request, "txt2img", user))

    @router.post("/queue/img2img", summary="Queue an img2img job; returns its id at once")
    def queue_img2img(request: Img2ImgRequest, user: str = Depends(current_user)) -> dict:
        return job_status(enqueue(request, "img2img", user))

    @router.get("/queue", summary="The jobs waiting and running, in the order they will run")
    def queue_list() -> dict:
        running = state.queue.running()  # several with Ray workers: "running" stays the first, as before
        return {"running": job_status(running[0]) if running else None, "running_all": [job_status(j) for j in running],
                "waiting": [job_status(j) for j in state.queue.waiting()]}

    @router.get("/workers", summary="Who runs the jobs: this process, and with Ray one worker per GPU (what each holds, its job)")
    def workers_list() -> list[dict]:
        running = {job.worker: job.id for job in state.queue.running()}
        return [{**w.describe(), "job": running.get(w.id)} for w in state.queue.workers()]

    @router.get("/queue/{job_id}", summary="A job's status, progress and (when done) its result")
    def queue_get(job_id: str, preview: bool = False, user: str = Depends(current_user)) -> dict:
        """With preview=true a running job also returns its live preview, as /progress does."""
        job = state.queue.get(job_id)
        if job is None:
            return stored_status(job_id, user)
        own(job.user, user)
        status = job_status(job)
        if preview and job.status is JobStatus.RUNNING and state.preview_every:
            job.progress.want_preview(state.preview_every)
            status["current_image"] = encode_base64(job.progress.preview, "png", None) if job.progress.preview is not None else None
        if job.status in (JobStatus.DONE, JobStatus.INTERRUPTED) and job.kind in ("txt2img", "img2img"):
            status["result"] = respond(asked.get(job.id), job)
        return status

    @router.delete("/queue/{job_id}", summary="Cancel a waiting job or interrupt a running one")
    def queue_cancel(job_id: str, user: str = Depends(current_user)) -> dict:
        job = state.queue.get(job_id)
        if job is None:
            raise ApiError(404, "NotFound", f"No job {job_id} is waiting or running.")
        own(job.user, user)
        state.queue.interrupt(job.id)
        return job_status(job)

    @router.post("/queue/{job_id}/skip", summary="Skip the current batch of a running job")
    def queue_skip(job_id: str, user: str = Depends(current_user)) -> dict:
        job = state.queue.get(job_id)
        if job is not None:
            own(job.user, user)
        if job is None or job.status is not JobStatus.RUNNING:
            raise ApiError(409, "NotRunning", f"Job {job_id} is not running.")
        state.queue.skip(job.id)
        return job_status(job)

    def stored_status(job_id: str, user: str) -> dict:
        """A job from before a restart: its record in the store (infotexts and saved paths)."""
        number = job_id.removeprefix("task(").removesuffix(")")
        stored = state.queue.stored(int(number)) if number.isascii() and number.isdigit() and len(number) < 16 else None
        if stored is None:
            raise ApiError(404, "NotFound", f"No job {job_id}.")
        own(stored.user, user)
        return {"id": job_id, "kind": stored.kind, "status": stored.status, "position": None, "progress": 1.0 if stored.status == "done" else 0.0,
                "eta_relative": None, "textinfo": None, "error": stored.error, "record": stored.result}

    @router.get("/progress")
    def progress(skip_current_image: bool = False, user: str = Depends(current_user)) -> dict:
        """A1111's global progress: the running job, whoever submitted it (with several workers,
        the caller's own running job first). With --api-auth the live preview is shown only to
        the job's owner."""
        job = state.queue.current_for(user)
        pending = state.queue.pending_count()
        if job is None or job.kind not in ("txt2img", "img2img"):
            return {"progress": 0.0, "eta_relative": 0.0, "state": _state(None, pending), "current_image": None, "textinfo": None}
        p = job.progress
        eta = p.eta_seconds()
        image = None
        mine = not state.users or job.user == user
        if state.preview_every and not skip_current_image and mine:
            p.want_preview(state.preview_every)
            if p.preview is not None:
                image = encode_base64(p.preview, "png", None)
        return {
            "progress": round(p.fraction, 4), "eta_relative": round(eta, 2) if eta is not None else 0.0, "state": _state(job, pending),
            "current_image": image, "textinfo": p.text(),
        }

    @router.post("/interrupt")
    def interrupt(user: str = Depends(current_user)) -> dict:
        """A1111's: stop the running job (with several workers, the caller's own if it has one)."""
        job = state.queue.current_for(user)
        if job is not None:
            state.queue.interrupt(job.id)
        return {}

    @router.post("/skip")
    def skip(user: str = Depends(current_user)) -> dict:
        job = state.queue.current_for(user)
        if job is not None:
            state.queue.skip(job.id)
        return {}

    @router.get("/options")
    def get_options() -> dict:
        return _options(state)

    @router.post("/options")
    async def set_options(values: dict[str, Any], user: str = Depends(current_user)) -> dict:
        """Every value is checked before any is applied, so a bad one changes nothing; the rest
        are saved to config.json. A new sd_model_checkpoint is loaded by a job in the caller's
        turn and answered once loaded."""
        query = values.get("sd_model_checkpoint")
        others = {k: v for k, v in values.items() if k != "sd_model_checkpoint"}
        try:
            wanted = state.models.require(str(query)) if query else None
            if "CLIP_stop_at_last_layers" in others:  # clients send it as a number or a numeric string
                others["CLIP_stop_at_last_layers"] = clip_skip_value(others["CLIP_stop_at_last_layers"])
            state.settings.update(others)
        except AccessRefused as exc:  # e.g. an output folder outside the data folder on a shared server
            raise ApiError(403, "Forbidden", str(exc)) from None
        except SettingsNotSaved as exc:  # the server's disk, not the request: 507, and nothing changed
            raise ApiError(507, "InsufficientStorage", str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise _bad(f"Bad option value: {exc}") from None
        selected, active = state.models.selected, state.models.active
        if wanted is not None and not (selected and selected.path == wanted.path and active and active.info.path == wanted.path):
            job = await switch_checkpoint(state.models, state.queue, str(wanted.path), user, state.settings)
            check_outcome(job, "loading the checkpoint")
        elif wanted is not None:
            state.settings.update({"sd_model_checkpoint": wanted.title})
        return {}

    @router.get("/cmd-flags")
    def cmd_flags() -> dict:
        return state.cmd_flags

    @router.get("/sd-models")
    def sd_models() -> list[dict]:
        return [
            {"title": c.title, "model_name": c.model_name, "hash": c.shorthash, "sha256": c.sha256, "filename": str(c.path), "config": None}
            for c in state.models.checkpoints
        ]

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints() -> dict:
        state.models.refresh()
        return {}

    @router.get("/extensions")
    def extension_list() -> list[dict]:
        """A1111's list: name, remote, branch, commit_hash, commit_date (unix seconds), version (short hash), enabled."""
        return state.extension_manager.api_list() if state.extension_manager is not None else []

    @router.get("/samplers")
    def sampler_list() -> list[dict]:
        return [{"name": s.name, "aliases": list(s.aliases), "options": _sampler_options(s)} for s in samplers.SAMPLERS]

    @router.get("/schedulers")
    def scheduler_list() -> list[dict]:
        return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": s.default_rho,
                 "need_inner_model": s.need_inner_model} for s in samplers.SCHEDULES]

    @router.get("/upscalers")
    def upscalers() -> list[dict]:
        return extras_service().upscalers.describe()

    @router.get("/latent-upscale-modes")
    def latent_modes() -> list[dict]:
        return [{"name": n} for n in LATENT_UPSCALERS]

    libraries = state.service.libraries

    @router.get("/sd-vae")
    def sd_vae() -> list[dict]:
        return libraries.vaes.describe() if libraries.vaes is not None else []

    @router.post("/refresh-vae")
    def refresh_vae() -> dict:
        if libraries.vaes is not None:
            libraries.vaes.refresh()
        return {}

    @router.get("/loras")
    def loras() -> list[dict]:
        return libraries.loras.describe() if libraries.loras is not None else []

    @router.post("/refresh-loras")
    def refresh_loras() -> dict:
        if libraries.loras is not None:
            libraries.loras.refresh()
        return {}

    @router.get("/embeddings")
    def embeddings() -> dict:
        """A1111's listing: embeddings that fit the loaded model's text encoders are "loaded"."""
        if libraries.embeddings is None:
            return {"loaded": {}, "skipped": {}}
        return libraries.embeddings.describe(_text_widths(state.models))

    @router.post("/refresh-embeddings")
    def refresh_embeddings() -> dict:
        if libraries.embeddings is not None:
            libraries.embeddings.refresh()
        return {}

    @router.get("/prompt-styles")
    def prompt_styles() -> list:
        return libraries.styles.describe() if libraries.styles is not None else []

    @router.get("/scripts", summary="Script names by tab: the selectable ones (script_name) and the always-on ones (alwayson_scripts)")
    def scripts() -> dict:
        from modules.extensions.hook_scripts import script_title

        runner, loaded = state.scripts, state.extensions

        def always(kind: str) -> list[str]:  # alwayson_scripts takes these
            found = ["controlnet"] if state.controlnet is not None else []
            return found + ([script_title(s).lower() for s in loaded.alwayson(kind)] if loaded is not None else [])

        selectable = {kind: [t.lower() for t in runner.titles(kind)] if runner is not None else [] for kind in ("txt2img", "img2img")}
        return {kind: [*selectable[kind], *always(kind)] for kind in ("txt2img", "img2img")}

    @router.get("/script-info", summary="Each script's arguments in script_args order: [{name, is_alwayson, is_img2img, args}]")
    def script_info() -> list:
        info = state.scripts.describe() if state.scripts is not None else []
        return info + (state.extensions.describe_alwayson() if state.extensions is not None else [])

    # Lists clients read at start-up (aiyabot stops on a 404). Hypernetworks are not run
    # here, so A1111's shape comes back empty.
    @router.get("/face-restorers", summary="Face restoration models present (GFPGAN, CodeFormer): [{name, cmd_dir}]")
    def face_restorers() -> list[dict]:
        faces = state.service.libraries.faces
        return faces.describe() if faces is not None else []

    @router.get("/hypernetworks", summary="Hypernetworks: [{name, path}] (not supported: none)")
    def hypernetworks() -> list[dict]:
        return []

    @router.get("/realesrgan-models", summary="RealESRGAN upscalers (models/RealESRGAN): [{name, path, scale}]")
    def realesrgan_models() -> list[dict]:
        library = state.service.upscalers
        return library.realesrgan_models() if library is not None else []

    @router.post("/interrogate", summary="Caption an image: model clip (BLIP caption + CLIP-ranked terms) or deepdanbooru (WD14 tags) -> {caption}")
    async def interrogate(request: InterrogateRequest, user: str = Depends(current_user)) -> dict:
        """As A1111: 404 without an image or for another model; missing weights are a 503 naming
        the catalog entries to download. The work is a queue job, taking turns with generation."""
        from modules.jobs.interrogate_task import UnknownInterrogator
        from modules.postprocessing.interrogate import MissingModel

        if not request.image:
            raise ApiError(404, "NotFound", "Image not found")
        if state.interrogate is None:
            raise ApiError(503, "ServiceUnavailable", "Interrogate is not set up on this server.")
        try:
            state.interrogate.check(request.model)  # a wrong name or missing weights before the picture is decoded
            image = await run_in_threadpool(decode_image, request.image, "image", state.service.limits.max_pixels)
            job = await run_in_threadpool(state.interrogate.submit, state.queue, image, request.model, user)
        except UnknownInterrogator as exc:
            raise ApiError(404, "NotFound", str(exc)) from None
        except MissingModel as exc:
            raise ApiError(503, "ServiceUnavailable", str(exc)) from None
        except ValueError as exc:
            raise _bad(str(exc)) from None
        await done_future(job)
        check_outcome(job, "interrogate")
        return {"caption": job.result or ""}

    @router.get("/memory")
    def memory() -> dict:
        return _memory()

    @router.post("/png-info")
    def png_info(request: PngInfoRequest) -> dict:
        from modules.outputs.infotext import parse_infotext, read_infotext_from_image

        if not request.image:
            raise ApiError(404, "NotFound", "Image not found")
        try:
            image = decode_image(request.image, "image", state.service.limits.max_pixels)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        text = read_infotext_from_image(image) or ""
        items = {k: v for k, v in (image.info or {}).items() if isinstance(v, (str, int, float)) and k != "parameters"}
        return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}

    fallback_extras = ExtrasService(state.data_dir / "outputs" / "extras-images")

    def extras_service() -> ExtrasService:
        return state.extras or fallback_extras

    def extras_job(request: ExtrasOptions, images: list[tuple[str, str | None, str]], user: str) -> Job:
        """Decode and check an extras request (images as (base64, name, what to call it in an
        error)), then queue it in the caller's lane. Not recorded: it does not outlive a restart."""
        from modules.generation.upscaling import target_size

        service = extras_service()
        try:
            params = service.params(**request.extras_values())
            decoded = []
            for data, name, what in images:
                image = decode_image(data, what, state.service.limits.max_pixels)
                target_size(image.size, params)  # too large or too small: refused before it waits in the queue
                decoded.append((image, name))
        except ValueError as exc:
            raise _bad(str(exc)) from None
        save = bool(request.save_images)
        return state.queue.submit("extras", lambda j: service.run(j, decoded, params, save=save), user=user)

    async def run_extras(request: ExtrasOptions, images: list[tuple[str, str | None, str]], user: str) -> tuple[list[str], str]:
        """Queue the job, wait for it without holding a thread, answer with base64 PNGs
        (the source's `parameters` and the `postprocessing` text inside) and A1111's html_info."""
        job = await run_in_threadpool(extras_job, request, images, user)
        await done_future(job)
        check_outcome(job, "extras")
        result = job.result
        if result is None:  # cancelled before it started
            return [], ""

        def encode() -> list[str]:
            return [encode_base64(image, "png", text) for image, text in zip(result.images, result.parameters)]

        encoded = await run_in_threadpool(encode)
        job.result = None  # answered: the queue keeps its last finished jobs, it need not keep their pictures
        info = f"<p>{html.escape(result.infotexts[-1])}</p>" if result.infotexts else ""
        return encoded, info

    @router.post("/extra-single-image")
    async def extra_single_image(request: ExtraSingleImageRequest, user: str = Depends(current_user)) -> dict:
        images, info = await run_extras(request, [(request.image, None, "image")], user)
        return {"image": images[0] if images else "", "html_info": info}

    @router.post("/extra-batch-images")
    async def extra_batch_images(request: ExtraBatchImagesRequest, user: str = Depends(current_user)) -> dict:
        if not request.imageList:
            return {"images": [], "html_info": ""}
        entries = [(item.data, item.name, f"imageList[{i}]") for i, item in enumerate(request.imageList)]
        images, info = await run_extras(request, entries, user)
        return {"images": images, "html_info": info}

    return router


def _sampler_options(sampler: samplers.Sampler) -> dict[str, str]:
    """A1111's sampler `options`, its values as strings as A1111's API sends them."""
    options = {"scheduler": sampler.default_schedule} if sampler.default_schedule else {}
    for flag, key in ((sampler.second_order, "second_order"), (sampler.seeded_noise_tree, "brownian_noise"),
                      (sampler.uses_ensd, "uses_ensd"), (sampler.discard_penultimate, "discard_next_to_last_sigma")):
        if flag:
            options[key] = "True"
    if sampler.options.get("solver_type") == "heun" and sampler.scheduler_class is None:
        options["solver_type"] = "heun"
    return options


def _state(job: Job | None, pending: int) -> dict:
    p = job.progress if job is not None else None
    return {
        "skipped": bool(job and job.control.skip_requested),
        "interrupted": bool(job and job.control.interrupted),
        "stopping_generation": False,
        "job": job.id if job else "",
        "job_count": (p.batch_count if p else 0) + pending,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.submitted_at)) if job else "0",
        "job_no": p.batch_index if p else 0,
        "sampling_step": p.step if p else 0,
        "sampling_steps": p.steps if p else 0,
    }


def _pictures_base64(result: GenerationResult, file_format: str, quality: int) -> list[str]:
    """A job's pictures as A1111's API returns them. A picture saved as the PNG this answer
    would hold (same text chunks) is sent from its file: no second encode of the same image."""
    import base64

    from modules.outputs.saving import saved_png

    paths = saved_path_per_image(result) if file_format.lower().lstrip(".") == "png" else [None] * len(result.images)
    pictures = []
    for image, text, path in zip(result.images, result.infotexts, paths):
        saved = saved_png(path, image, text) if path is not None else None
        pictures.append(base64.b64encode(saved).decode("ascii") if saved is not None else encode_base64(image, file_format, text, quality))
    return pictures


def _info(result: GenerationResult) -> dict:
    """Processed.js(): A1111's `info` keys, for the first image and lists for all."""
    params, count = result.params, len(result.images)
    return _processed(params, result.seeds, list(result.subseeds), [params.prompt] * count, [params.negative_prompt] * count,
                      result.infotexts, model=(result.model_name, result.model_hash), vae=(result.vae_name, result.vae_hash),
                      extra=dict(result.extra_generation_params), started=result.started, inpainting=result.inpainting_model)


def _script_info(result: "ScriptResult") -> dict:
    """Processed.js() for a script run: per-image prompts and seeds, grids first (the first
    image's keys are those of the first picture after them)."""
    return _processed(result.params, result.seeds, result.subseeds, result.prompts, result.negative_prompts, result.infotexts,
                      model=(result.model_name, result.model_hash), first=result.grids)


def _processed(params, seeds: list[int], subseeds: list[int], prompts: list[str], negatives: list[str], infotexts: list[str],
               model: tuple, vae: tuple = (None, None), extra: dict | None = None, first: int = 0, started: datetime | None = None,
               inpainting: bool = False) -> dict:
    at = first if first < len(seeds) else 0
    return {
        "prompt": params.prompt, "all_prompts": list(prompts), "negative_prompt": params.negative_prompt, "all_negative_prompts": list(negatives),
        "seed": seeds[at] if seeds else params.seed, "all_seeds": list(seeds),
        "subseed": subseeds[at] if subseeds else params.subseed, "all_subseeds": list(subseeds), "subseed_strength": params.subseed_strength,
        "width": params.width, "height": params.height, "sampler_name": params.sampler_name, "cfg_scale": params.cfg_scale,
        "steps": params.steps, "batch_size": params.batch_size, "restore_faces": params.restore_faces,
        "face_restoration_model": params.face_restoration_model if params.restore_faces else None,
        "sd_model_name": model[0], "sd_model_hash": model[1], "sd_vae_name": vae[0], "sd_vae_hash": vae[1],
        "seed_resize_from_w": params.seed_resize_from_w or -1, "seed_resize_from_h": params.seed_resize_from_h or -1,
        "denoising_strength": params.denoising_strength, "extra_generation_params": dict(extra or {}), "index_of_first_image": first,
        "infotexts": list(infotexts), "styles": list(params.styles), "job_timestamp": (started or datetime.now()).strftime("%Y%m%d%H%M%S"),
        "clip_skip": params.clip_skip, "is_using_inpainting_conditioning": inpainting, "version": VERSION,
    }


def _options(state: ApiState) -> dict:
    """Every setting, as config.json holds it, with the checkpoint in use."""
    current = state.models.current
    return {**state.settings.values, "sd_model_checkpoint": current.title if current else None}


def _text_widths(models: ModelManager) -> set[int]:
    """The loaded model's text-encoder widths (768 for SD 1.x, 1024 for SD 2.x, 768 and 1280
    for SDXL): which embeddings it can use."""
    active = models.active
    if active is None:
        return set()
    model = active.model
    encoders = [model.text_encoder] + ([model.text_encoder_2] if model.text_encoder_2 is not None else [])
    return {te.config.hidden_size for te in encoders}


def _memory() -> dict:
    import psutil

    vm = psutil.virtual_memory()
    result: dict[str, Any] = {"ram": {"free": vm.available, "used": vm.total - vm.available, "total": vm.total}}
    try:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            stats = torch.cuda.memory_stats()
            result["cuda"] = {
                "system": {"free": free, "used": total - free, "total": total},
                "active": {"current": stats.get("active_bytes.all.current", 0), "peak": stats.get("active_bytes.all.peak", 0)},
                "allocated": {"current": stats.get("allocated_bytes.all.current", 0), "peak": stats.get("allocated_bytes.all.peak", 0)},
                "reserved": {"current": stats.get("reserved_bytes.all.current", 0), "peak": stats.get("reserved_bytes.all.peak", 0)},
                "inactive": {"current": stats.get("inactive_split_bytes.all.current", 0), "peak": stats.get("inactive_split_bytes.all.peak", 0)},
                "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
            }
        else:
            result["cuda"] = {"error": "unavailable"}
    except Exception as exc:  # memory stats must never break the route
        result["cuda"] = {"error": str(exc)}
    return result
