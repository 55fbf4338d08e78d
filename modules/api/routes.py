"""The /sdapi/v1 routes, with A1111's request and response shapes, over the app's job queue.

Generation routes submit a job and wait on that job alone; model switches are jobs too, so a
switch never lands in the middle of someone's generation. Readable request problems become
HTTP 4xx with A1111's error body ({error, detail, body, errors}); the server keeps serving.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, ConfigDict

from modules.api.models import Img2ImgRequest, Txt2ImgRequest, decode_image, encode_base64
from modules.generation import samplers
from modules.generation.params import LATENT_UPSCALERS, PIXEL_UPSCALERS
from modules.jobs.generation_task import GenerationResult, GenerationService
from modules.jobs.queue import Job, JobQueue, JobStatus
from modules.models.manager import ModelManager
from modules.options import OutputSettings
from modules.version import VERSION

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
    clip_skip: int = 1
    users: dict[str, str] = field(default_factory=dict)  # --api-auth, user -> password
    live_previews_enable: bool = True  # A1111's defaults: a preview every 10 steps
    show_progress_every_n_steps: int = 10


class PngInfoRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    image: str = ""


class ExtraSingleImageRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    image: str = ""
    resize_mode: int = 0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    show_extras_results: bool = True


def parse_users(spec: str | None) -> dict[str, str]:
    """`user:pass[,user2:pass2]`; the password is everything after the first colon."""
    users = {}
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user:
            raise ValueError(f"Bad credentials '{item}': use user:password[,user2:password2].")
        users[user] = password
    return users


def user_dependency(users: dict[str, str]) -> Callable[..., str]:
    """Who is asking: the --api-auth user (checked, 401 otherwise), or without auth the client's
    address. Jobs wait in one lane per user, so this is also what keeps the queue fair."""
    basic = HTTPBasic(auto_error=False)

    def current_user(request: Request, credentials: HTTPBasicCredentials | None = Depends(basic)) -> str:
        if not users:
            return f"ip:{request.client.host}" if request.client else ""
        expected = users.get(credentials.username) if credentials else None
        if expected is None or not secrets.compare_digest(credentials.password.encode(), expected.encode()):
            raise HTTPException(status_code=401, detail="Incorrect username or password", headers={"WWW-Authenticate": "Basic"})
        return credentials.username

    return current_user


def install_error_handlers(app: FastAPI) -> None:
    """A1111's error body for request problems, and X-Process-Time on every response."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(status_code=exc.status, content={"error": exc.error, "detail": exc.detail, "body": "", "errors": exc.detail})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body')}: {e.get('msg')}" for e in exc.errors()]
        detail = "; ".join(errors) or "invalid request"
        return JSONResponse(status_code=422, content={"error": "ValidationError", "detail": detail, "body": "", "errors": errors})

    @app.middleware("http")
    async def process_time(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        response.headers["X-Process-Time"] = f"{time.perf_counter() - start:.4f}"
        return response


def build_router(state: ApiState) -> APIRouter:
    current_user = user_dependency(state.users)
    router = APIRouter(prefix="/sdapi/v1", dependencies=[Depends(current_user)], tags=["sdapi"])

    def run_job(kind: str, task: Callable[[Job], Any], user: str = "", payload: Any = None) -> Job:
        job = state.queue.submit(kind, task, user=user, payload=payload)
        job.wait()
        if job.status is JobStatus.FAILED:
            raise _bad(job.error or "generation failed")
        return job

    def switch_model(query: str | None, user: str = "") -> None:
        if query and (state.models.active is None or query not in (state.models.active.info.title, state.models.active.info.model_name)):
            if state.models.find(query) is None:
                raise _bad(f"Checkpoint not found: '{query}'. Available: {', '.join(state.models.titles())}.")
            run_job("load_model", lambda _j: state.models.load(query), user)

    def respond(request: Txt2ImgRequest, job: Job) -> dict:
        result: GenerationResult | None = job.result
        if result is None:  # interrupted before it started
            return {"images": [], "parameters": request.model_dump(), "info": json.dumps({"infotexts": [], "all_seeds": []})}
        settings = state.service.settings
        images = [encode_base64(im, settings.samples_format, text, settings.jpeg_quality) for im, text in zip(result.images, result.infotexts)]
        return {"images": images if request.send_images is not False else [], "parameters": request.model_dump(), "info": json.dumps(_info(result, state))}

    def prepare(request: Txt2ImgRequest, kind: str, user: str) -> tuple[Callable[[Job], Any], dict]:
        """Validate a generation request and switch the model it asks for: its task and the
        payload that records it (so it survives a restart)."""
        from modules.generation.runner import InitImages
        from modules.jobs.generation_task import img2img_payload, txt2img_payload

        problems = request.unsupported()
        if problems:
            raise ApiError(422, "Unsupported", "Not supported by this server: " + "; ".join(problems))
        save = bool(request.save_images)
        try:
            params = request.params(state.clip_skip)
            if kind == "txt2img":
                task, payload = (lambda j: state.service.run_txt2img(j, params, save=save)), txt2img_payload(params, save)
            else:
                if not request.init_images:
                    raise ApiError(404, "NotFound", "Init image not found")
                images = tuple(decode_image(data, f"init_images[{i}]") for i, data in enumerate(request.init_images))
                init = InitImages(images, decode_image(request.mask, "mask") if request.mask else None)
                task, payload = (lambda j: state.service.run_img2img(j, params, init, save=save)), img2img_payload(params, init, save)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        switch_model(request.wanted_checkpoint(), user)
        return task, payload

    @router.post("/txt2img")
    def txt2img(request: Txt2ImgRequest, user: str = Depends(current_user)) -> dict:
        task, payload = prepare(request, "txt2img", user)
        return respond(request, run_job("txt2img", task, user, payload))

    @router.post("/img2img")
    def img2img(request: Img2ImgRequest, user: str = Depends(current_user)) -> dict:
        task, payload = prepare(request, "img2img", user)
        return respond(request, run_job("img2img", task, user, payload))

    # -- the asynchronous side: submit, then poll or cancel by id ---------------------------

    def job_status(job: Job) -> dict:
        p = job.progress
        eta = p.eta_seconds() if job.status is JobStatus.RUNNING else None
        return {
            "id": job.id, "kind": job.kind, "status": job.status.value, "position": state.queue.position(job),
            "progress": round(p.fraction, 4) if job.status is JobStatus.RUNNING else (1.0 if job.status is JobStatus.DONE else 0.0),
            "eta_relative": round(eta, 2) if eta is not None else None, "textinfo": p.text() if job.status is JobStatus.RUNNING else None,
            "error": job.error,
        }

    def submit(request: Txt2ImgRequest, kind: str, user: str) -> dict:
        task, payload = prepare(request, kind, user)
        job = state.queue.submit(kind, task, user=user, payload=payload)
        for old in [k for k in requests if state.queue.get(k) is None]:  # the queue forgot them: so do we
            del requests[old]
        requests[job.id] = request
        return job_status(job)

    requests: dict[str, Txt2ImgRequest] = {}  # what each async job was asked, to answer in A1111's shape

    @router.post("/queue/txt2img", summary="Queue a txt2img job; returns its id at once")
    def queue_txt2img(request: Txt2ImgRequest, user: str = Depends(current_user)) -> dict:
        return submit(request, "txt2img", user)

    @router.post("/queue/img2img", summary="Queue an img2img job; returns its id at once")
    def queue_img2img(request: Img2ImgRequest, user: str = Depends(current_user)) -> dict:
        return submit(request, "img2img", user)

    @router.get("/queue", summary="The jobs waiting and running, in the order they will run")
    def queue_list() -> dict:
        current = state.queue.current
        return {"running": job_status(current) if current else None, "waiting": [job_status(j) for j in state.queue.waiting()]}

    @router.get("/queue/{job_id}", summary="A job's status, progress and (when done) its result")
    def queue_get(job_id: str, preview: bool = False) -> dict:
        """With preview=true a running job also returns its live preview, as /progress does."""
        job = state.queue.get(job_id)
        if job is None:
            return stored_status(job_id)
        status = job_status(job)
        if preview and job.status is JobStatus.RUNNING and state.show_progress_every_n_steps > 0:
            job.progress.want_preview(state.show_progress_every_n_steps)
            status["current_image"] = encode_base64(job.progress.preview, "png", None) if job.progress.preview is not None else None
        if job.status in (JobStatus.DONE, JobStatus.INTERRUPTED) and job.id in requests:
            status["result"] = respond(requests[job.id], job)
        return status

    @router.delete("/queue/{job_id}", summary="Cancel a waiting job or interrupt a running one")
    def queue_cancel(job_id: str, user: str = Depends(current_user)) -> dict:
        job = state.queue.get(job_id)
        if job is None:
            raise ApiError(404, "NotFound", f"No job {job_id} is waiting or running.")
        if state.users and job.user != user:
            raise ApiError(403, "Forbidden", "That job belongs to another user.")
        state.queue.interrupt(job.id)
        return job_status(job)

    @router.post("/queue/{job_id}/skip", summary="Skip the current batch of a running job")
    def queue_skip(job_id: str, user: str = Depends(current_user)) -> dict:
        job = state.queue.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING:
            raise ApiError(409, "NotRunning", f"Job {job_id} is not running.")
        if state.users and job.user != user:
            raise ApiError(403, "Forbidden", "That job belongs to another user.")
        state.queue.skip(job.id)
        return job_status(job)

    def stored_status(job_id: str) -> dict:
        """A job from before a restart: its record in the store (infotexts and saved paths)."""
        number = job_id.removeprefix("task(").removesuffix(")")
        stored = state.queue.stored(int(number)) if number.isdigit() else None
        if stored is None:
            raise ApiError(404, "NotFound", f"No job {job_id}.")
        return {"id": job_id, "kind": stored.kind, "status": stored.status, "position": None, "progress": 1.0 if stored.status == "done" else 0.0,
                "eta_relative": None, "textinfo": None, "error": stored.error, "record": stored.result}

    @router.get("/progress")
    def progress(skip_current_image: bool = False) -> dict:
        """A1111's global progress: the running job, whoever submitted it."""
        job = state.queue.current
        pending = state.queue.pending_count()
        if job is None or job.kind not in ("txt2img", "img2img"):
            return {"progress": 0.0, "eta_relative": 0.0, "state": _state(None, pending), "current_image": None, "textinfo": None}
        p = job.progress
        eta = p.eta_seconds()
        image = None
        if state.live_previews_enable and state.show_progress_every_n_steps > 0 and not skip_current_image:
            p.want_preview(state.show_progress_every_n_steps)
            if p.preview is not None:
                image = encode_base64(p.preview, "png", None)
        return {
            "progress": round(p.fraction, 4), "eta_relative": round(eta, 2) if eta is not None else 0.0, "state": _state(job, pending),
            "current_image": image, "textinfo": p.text(),
        }

    @router.post("/interrupt")
    def interrupt() -> dict:
        state.queue.interrupt()
        return {}

    @router.post("/skip")
    def skip() -> dict:
        state.queue.skip()
        return {}

    @router.get("/options")
    def get_options() -> dict:
        return _options(state)

    @router.post("/options")
    def set_options(values: dict[str, Any]) -> dict:
        output_keys = {f.name for f in fields(OutputSettings)}
        changes = {k: v for k, v in values.items() if k in output_keys}
        for key in ("live_previews_enable", "show_progress_every_n_steps"):
            if key in values:
                try:
                    setattr(state, key, type(getattr(state, key))(values[key]))
                except (TypeError, ValueError):
                    raise _bad(f"Bad value for {key}: {values[key]!r}") from None
        if "CLIP_stop_at_last_layers" in values:
            try:
                clip_skip = int(values["CLIP_stop_at_last_layers"])
            except (TypeError, ValueError):
                raise _bad("CLIP_stop_at_last_layers must be a whole number from 1 to 12.") from None
            if not 1 <= clip_skip <= 12:
                raise _bad("CLIP_stop_at_last_layers must be a whole number from 1 to 12.")
            state.clip_skip = clip_skip
        if changes:
            try:
                state.service.apply_settings(replace(state.service.settings, **changes))
            except (TypeError, ValueError) as exc:
                raise _bad(f"Bad option value: {exc}") from None
        switch_model(values.get("sd_model_checkpoint"))
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

    @router.get("/samplers")
    def sampler_list() -> list[dict]:
        return [{"name": s.name, "aliases": list(s.aliases), "options": {}} for s in samplers.SAMPLERS]

    @router.get("/schedulers")
    def scheduler_list() -> list[dict]:
        return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": -1, "need_inner_model": False} for s in samplers.SCHEDULES]

    @router.get("/upscalers")
    def upscalers() -> list[dict]:
        return [{"name": n, "model_name": None, "model_path": None, "model_url": None, "scale": 4 if n != "None" else 1} for n in PIXEL_UPSCALERS]

    @router.get("/latent-upscale-modes")
    def latent_modes() -> list[dict]:
        return [{"name": n} for n in LATENT_UPSCALERS]

    @router.get("/sd-vae")
    def sd_vae() -> list[dict]:
        return [{"model_name": p.stem, "filename": str(p)} for p in _files(state.data_dir / "models" / "VAE", (".safetensors", ".pt", ".ckpt"))]

    @router.get("/loras")
    def loras() -> list[dict]:
        return [{"name": p.stem, "alias": p.stem, "path": str(p), "metadata": {}} for p in _files(state.data_dir / "models" / "Lora", (".safetensors", ".pt", ".ckpt"))]

    @router.post("/refresh-loras")
    def refresh_loras() -> dict:
        return {}

    @router.get("/embeddings")
    def embeddings() -> dict:
        return {"loaded": {}, "skipped": {}}

    @router.get("/prompt-styles")
    def prompt_styles() -> list:
        return []

    @router.get("/scripts")
    def scripts() -> dict:
        return {"txt2img": [], "img2img": []}

    @router.get("/script-info")
    def script_info() -> list:
        return []

    @router.get("/memory")
    def memory() -> dict:
        return _memory()

    @router.post("/png-info")
    def png_info(request: PngInfoRequest) -> dict:
        from modules.outputs.infotext import parse_infotext, read_infotext_from_image

        if not request.image:
            raise ApiError(404, "NotFound", "Image not found")
        try:
            image = decode_image(request.image, "image")
        except ValueError as exc:
            raise _bad(str(exc)) from None
        text = read_infotext_from_image(image) or ""
        items = {k: v for k, v in (image.info or {}).items() if isinstance(v, (str, int, float)) and k != "parameters"}
        return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}

    @router.post("/extra-single-image")
    def extra_single_image(request: ExtraSingleImageRequest) -> dict:
        from modules.generation import images as imgops

        try:
            image = imgops.flatten(decode_image(request.image, "image"))
        except ValueError as exc:
            raise _bad(str(exc)) from None
        if request.upscaler_1 not in PIXEL_UPSCALERS:
            raise _bad(f"Upscaler '{request.upscaler_1}' not found. Choose one of: {', '.join(PIXEL_UPSCALERS)}.")
        if request.resize_mode == 1:
            width, height = request.upscaling_resize_w, request.upscaling_resize_h
        else:
            if not 0 < request.upscaling_resize <= 8:
                raise _bad("upscaling_resize must be above 0 and at most 8.")
            width, height = round(image.width * request.upscaling_resize), round(image.height * request.upscaling_resize)
        if not (1 <= width <= 8192 and 1 <= height <= 8192):
            raise _bad(f"The result would be {width}x{height}; each side must be 1 to 8192.")
        mode = 1 if request.resize_mode == 1 and request.upscaling_crop else 0
        resized = imgops.resize_image(image, width, height, mode, imgops.PIXEL_RESAMPLING[request.upscaler_1])
        return {"image": encode_base64(resized, "png", None), "html_info": f"<p>Upscaler: {request.upscaler_1}, {width}x{height}</p>"}

    return router


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


def _info(result: GenerationResult, state: ApiState) -> dict:
    """Processed.js(): A1111's `info` keys, for the first image and lists for all."""
    params = result.params
    active = state.models.active
    return {
        "prompt": params.prompt, "all_prompts": [params.prompt] * len(result.images),
        "negative_prompt": params.negative_prompt, "all_negative_prompts": [params.negative_prompt] * len(result.images),
        "seed": result.seeds[0] if result.seeds else params.seed, "all_seeds": result.seeds,
        "subseed": -1, "all_subseeds": [-1] * len(result.seeds), "subseed_strength": 0,
        "width": params.width, "height": params.height, "sampler_name": params.sampler_name, "cfg_scale": params.cfg_scale,
        "steps": params.steps, "batch_size": params.batch_size, "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": active.info.model_name if active else None, "sd_model_hash": active.info.shorthash if active else None,
        "sd_vae_name": None, "sd_vae_hash": None, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": params.denoising_strength, "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": result.infotexts, "styles": [], "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": params.clip_skip,
        "is_using_inpainting_conditioning": bool(active and active.model.unet.config.in_channels == 9), "version": VERSION,
    }


def _options(state: ApiState) -> dict:
    active = state.models.active
    values: dict[str, Any] = {
        "sd_model_checkpoint": active.info.title if active else None, "CLIP_stop_at_last_layers": state.clip_skip,
        "live_previews_enable": state.live_previews_enable, "show_progress_every_n_steps": state.show_progress_every_n_steps,
    }
    for f in fields(OutputSettings):
        values[f.name] = getattr(state.service.settings, f.name)
    return values


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


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
