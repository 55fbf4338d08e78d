"""The LoRA training routes on /sdapi/v1/train/lora: start a run as a queue job, list the runs,
read one's progress, losses, samples and scores, interrupt it. (A1111's textual-inversion
routes are modules/training/embedding_routes.py's.)

The only FastAPI module of modules/training. Handlers stay thin: the params model validates,
`TrainingService` checks the dataset and queues the job, and the run folder on disk is what a
view reads, so a run from before a restart is listed like any other. The routes sit behind the
API's log-in (--api-auth), as /controlnet/* do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Body, Depends
from fastapi.concurrency import run_in_threadpool

from modules.api.auth import user_dependency
from modules.api.routes import ApiError
from modules.jobs.queue import FINISHED, Job, JobStatus, QueueStopped
from modules.network import AccessRefused
from modules.training.params import NAME_PATTERN, LoraTrainingParams

if TYPE_CHECKING:
    from modules.api.routes import ApiState
    from modules.training.service import TrainingService

# The queue's name for a LoRA training job (TrainingService.submit uses the same).
LORA_KIND = "train-lora"
# What /docs shows for the body: the params model's fields. The body itself is read as a plain
# object so a bad value is the API's 400 with a sentence (from_request), not FastAPI's 422.
REQUEST_SCHEMA = LoraTrainingParams.model_json_schema()


def build_training_router(state: "ApiState") -> APIRouter:
    """POST/GET /sdapi/v1/train/lora, GET /sdapi/v1/train/lora/{name}, POST .../{name}/interrupt."""
    current_user = user_dependency(state.users, state.login_limits)
    router = APIRouter(prefix="/sdapi/v1", dependencies=[Depends(current_user)], tags=["training"])
    _add_lora_routes(router, state, current_user)
    return router


def training_service(state: "ApiState") -> "TrainingService":
    service = getattr(state, "training", None)
    if service is None:
        raise ApiError(503, "ServiceUnavailable", "Training is not set up on this server.")
    return service


def run_job(queue, name: str) -> Job | None:
    """The unfinished LoRA job training run `name` (the newest if several), else None."""
    jobs = [job for job in queue.list() if job.kind == LORA_KIND and job.status not in FINISHED and job_run_name(job) == name]
    return jobs[-1] if jobs else None


def job_run_name(job: Job) -> str | None:
    """Which run a training job trains: TrainingService.submit names it on the job; a job
    rebuilt after a restart carries the name on its task, where the job handler can put it."""
    return getattr(job, "training_name", None) or getattr(job.task, "training_name", None)


def job_summary(queue, job: Job | None, rate: float | None = None) -> dict[str, Any] | None:
    """A training job as the queue routes show a job: id, status, place in the queue, step text.
    With the run's step `rate`, the ETA comes from it (the job's clock also counts the model's loading)."""
    if job is None:
        return None
    running = job.status is JobStatus.RUNNING
    p = job.progress
    eta = ((p.steps - p.step) / rate if rate and p.steps else p.eta_seconds()) if running else None
    return {"id": job.id, "status": job.status.value, "position": queue.position(job),
            "textinfo": job.progress.text() if running else None, "eta_relative": round(eta, 2) if eta is not None else None,
            "error": job.error}


def _add_lora_routes(router: APIRouter, state: "ApiState", current_user) -> None:
    def own(job: Job, user: str) -> None:
        """With --api-auth a run's job is stopped only by whoever queued it."""
        if state.users and job.user != user:
            raise ApiError(403, "Forbidden", "That training run belongs to another user.")

    def view(service: "TrainingService", name: str) -> Any:
        try:
            if not NAME_PATTERN.match(name):  # a run's name is a LoRA file name: never '..' or a path
                raise KeyError(name)
            return service.view(name)
        except KeyError:
            raise ApiError(404, "NotFound", f"No LoRA training run named '{name}'.") from None

    @router.post("/train/lora", summary="Queue a LoRA training run (kohya option names); returns its task id at once",
                 openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": REQUEST_SCHEMA}}}})
    async def train_lora(body: dict[str, Any] = Body(...), user: str = Depends(current_user)) -> dict:
        """400 for a bad value, an empty or unreadable dataset; 403 for a folder outside the data
        folder on a shared server. The run then waits its turn in the caller's lane."""
        service = training_service(state)
        try:
            params = LoraTrainingParams.from_request(body)
            job = await run_in_threadpool(service.submit, state.queue, params, user)  # checks the folder and the checkpoint first
        except AccessRefused as exc:
            raise ApiError(403, "Forbidden", str(exc)) from None
        except ValueError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None
        except QueueStopped as exc:
            raise ApiError(503, "ServiceUnavailable", str(exc)) from None
        return {"task": job.id, "name": params.output_name, "position": state.queue.position(job)}

    @router.get("/train/lora", summary="LoRA training runs, newest first: name, status, steps and the LoRA file")
    def list_lora_runs() -> list[dict]:
        service = training_service(state)
        runs = []
        for name in service.run_names():
            run = service.view(name).to_json()
            runs.append({key: run[key] for key in ("name", "status", "steps_done", "total_steps", "lora")})
        return runs

    @router.get("/train/lora/{name}", summary="One run: status, rate, losses, sample file names, scores, the LoRA file")
    def get_lora_run(name: str) -> dict:
        service = training_service(state)
        run = view(service, name)
        return {**run.to_json(), "task": job_summary(state.queue, run_job(state.queue, name), run.rate)}

    @router.post("/train/lora/{name}/interrupt", summary="Stop a run: it saves what it has; a waiting run is cancelled")
    def interrupt_lora_run(name: str, user: str = Depends(current_user)) -> dict:
        service = training_service(state)
        view(service, name)
        job = run_job(state.queue, name)
        if job is None:
            raise ApiError(409, "NotRunning", f"Run '{name}' is not waiting or running.")
        own(job, user)
        state.queue.interrupt(job.id)
        return {"name": name, "task": job_summary(state.queue, job)}
