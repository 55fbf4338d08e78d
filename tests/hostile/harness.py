"""The hostile-request harness: one table row per request, each checked the same way.

A case names a route, a body (built when the case runs, so a 50 MB body is not held for the
whole session) and what the server must answer: a status (never 5xx), for 4xx a message a
person can read that names what was wrong, for 200 the warnings it must carry. After every
case the server must still answer `/sdapi/v1/progress` within a second, and its worker must be
idle again (a queued job left running by a hostile request is cancelled and reported).
"""

from __future__ import annotations

import base64
import ctypes
import gc
import io
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil
import pytest

API = "/sdapi/v1"
SMALL = {"width": 64, "height": 64, "steps": 2, "seed": 1}  # the tiny model at 64 px: a fraction of a second
IMG2IMG = {**SMALL, "denoising_strength": 0.5}  # one step
FOUR_XX = "4xx"

# What a readable message must not look like: a traceback, a Python repr, an OS error, a pydantic dump.
_UNREADABLE = [
    re.compile(p)
    for p in (r"Traceback \(most recent", r'File "[^"]+", line \d+', r" object at 0x[0-9a-f]+", r"<class '", r"\[Errno \d+\]",
              r"\{'(type|loc|msg|input)':", r"^\s*[\[{]", r"\b\w+Error\(")
]
MAX_MESSAGE = 2000  # a message that echoes a megabyte of input back is not readable either


@dataclass
class Case:
    """One hostile request. `body` is a JSON-able value, raw bytes, or a callable returning
    either (built when the case runs); JSON values are sent as Python's json.dumps writes them,
    so NaN and Infinity go out as the bare words and lone surrogates as \\ud800 escapes.

    `expect`: a status, a tuple of acceptable ones, or FOUR_XX (any 400-499). `mentions`:
    patterns the 4xx message must contain (case-insensitive). `warns`: patterns that must each
    match one of a 200 generation's `info.warnings`. `then(hostile, response)` checks more."""

    id: str
    method: str
    path: str
    body: Any = None
    expect: int | tuple[int, ...] | str = FOUR_XX
    mentions: tuple[str, ...] = ()
    warns: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] | None = None
    then: Callable[[Any, Any], None] | None = None
    seconds: float = 20.0  # the answer must come within this (hostile input must not tie the server up)

    def param(self):
        return pytest.param(self, id=self.id)


def post(id: str, route: str, body: Any = None, expect: int | tuple | str = FOUR_XX, mentions: tuple[str, ...] = (), **kw) -> Case:
    return Case(id, "POST", f"{API}/{route}", body, expect=expect, mentions=mentions, **kw)


def get(id: str, route: str, **kw) -> Case:
    return Case(id, "GET", f"{API}/{route}", **kw)


def raw_json(text: str) -> bytes:
    """JSON text exactly as written (NaN, Infinity, escapes), UTF-8."""
    return text.encode("utf-8")


def encode_body(body: Any) -> tuple[bytes | None, dict[str, str]]:
    if callable(body):
        body = body()
    if body is None:
        return None, {}
    if isinstance(body, (bytes, bytearray)):
        return bytes(body), {"content-type": "application/json"}
    return json.dumps(body).encode("ascii"), {"content-type": "application/json"}


def message_of(response) -> str:
    """The 4xx body's `detail` (or `error`) text; fails the case when there is none."""
    try:
        body = response.json()
    except ValueError:
        pytest.fail(f"{response.status_code} without a JSON body: {response.text[:300]!r}")
    if not isinstance(body, dict):
        pytest.fail(f"{response.status_code} body is not an object: {response.text[:300]!r}")
    detail = body.get("detail") if isinstance(body.get("detail"), str) else body.get("error")
    if not isinstance(detail, str) or not detail.strip():
        pytest.fail(f"{response.status_code} without a readable detail/error text: {response.text[:300]!r}")
    return detail


def assert_readable(text: str) -> None:
    assert len(text) <= MAX_MESSAGE, f"the message is {len(text)} characters long: {text[:200]!r}..."
    for pattern in _UNREADABLE:
        assert not pattern.search(text), f"the message looks like Python internals ({pattern.pattern}): {text[:400]!r}"


def assert_strict_json(text: str) -> None:
    """What any JSON client can parse: no NaN or Infinity words, no lone surrogates (raw or escaped)."""
    def refuse(word):
        raise AssertionError(f"the response holds {word}, which is not JSON: {text[:300]!r}")

    def walk(value) -> None:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise AssertionError(f"the response holds a lone surrogate: {text[:300]!r}") from None
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(k)
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(json.loads(text, parse_constant=refuse))


def first_image(response):
    """The first picture of a generation or extras answer, decoded."""
    from PIL import Image

    body = response.json()
    data = body["images"][0] if "images" in body else body["image"]
    assert data, f"no picture in the answer: {response.text[:300]!r}"
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def gives_image(size: tuple[int, int] | None = None):
    def check(hostile, response):
        image = first_image(response)
        if size is not None:
            assert image.size == size, f"the picture is {image.size}, expected {size}"
    return check


def options_still_served(hostile, response):
    r = hostile.client.get(f"{API}/options")
    assert r.status_code == 200, f"GET /options answers {r.status_code} afterwards: {r.text[:300]!r}"
    assert_strict_json(r.text)


def nothing_outside(hostile, response):
    hostile.assert_nothing_written_outside()


def both(*checks):
    def check(hostile, response):
        for c in checks:
            c(hostile, response)
    return check


def warnings_of(response) -> list[str]:
    info = response.json().get("info")
    if isinstance(info, str):
        info = json.loads(info)
    return list((info or {}).get("warnings") or [])


def status_ok(status: int, expect) -> bool:
    if isinstance(expect, tuple):
        return any(status_ok(status, e) for e in expect)
    if expect == FOUR_XX:
        return 400 <= status < 500
    return status == expect


def run_case(hostile, case: Case):
    """Send the case, check its answer, then check the server is still serving and idle."""
    client = hostile.client
    hostile.wait_idle(what="before this case")
    content, headers = encode_body(case.body)
    start = time.perf_counter()
    response = client.request(case.method, case.path, content=content, headers={**headers, **case.headers}, params=case.params)
    elapsed = time.perf_counter() - start
    del content
    summary = f"{case.method} {case.path} -> {response.status_code} {response.text[:600]!r}"
    try:
        assert response.status_code < 500 or response.status_code == case.expect, f"a server error: {summary}"
        assert status_ok(response.status_code, case.expect), f"expected {case.expect}: {summary}"
        if "json" in response.headers.get("content-type", ""):
            assert_strict_json(response.text)
        if response.status_code >= 400:
            text = message_of(response)
            assert_readable(text)
            for pattern in case.mentions:
                assert re.search(pattern, text, re.I), f"the message does not mention /{pattern}/: {text!r}"
        elif case.warns:
            found = warnings_of(response)
            for pattern in case.warns:
                assert any(re.search(pattern, w, re.I) for w in found), f"no warning matches /{pattern}/; warnings: {found!r}"
        if case.then is not None:
            case.then(hostile, response)
        assert elapsed < case.seconds, f"the answer took {elapsed:.1f} s"
    finally:
        try:
            hostile.assert_alive()
            hostile.wait_idle(what="after this case", cancel=True)
        finally:
            hostile.restore_options()
            if os.environ.get("HOSTILE_TRACE_RSS"):  # where memory stays behind: one line per case
                print(f"\n{case.id}: {elapsed:.2f} s, RSS {hostile.rss_growth() / 2**20:+.0f} MiB over the baseline")
    return response


# --------------------------------------------------------------------------- memory


def trimmed_rss() -> int:
    """This process's resident memory after a collection, with freed heap handed back to the
    system where glibc allows it (freed-but-kept arenas are not a leak)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return psutil.Process().memory_info().rss


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
