"""Schemathesis against the app's own /openapi.json, in-process (ASGI), on the tiny model.

Every operation gets a bounded number of generated requests. Each answer must not be a server
error (the interrogate route's 503 for missing weights aside), must be the JSON its content type says,
must match the response schema the document publishes, and a 4xx must carry a message a
person can read. Generation requests are shrunk to 64 px, two steps and one image (a random
width or step count that is valid would otherwise mean minutes of CPU), and queued jobs are
waited for, so the whole run takes a minute or two.
"""

from __future__ import annotations

import base64
import io
import time

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from PIL import Image
from schemathesis.checks import content_type_conformance, response_schema_conformance

from tests.hostile.harness import assert_readable, assert_strict_json
from tests.servers import data_dir_with_tiny_model, in_process_app

EXAMPLES = 60  # per operation
GENERATION = {"/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/queue/txt2img", "/sdapi/v1/queue/img2img"}
# Training would run for minutes, and a folder the fuzzer names ("/", ".") could be walked for as
# long: a folder given as text is swapped for one that does not exist, so each body is refused
# (400) when its folder is read at the latest. The hostile cases (tests/hostile/test_training.py)
# send the traversal and shared-server folders themselves.
TRAINING = {"/sdapi/v1/train/lora", "/sdapi/v1/train/embedding"}
TRAINING_FOLDERS = ("train_data_dir", "data_root", "log_directory")
EXTRAS = {"/sdapi/v1/extra-single-image", "/sdapi/v1/extra-batch-images", "/sdapi/v1/png-info", "/sdapi/v1/interrogate"}


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 90, 200)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PNG = _png()


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_checkpoint):
    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("openapi-fuzz"), tiny_checkpoint)
    with in_process_app(data, "--api", "--nowebui", "--disable-console-progressbars", checkpoint=data / "models" / "Stable-diffusion" / tiny_checkpoint.name,
                        raise_server_exceptions=False) as (_, client):  # the client also waits for queued jobs
        yield client.app, client


@pytest.fixture(scope="module")
def api_schema(api):
    asgi, _ = api
    return schemathesis.openapi.from_asgi("/openapi.json", asgi)


def _small(value, low: int, high: int, to: int):
    """A whole number the server would accept shrunk to `to`; anything else (out of range, the
    wrong type) is left for the server to refuse."""
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return to
    return value


def shrink(path: str, body):
    """Keep generated requests cheap without hiding the invalid values the fuzzer finds."""
    if not isinstance(body, dict):
        return body
    if path in GENERATION:
        for name, default, low, high, to in (("width", 512, 64, 2048, 64), ("height", 512, 64, 2048, 64), ("steps", 50, 1, 150, 2),
                                             ("batch_size", 1, 1, 8, 1), ("n_iter", 1, 1, 100, 1), ("hr_second_pass_steps", 0, 0, 150, 1),
                                             ("hr_resize_x", 0, 1, 2048, 64), ("hr_resize_y", 0, 1, 2048, 64)):
            body[name] = default if body.get(name) is None and default != 512 and name != "steps" else body.get(name)
            if body[name] is None:
                body[name] = to
            body[name] = _small(body[name], low, high, to)
        # About half get a real picture, so the valid path runs too (the rest keep what was generated).
        if path.endswith("img2img") and not body.get("init_images") and len(body) % 2 == 0:
            body["init_images"] = [PNG]
        elif isinstance(body.get("init_images"), list) and body["init_images"] and isinstance(body["init_images"][0], str):
            if len(body["init_images"][0]) % 2 == 0:
                body["init_images"] = [PNG]
    if path == "/controlnet/detect":  # about half get a real picture, at a small preprocessor resolution
        if isinstance(body.get("controlnet_input_images"), list) and len(body) % 2 == 0:
            body["controlnet_input_images"] = [PNG]
        body["controlnet_processor_res"] = _small(body.get("controlnet_processor_res", -1), 1, 1 << 62, 64)
    if path in EXTRAS:
        if "imageList" not in body and (not body.get("image") and len(body) % 2 == 0 or isinstance(body.get("image"), str) and len(body["image"]) % 2 == 0):
            body["image"] = PNG
        for name in ("upscaling_resize_w", "upscaling_resize_h"):
            if name in body:
                body[name] = _small(body[name], 1, 8192, 96)
        if isinstance(body.get("upscaling_resize"), (int, float)) and not isinstance(body["upscaling_resize"], bool) and 0 < body["upscaling_resize"] <= 8:
            body["upscaling_resize"] = min(body["upscaling_resize"], 2)
        if isinstance(body.get("imageList"), list):
            body["imageList"] = body["imageList"][:4]
            for item in body["imageList"]:
                if isinstance(item, dict) and isinstance(item.get("data"), str) and len(item["data"]) % 2 == 0:
                    item["data"] = PNG
    if path in TRAINING:  # every training body is refused before it queues: no run starts (see TRAINING)
        for name in TRAINING_FOLDERS:
            if isinstance(body.get(name), str):
                body[name] = "no-such-training-folder"
    return body


def no_server_error(ctx, response, case):
    allowed = response.status_code == 503 and case.path.endswith("/interrogate")  # no interrogate weights here: a 503 naming the download
    assert response.status_code < 500 or allowed, f"{response.status_code}: {response.text[:500]}"


def readable_error(ctx, response, case):
    if 400 <= response.status_code < 600:
        body = response.json()
        detail = body.get("detail") if isinstance(body, dict) else None
        assert isinstance(detail, str) and detail.strip(), f"{response.status_code} without a readable detail: {response.text[:300]}"
        assert_readable(detail)


def strict_json(ctx, response, case):
    if "json" in response.headers.get("content-type", [""])[0] if isinstance(response.headers.get("content-type"), list) else "json" in str(
            response.headers.get("content-type", "")):
        assert_strict_json(response.text)


def success_schema_conformance(ctx, response, case):
    """The published schema of a 2xx answer. Error answers are checked by the test below
    instead, once: the document publishes FastAPI's default error shape for every route."""
    if 200 <= response.status_code < 300:
        return response_schema_conformance(ctx, response, case)
    return None


CHECKS = [no_server_error, readable_error, strict_json, content_type_conformance, success_schema_conformance]

def wait_idle(client: TestClient, timeout: float = 60) -> None:
    """Queued jobs (from the queue routes) finish before the next example, so none piles up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = client.get("/sdapi/v1/queue").json()
        if not queue.get("running") and not queue.get("waiting"):
            return
        time.sleep(0.05)
    for job in [queue.get("running"), *queue.get("waiting", [])]:
        if job:
            client.delete(f"/sdapi/v1/queue/{job['id']}")
    pytest.fail(f"queued jobs still running {timeout:.0f} s later: {queue}")


# The operations in groups, so a failure says where; every operation must fall in one.
AREAS = {
    "generation": r"^/sdapi/v1/(txt2img|img2img)$",
    "queue": r"^/sdapi/v1/queue",
    "pictures": r"^/sdapi/v1/(extra-single-image|extra-batch-images|png-info|interrogate)$",
    "options": r"^/sdapi/v1/options$",
    "actions": r"^/sdapi/v1/(interrupt|skip|refresh-[a-z]+)$",
    "listings": r"^/sdapi/v1/(progress|cmd-flags|sd-models|samplers|schedulers|upscalers|latent-upscale-modes|sd-vae|loras|embeddings|"
                r"prompt-styles|scripts|script-info|face-restorers|hypernetworks|realesrgan-models|memory|extensions|workers)$",
    "controlnet": r"^/controlnet/",  # the ControlNet extension's routes
    "training": r"^/sdapi/v1/(create/embedding|train/)",  # LoRA runs and A1111's textual-inversion routes
}


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def test_the_published_error_body_is_the_one_sent(api):
    """/openapi.json documents each route's 422 answer; a client generated from it must be
    able to read the error body the server actually sends ({error, detail, body, errors})."""
    from jsonschema import Draft202012Validator

    _, client = api
    spec = client.get("/openapi.json").json()
    sent = client.post("/sdapi/v1/txt2img", json={"steps": "many"})
    assert sent.status_code == 422
    documented = spec["paths"]["/sdapi/v1/txt2img"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]
    validator = Draft202012Validator({**documented, "components": spec["components"]}
                                     if "$ref" not in documented else {"$ref": documented["$ref"], "components": spec["components"]})
    problems = [f"{'/'.join(map(str, e.path)) or 'body'}: {e.message}" for e in validator.iter_errors(sent.json())]
    assert not problems, f"the 422 body sent does not match the one documented: {problems}; sent {sent.text[:300]}"


def test_every_operation_is_in_an_area(api_schema):
    import re

    loose = [op.label for op in operations(api_schema) if not any(re.search(p, op.path) for p in AREAS.values())]
    assert not loose, f"operations no fuzz area covers: {loose}"


@pytest.mark.parametrize("area", AREAS)
def test_every_operation_answers_within_its_contract(area, api_schema, api):
    """Up to EXAMPLES generated requests per operation of the area; all failures are collected
    (each with the operation and the request) before the test fails."""
    import re

    from hypothesis import given

    _, client = api
    failures = []
    for operation in [op for op in operations(api_schema) if re.search(AREAS[area], op.path)]:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None,
                  report_multiple_bugs=False)
        def run(case):
            case.body = shrink(case.path, case.body)
            try:
                case.call_and_validate(checks=CHECKS)
            finally:
                wait_idle(client)

        try:
            run()
        except Exception as exc:  # noqa: BLE001 (collected, then reported together)
            failures.append(f"{operation.label}: {str(exc).strip()[:1500]}")
    assert not failures, "\n\n".join(failures)
