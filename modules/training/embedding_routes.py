"""A1111's textual-inversion routes: POST /sdapi/v1/create/embedding and /sdapi/v1/train/embedding.

Request fields and the `info` strings of the answers are A1111's (modules/api/api.py), so its
clients work unchanged: both take a plain JSON object of the functions' arguments, and answer
`{"info": "create embedding filename: <path>"}` and `{"info": "train embedding complete:
filename: <path> error: None"}` once the work is done (training answers when it ends, as
A1111's does). Where A1111 answers a problem with 200 and "... error: <reason>", this answers
a 4xx that carries the same `info` beside `detail`: 400 for bad values or an unusable folder,
403 for a folder outside the data folder on a shared server, 404 for an unknown embedding, 409
for an existing name without `overwrite_old`. Both run as queue jobs in the caller's lane.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Body, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from modules.api.auth import user_dependency
from modules.jobs.queue import FINISHED, JobStatus, done_future
from modules.network import AccessRefused
from modules.training.embedding_trainer import (EmbeddingExists, EmbeddingNotFound, EmbeddingService, TrainOptions,
                                                coerce_value)

if TYPE_CHECKING:
    from modules.api.routes import ApiState
    from modules.jobs.queue import Job


def service_for(state: "ApiState") -> EmbeddingService:
    """The embeddings service over the API's state (its models, library and data folder). The
    folder rules come from `state.access` when the app gives one, else from the extension
    manager's (the same ServerAccess), else the server is taken as local."""
    access = getattr(state, "access", None)
    if access is None and state.extension_manager is not None:
        access = getattr(state.extension_manager, "access", None)
    return EmbeddingService(state.models, state.service.libraries.embeddings, state.data_dir,
                            state.models.configs_dir / "textual_inversion_templates", access)


def refusal(exc: Exception, prefix: str) -> JSONResponse:
    """A problem as a 4xx whose body says it both ways: the API's `detail` and A1111's `info`."""
    status, error = _status(exc)
    detail = str(exc)
    return JSONResponse(status_code=status, content={"error": error, "detail": detail, "errors": detail,
                                                     "info": f"{prefix}: {detail}"})


def _status(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, AccessRefused):
        return 403, "Forbidden"
    if isinstance(exc, EmbeddingNotFound):
        return 404, "NotFound"
    if isinstance(exc, EmbeddingExists):
        return 409, "Conflict"
    return 400, "BadRequest"


def _stopped(job: "Job") -> JSONResponse | None:
    if job.status in FINISHED:
        return None
    detail = f"The server is stopping: {job.id} " + ("stays queued and runs when the server starts again."
                                                      if job.recorded else "was not run.")
    return JSONResponse(status_code=503, content={"error": "ServiceUnavailable", "detail": detail, "errors": detail})


async def create_embedding(state: "ApiState", service: EmbeddingService, values: dict[str, Any], user: str):
    """A1111's create_embedding(name, num_vectors_per_token, overwrite_old, init_text="*")."""
    prefix = "create embedding error"
    try:
        name = coerce_value("name", values.get("name", ""), str)
        count = coerce_value("num_vectors_per_token", values.get("num_vectors_per_token", 1), int)
        overwrite = coerce_value("overwrite_old", values.get("overwrite_old", False), bool)
        init_text = coerce_value("init_text", values.get("init_text", "*"), str)
        job = service.submit_create(state.queue, name, count, overwrite, init_text, user=user)
    except ValueError as exc:
        return refusal(exc, prefix)
    await done_future(job)
    stopped = _stopped(job)
    if stopped is not None:
        return stopped
    if job.status is JobStatus.FAILED:
        return refusal(_error_of(job, name), prefix)
    return {"info": f"create embedding filename: {job.result}"}


async def train_embedding(state: "ApiState", service: EmbeddingService, values: dict[str, Any], user: str):
    """A1111's train_embedding(...): answers when training ends (or is interrupted: the
    vectors so far are saved and the answer is the same)."""
    prefix = "train embedding error"
    try:
        options = TrainOptions.from_request(values)
        job = await run_in_threadpool(service.submit, state.queue, options, user)  # scans the folder
    except ValueError as exc:
        return refusal(exc, prefix)
    await done_future(job)
    stopped = _stopped(job)
    if stopped is not None:
        return stopped
    if job.status is JobStatus.FAILED or job.result is None:
        return refusal(ValueError(job.error or "Training stopped before it began."), prefix)
    return {"info": job.result.info}


def _error_of(job: "Job", name: str) -> ValueError:
    """A failed create job's reason, as the exception class the status is chosen by."""
    message = job.error or f"The embedding {name!r} was not created."
    return EmbeddingExists(message) if message.endswith("already exists") else ValueError(message)


def build_embedding_router(state: "ApiState") -> APIRouter:
    """POST /sdapi/v1/create/embedding and /sdapi/v1/train/embedding, behind the API's log-in."""
    current_user = user_dependency(state.users, state.login_limits)
    router = APIRouter(prefix="/sdapi/v1", dependencies=[Depends(current_user)], tags=["training"])
    service = service_for(state)

    @router.post("/create/embedding", summary="Create an empty textual-inversion embedding (A1111)")
    async def create(values: dict[str, Any] = Body(...), user: str = Depends(current_user)):
        return await create_embedding(state, service, values, user)

    @router.post("/train/embedding", summary="Train a textual-inversion embedding; answers when training ends (A1111)")
    async def train(values: dict[str, Any] = Body(...), user: str = Depends(current_user)):
        return await train_embedding(state, service, values, user)

    return router
