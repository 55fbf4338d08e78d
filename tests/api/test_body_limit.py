"""Request bodies over the limits are refused before they are read into memory: by their
Content-Length, or while a chunked one arrives; smaller ones reach the route whole."""

from __future__ import annotations

import json

from modules.api.body_limit import BodyLimit
from tests.aio import run


def call(path: str, chunks: list[bytes], length: int | None, limits=(1.0, 4.0)) -> tuple[int, bytes, bytes]:
    """Run one POST through the middleware over an app that echoes the body it read."""
    seen = []

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    headers = [(b"content-length", str(length).encode())] if length is not None else []
    scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "headers": headers}
    run(BodyLimit(app, lambda: limits)(scope, receive, send))  # a browser test's loop may be running here
    return sent[0]["status"], sent[1]["body"], seen[0] if seen else b""


MB = 1024 * 1024


def test_a_declared_length_over_the_limit_is_a_413_naming_the_setting():
    status, body, seen = call("/sdapi/v1/txt2img", [b"x"], 2 * MB)
    assert status == 413 and seen == b""
    detail = json.loads(body)["detail"]
    assert "(2.0 MB) is larger than this server accepts on /sdapi/v1/txt2img: 1 MB (setting 'limit_request_megabytes')" in detail


def test_picture_routes_have_the_larger_limit():
    status, _, seen = call("/sdapi/v1/img2img", [b"a" * (2 * MB)], 2 * MB)
    assert status == 200 and len(seen) == 2 * MB
    status, body, _ = call("/sdapi/v1/img2img", [b"x"], 5 * MB)
    assert status == 413 and "limit_image_request_megabytes" in json.loads(body)["detail"]


def test_a_chunked_body_is_cut_off_at_the_limit_and_a_small_one_passes_whole():
    status, body, seen = call("/sdapi/v1/options", [b"a" * (MB // 2)] * 3, None)
    assert status == 413 and seen == b"" and "limit_request_megabytes" in json.loads(body)["detail"]
    status, _, seen = call("/sdapi/v1/options", [b'{"a":', b" 1}"], None)
    assert status == 200 and seen == b'{"a": 1}'


def test_zero_turns_a_limit_off_and_other_paths_are_not_touched():
    assert call("/sdapi/v1/txt2img", [b"a" * (2 * MB)], 2 * MB, limits=(0, 4.0))[0] == 200
    assert call("/gradio_api/upload", [b"a" * (2 * MB)], 2 * MB)[0] == 200
