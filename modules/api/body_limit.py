"""How large a request body the API reads, before any of it is parsed.

A 50 MB JSON body of millions of style names or settings keys costs seconds of parsing and
gigabytes of memory before any validation can refuse it. Bodies over the limit are refused
with 413 from their Content-Length, or while they arrive when they come chunked. Routes that
carry pictures (img2img, extras, PNG Info, interrogate, ControlNet's detect) get the larger limit; both are settings
(`limit_request_megabytes`, `limit_image_request_megabytes`; 0 turns one off).
"""

from __future__ import annotations

import re
from typing import Callable

from modules.network import read_body, refuse, replay, route_path

IMAGE_ROUTES = re.compile(r"^(?:/sdapi/v1/(?:img2img|queue/img2img|extra-single-image|extra-batch-images|png-info|interrogate)"
                          r"|/controlnet/detect)/?$")


class BodyLimit:
    """ASGI middleware over the API's routes (`/sdapi/`, ControlNet's `/controlnet/`). `limits()` gives (plain, with
    pictures) in megabytes, read per request so a settings change applies at once."""

    def __init__(self, app, limits: Callable[[], tuple[float, float]], prefix: str | tuple[str, ...] = ("/sdapi/", "/controlnet/")):
        self.app, self.limits, self.prefix = app, limits, prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        path = route_path(scope)
        if not path.startswith(self.prefix):
            return await self.app(scope, receive, send)
        plain, pictures = self.limits()
        megabytes = pictures if IMAGE_ROUTES.match(path) else plain
        if not megabytes:
            return await self.app(scope, receive, send)
        limit = int(megabytes * 1024 * 1024)
        declared = next((value for name, value in scope.get("headers", []) if name == b"content-length"), None)
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await refuse(scope, send, 400, "The Content-Length header is not a number.")
            if size > limit:
                return await refuse(scope, send, 413, self._message(path, size, megabytes))
            return await self.app(scope, receive, send)
        body = await read_body(receive, limit)  # chunked: read up to the limit, then hand it on
        if body is None:
            return await refuse(scope, send, 413, self._message(path, None, megabytes))
        await self.app(scope, replay(body, receive), send)

    @staticmethod
    def _message(path: str, size: int | None, megabytes: float) -> str:
        which = "limit_image_request_megabytes" if IMAGE_ROUTES.match(path) else "limit_request_megabytes"
        sent = f" ({size / 1024 / 1024:,.1f} MB)" if size is not None else ""
        return (f"The request body{sent} is larger than this server accepts on {path}: {megabytes:g} MB (setting '{which}'). "
                "Send smaller or fewer pictures, or ask the server's owner to raise the limit.")
