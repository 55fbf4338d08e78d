"""The ControlNet extension's HTTP side: its /controlnet/* routes and its units on /sdapi/v1.

Route shapes, defaults and error codes are sd-webui-controlnet's (scripts/api.py, API version
3), so the clients written for it (webuiapi, the Photoshop and Krita plug-ins, bots) work
unchanged. The routes sit behind the API's own log-in (--api-auth). The only FastAPI module of
the package: the rest of modules/controlnet knows nothing of HTTP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from modules.api.auth import user_dependency
from modules.api.models import MAX_LIST, ApiInt, Txt2ImgRequest, decode_image, encode_base64
from modules.api.routes import ApiError
from modules.controlnet.service import check_resolution
from modules.controlnet.units import ControlUnit, units_from_api
from modules.generation.image_input import to_mask, to_rgb
from modules.jobs.queue import FINISHED, Job, JobStatus, done_future

if TYPE_CHECKING:
    from PIL import Image

    from modules.api.routes import ApiState
    from modules.controlnet.service import ControlNetService
    from modules.jobs.generation_task import GenerationResult

# The extension's API version (internal_controlnet/external_code.get_api_version).
API_VERSION = 3
# The queue's name for a /controlnet/detect job.
DETECT_KIND = "controlnet-detect"


class DetectRequest(BaseModel):
    """POST /controlnet/detect, the extension's fields and defaults. webuiapi's
    `controlnet_detect` sends the pictures as `controlnet_images`: taken as the same list."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field([], max_length=MAX_LIST)
    controlnet_images: list[str] = Field([], max_length=MAX_LIST)
    controlnet_masks: list[str] = Field([], max_length=MAX_LIST)
    controlnet_processor_res: ApiInt = -1
    controlnet_threshold_a: float = -1
    controlnet_threshold_b: float = -1
    low_vram: bool = False  # accepted; the preprocessors here hold no model between calls worth freeing early


def units_from_request(controlnet: "ControlNetService | None", request: Txt2ImgRequest, img2img: bool,
                       max_pixels: int | None) -> list[ControlUnit]:
    """A generation request's ControlNet units (`alwayson_scripts.controlnet.args`), pictures
    decoded with the API's decoder and size limit, checked by the service before the job is
    queued (unknown model or preprocessor, a unit with nothing to look at). [] when the request
    names no enabled unit. ValueError with a sentence otherwise."""
    args = request.controlnet_args()
    if not args:
        return []
    units = units_from_api(args, lambda data, what: decode_image(data, what, max_pixels))
    if not any(unit.settings.enabled for unit in units):
        return []
    if controlnet is None:
        raise ValueError("ControlNet is not set up on this server.")
    controlnet.check(units, img2img=img2img)
    return units


def detected_maps_base64(result: "GenerationResult", file_format: str, quality: int) -> list[str]:
    """The units' detected maps, as the extension appends them after a job's images (the
    service leaves them out for units with save_detected_map off, or with the
    `control_net_no_detectmap` setting on)."""
    return [encode_base64(image, file_format, None, quality) for image in result.detected_maps]


def build_controlnet_router(state: "ApiState") -> APIRouter:
    """/controlnet/version, model_list, module_list, control_types, settings and detect."""
    current_user = user_dependency(state.users, state.login_limits)
    router = APIRouter(prefix="/controlnet", dependencies=[Depends(current_user)], tags=["controlnet"])

    def service() -> "ControlNetService":
        if state.controlnet is None:
            raise ApiError(503, "ServiceUnavailable", "ControlNet is not set up on this server.")
        return state.controlnet

    @router.get("/version", summary="The ControlNet extension's API version this server speaks")
    def version() -> dict:
        return {"version": API_VERSION}

    @router.get("/model_list", summary="ControlNet models in models/ControlNet: 'name [hash]'")
    def model_list(update: bool = True) -> dict:
        """The folders are read on every call, so `update` (the extension's rescan) is always so."""
        return {"model_list": [name for name in service().library.names() if name != "None"]}

    @router.get("/module_list", summary="Preprocessors, with their sliders (alias_names=true: the page's names)")
    def module_list(alias_names: bool = False) -> dict:
        preprocessors = service().preprocessors
        return {"module_list": preprocessors.names(alias_names=alias_names),
                "module_detail": preprocessors.module_detail(alias_names=alias_names)}

    @router.get("/control_types", summary="Control types: their preprocessors, models and defaults")
    def control_types() -> dict:
        cn = service()
        return {"control_types": cn.preprocessors.control_types(cn.library.names())}

    @router.get("/settings", summary="The number of ControlNet units (setting control_net_unit_count)")
    def settings() -> dict:
        return {"control_net_unit_count": service().unit_count}

    @router.post("/detect", summary="Run a preprocessor alone: the detected maps as base64 PNG")
    async def detect(request: DetectRequest, user: str = Depends(current_user)) -> dict:
        """The extension's answers: 422 for an unknown module or no picture; a picture that is not
        one, or over the server's pixel limit, or a preprocessor whose annotator weights are not
        downloaded, is a 400 that says so. The work is a queue job in the caller's
        lane, taking turns with generation (model-based preprocessors use the GPU too)."""
        from fastapi.concurrency import run_in_threadpool

        cn = service()
        try:
            preprocessor = cn.preprocessors.get(request.controlnet_module)
        except ValueError as exc:
            raise ApiError(422, "UnprocessableEntity", f"Module not available: {exc}") from None
        sources = request.controlnet_input_images or request.controlnet_images
        if not sources:
            raise ApiError(422, "UnprocessableEntity", "No image selected: send controlnet_input_images (base64 pictures).")
        if preprocessor.needs_mask and len(request.controlnet_masks) != len(sources):
            raise ApiError(422, "UnprocessableEntity", f"Preprocessor {request.controlnet_module} requires `controlnet_masks` param: one mask per image.")
        if len(request.controlnet_masks) > len(sources):
            raise ApiError(422, "UnprocessableEntity", f"{len(request.controlnet_masks)} masks for {len(sources)} images: send one mask per image at most.")
        try:
            cn.preprocessors.check_weights(preprocessor.name)  # missing annotator weights: said now, not after a wait in the queue
            images, masks = await run_in_threadpool(_decode_detect, request, sources, state.service.limits.max_pixels)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None
        module, res = request.controlnet_module, request.controlnet_processor_res
        a, b = request.controlnet_threshold_a, request.controlnet_threshold_b

        def run(job: Job) -> list["Image.Image"]:
            return cn.detect(module, images, res, a, b, masks=masks)

        job = state.queue.submit(DETECT_KIND, run, user=user)
        await done_future(job)
        _check_outcome(job)
        if job.result is None:
            raise ApiError(409, "Interrupted", "The detection was interrupted before it finished.")
        encoded = await run_in_threadpool(lambda: [encode_base64(im, "png", None) for im in job.result])
        job.result = None  # answered: the queue need not keep the pictures
        return {"images": encoded, "info": "Success"}

    return router


def _decode_detect(request: DetectRequest, sources: list[str], max_pixels: int | None):
    images, masks = [], []
    for i, data in enumerate(sources):
        image = to_rgb(decode_image(data, f"controlnet_input_images[{i}]", max_pixels))
        check_resolution(request.controlnet_processor_res, image.size, max_pixels, f"controlnet_input_images[{i}]",
                         "controlnet_processor_res")
        images.append(image)
        mask = request.controlnet_masks[i] if i < len(request.controlnet_masks) else None
        masks.append(to_mask(decode_image(mask, f"controlnet_masks[{i}]", max_pixels)) if mask else None)
    return images, masks


def _check_outcome(job: Job) -> None:
    if job.status not in FINISHED:
        raise ApiError(503, "ServiceUnavailable", "The server is stopping: the detection was not run.")
    if job.status is JobStatus.FAILED:
        raise ApiError(400, "BadRequest", job.error or "The preprocessor failed.")
