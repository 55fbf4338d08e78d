"""Serving beyond this machine (A1111's LAN flags): who may make the server touch its own
folders, HTTPS, the page's log-in file, a reverse proxy's path prefix, and what the gradio
routes may hand to a visitor.

`ServerAccess` is the one place that decides whether a feature that reads or writes folders
on the server is allowed: the app builds it from the flags and hands it to the tabs and the
settings store. The two ASGI middlewares here only shape requests; they know nothing of
generation. Nothing here is a global: everything is built from the parsed flags.
"""

from __future__ import annotations

import argparse
import json
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

NON_LOCAL_FLAGS = ("listen", "share", "server_name", "ngrok", "cloudflared")  # A1111's webui_is_non_local, and our tunnel
INSECURE_FLAG = "--enable-insecure-extension-access"
LOGIN_FLAGS = ("gradio_auth", "gradio_auth_path", "api_auth")  # log-ins mean other people use this server
EXTENSION_SETTINGS = ("disabled_extensions", "disable_all_extensions", "extensions_index_url")  # what the Extensions tab writes


class AccessRefused(ValueError):
    """A feature turned off because the server is shared on a network. A ValueError, so the
    page shows it like any other readable problem; the API answers it with 403."""


@dataclass(frozen=True)
class ServerAccess:
    """A1111's `webui_is_non_local` and `disable_extension_access`. Once the server is
    reachable from other machines (`--listen`, `--share`, `--server-name`, `--ngrok`), a
    visitor must not be able to read or write arbitrary folders on it (the batch tabs' server
    folders, output folders outside the data folder), unless the owner starts it with
    --enable-insecure-extension-access."""

    data_dir: Path
    shared_by: tuple[str, ...] = ()  # the flags that make it non-local, as typed
    insecure_allowed: bool = False
    logins: tuple[str, ...] = ()  # the log-in flags given (--gradio-auth, ...): extensions stay the owner's business

    @classmethod
    def from_args(cls, args: argparse.Namespace, data_dir: Path) -> "ServerAccess":
        shared = tuple("--" + name.replace("_", "-") for name in NON_LOCAL_FLAGS if getattr(args, name, None))
        logins = tuple("--" + name.replace("_", "-") for name in LOGIN_FLAGS if getattr(args, name, None))
        return cls(Path(data_dir).resolve(), shared, bool(getattr(args, "enable_insecure_extension_access", False)), logins)

    def extension_refusal(self, action: str) -> str | None:
        """Why `action` (installing, updating, removing, switching extensions or running their
        install.py: code that runs on the server) is off, or None when allowed. A1111's
        disable_extension_access, and log-ins too: a server with log-ins has other users."""
        reasons = self.shared_by + self.logins
        if not reasons or self.insecure_allowed:
            return None
        how = "shared on the network" if self.shared_by else "used by other people"
        return (f"{action} is turned off: this server is {how} ({', '.join(reasons)}) and extensions run their own code on it. "
                f"The server's owner can allow it by starting it with {INSECURE_FLAG}.")

    def require_extension_access(self, action: str) -> None:
        refusal = self.extension_refusal(action)
        if refusal:
            raise AccessRefused(refusal)

    @property
    def non_local(self) -> bool:
        return bool(self.shared_by)

    @property
    def restricted(self) -> bool:
        return self.non_local and not self.insecure_allowed

    def refusal(self, feature: str) -> str | None:
        """Why `feature` (it reads or writes folders on the server) is off, or None when allowed."""
        if not self.restricted:
            return None
        return (f"{feature} is turned off: this server is shared on the network ({', '.join(self.shared_by)}) and this feature "
                f"reads and writes folders on the server. The server's owner can allow it by starting it with {INSECURE_FLAG}.")

    def require_server_folders(self, feature: str) -> None:
        refusal = self.refusal(feature)
        if refusal:
            raise AccessRefused(refusal)

    def check_limit(self, key: str, value: Any, current: Any) -> None:
        """A work limit (`limit_*`, modules/generation/limits.py) may be tightened by anyone,
        but not loosened or turned off (0) by a visitor while the server is restricted: the
        limits are what keeps one visitor from holding the shared worker."""
        if not self.restricted or not key.startswith("limit_") or not isinstance(value, (int, float)) or not isinstance(current, (int, float)):
            return
        if current and (value == 0 or value > current):
            raise AccessRefused(f"{key} can only be lowered while this server is shared on the network ({', '.join(self.shared_by)}); "
                                f"it is {current:g}, asked {value:g}. The server's owner can change it in config.json or start the "
                                f"server with {INSECURE_FLAG}.")

    def check_setting(self, key: str, value: Any) -> None:
        """A settings change: output folders (`outdir_*`) must stay inside the data folder
        while the server is restricted. Empty means the default folder. The extension switches
        and index URL (/sdapi/v1/options writes them too) follow the Extensions tab's rule."""
        if key in EXTENSION_SETTINGS:
            self.require_extension_access(f"Changing {key}")
        if not self.restricted or not key.startswith("outdir_") or not isinstance(value, str) or not value.strip():
            return
        path = Path(value.strip())
        inside = not path.is_absolute() and (self.data_dir / path).resolve().is_relative_to(self.data_dir)
        if not inside:
            raise AccessRefused(f"{key} must be a folder inside the data folder, such as outputs/my-images, while this server is shared "
                                f"on the network ({', '.join(self.shared_by)}); got {value!r}. The server's owner can allow any folder "
                                f"by starting it with {INSECURE_FLAG}.")


def exposure_warnings(args: argparse.Namespace) -> list[str]:
    """What a server shared on the network leaves open to anyone who reaches it, for the log."""
    access = ServerAccess.from_args(args, Path("."))
    if not access.non_local:
        return []
    shared = ", ".join(access.shared_by)
    found = []
    page, api = not getattr(args, "nowebui", False), bool(getattr(args, "api", False) or getattr(args, "nowebui", False))
    page_auth = bool(getattr(args, "gradio_auth", None) or getattr(args, "gradio_auth_path", None))
    api_auth = bool(getattr(args, "api_auth", None))
    if page and not page_auth:
        if api_auth:  # A1111 does the same: each flag guards one side only
            found.append(f"Shared on the network ({shared}) with --api-auth but without --gradio-auth: --api-auth guards only the "
                         "API. The page is OPEN: anyone who can reach this machine can generate, and see every user's images in "
                         "the Gallery. Add --gradio-auth (or --gradio-auth-path) to close it.")
        else:
            found.append(f"Shared on the network ({shared}) without --gradio-auth: anyone who can reach this machine can use the page.")
    if api and not api_auth:
        if page and page_auth:
            found.append(f"Shared on the network ({shared}) with --gradio-auth but without --api-auth: the page's log-in does not "
                         "guard the API. The API (/sdapi/v1) is OPEN: anyone who can reach this machine can generate and change "
                         "settings through it. Add --api-auth to close it.")
        else:
            found.append(f"Shared on the network ({shared}) without --api-auth: anyone who can reach this machine can use the API.")
    if access.insecure_allowed:
        found.append(f"{INSECURE_FLAG}: visitors can read and write folders on this machine (batch folders, output folders).")
    return found


def page_users(args: argparse.Namespace) -> dict[str, str]:
    """The page's log-ins: --gradio-auth plus the entries of the --gradio-auth-path file
    (A1111's format: user:password entries separated by commas or new lines)."""
    from modules.api.auth import parse_users

    spec = [getattr(args, "gradio_auth", None) or ""]
    path = getattr(args, "gradio_auth_path", None)
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--gradio-auth-path: cannot read {path} ({getattr(exc, 'strerror', None) or exc}).") from None
        from_file = parse_users(text.replace("\r", "\n").replace("\n", ","))
        if not from_file:
            raise ValueError(f"--gradio-auth-path: {path} holds no user:password entries.")
        spec.append(",".join(f"{user}:{password}" for user, password in from_file.items()))
    return parse_users(",".join(spec))


def tls_options(args: argparse.Namespace) -> dict[str, str]:
    """uvicorn's ssl options for --tls-keyfile/--tls-certfile, checked now, so a wrong file
    stops the start with a sentence (A1111 falls back to plain HTTP; on a LAN that would
    quietly send passwords in clear)."""
    key, cert = getattr(args, "tls_keyfile", None), getattr(args, "tls_certfile", None)
    if not key and not cert:
        return {}
    if not (key and cert):
        raise ValueError("HTTPS needs both --tls-keyfile and --tls-certfile.")
    for flag, path in (("--tls-keyfile", key), ("--tls-certfile", cert)):
        if not Path(path).is_file():
            raise ValueError(f"{flag}: {path} is not a file.")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"--tls-certfile/--tls-keyfile: {cert} and {key} are not a matching PEM certificate and key ({exc}).") from None
    return {"ssl_keyfile": str(key), "ssl_certfile": str(cert)}


_SUBPATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")


def subpath(value: str | None) -> str:
    """--subpath as a root path: `sd`, `/sd` and `/sd/` are all `/sd`; none is ``."""
    text = "/" + (value or "").strip().strip("/")
    if text == "/":
        return ""
    if not _SUBPATH.fullmatch(text) or any(part in (".", "..") for part in text.split("/")):
        raise ValueError(f"--subpath: {value!r} is not a URL path such as /sd.")
    return text


class Subpath:
    """Serve under a reverse proxy's path prefix (--subpath): requests work whether the proxy
    forwards `/prefix/...` as is or strips the prefix, and both gradio and FastAPI see the
    prefix as the root path, so the links and URLs they build carry it."""

    def __init__(self, app, prefix: str):
        self.app, self.prefix = app, prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and self.prefix:
            path = scope["path"]
            raw = scope.get("raw_path") or path.encode()
            if not (path == self.prefix or path.startswith(self.prefix + "/")):  # the proxy stripped the prefix
                path, raw = self.prefix + path, self.prefix.encode() + raw
            scope = {**scope, "root_path": self.prefix, "path": path, "raw_path": raw}
        await self.app(scope, receive, send)


# What the log-in page itself is drawn with (gradio serves these before anyone logs in).
LOGIN_PAGE_PATHS = frozenset({"", "/", "/login", "/login/", "/logout", "/theme.css", "/favicon.ico", "/manifest.json", "/robots.txt"})
LOGIN_PAGE_PREFIXES = ("/assets/", "/static/")
FETCHING_ROUTES = re.compile(r"^/(gradio_api/)?(file[=/][a-zA-Z][a-zA-Z0-9+.-]+:/|proxy=)")  # a URL, not C:/ on Windows


class GradioGuard:
    """Two rules over the gradio routes:

    - With a page log-in, gradio checks it on most routes but not all (its heartbeat, cancel,
      reset, stream and start-up routes take any caller). Here a request without a page
      session is refused unless it is for the log-in page and the files it is drawn with;
      the API's routes (`api_paths`) keep their own --api-auth.
    - gradio's `file=<URL>` and `proxy=` routes make the server fetch other sites for the
      visitor; this app never needs them, so a shared studio machine is nobody's proxy.
    """

    def __init__(self, app, session_user: Callable[[dict[str, str]], str | None] | None, api_paths: tuple[str, ...] = ()):
        self.app, self.session_user, self.api_paths = app, session_user, api_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = route_path(scope)
        if FETCHING_ROUTES.match(path):
            return await refuse(scope, send, 403, "This server does not fetch other sites' files.")
        if self.session_user is not None and not self._open(path) and self.session_user(request_cookies(scope)) is None:
            return await refuse(scope, send, 401, "Not logged in: log in on the page first.")
        await self.app(scope, receive, send)

    def _open(self, path: str) -> bool:
        return (path in LOGIN_PAGE_PATHS or path.startswith(LOGIN_PAGE_PREFIXES)
                or any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.api_paths))


def gradio_session_user(gradio_app) -> Callable[[dict[str, str]], str | None]:
    """Who a request's cookies log in as on the mounted gradio app (gradio sets its token in
    two cookies, the second for plain-HTTP pages), or None."""
    names = (f"access-token-{gradio_app.cookie_id}", f"access-token-unsecure-{gradio_app.cookie_id}")

    def user(cookies: dict[str, str]) -> str | None:
        for name in names:
            token = cookies.get(name)
            if token and token in gradio_app.tokens:
                return gradio_app.tokens[token]
        return None

    return user


def route_path(scope) -> str:
    """The path the app routes on: without the root path (a --subpath prefix)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root):]
    return path


def request_cookies(scope) -> dict[str, str]:
    from starlette.requests import cookie_parser  # lenient: one odd cookie from another site on this host spoils nothing

    jar: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            jar.update(cookie_parser(value.decode("latin-1")))
    return jar


async def refuse(scope, send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """Answer an HTTP request with `{"detail": ...}` (a websocket is closed as a policy violation)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"detail": detail}).encode()
    extra = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive, limit: int) -> bytes | None:
    """A request's whole body, read for a middleware to look at; None when it is over `limit` bytes."""
    body, more = bytearray(), True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: the app finds out itself
            break
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            return None
    return bytes(body)


def replay(body: bytes, receive):
    """An ASGI `receive` that hands over a body already read, then waits on the real one
    (for the client's disconnect); with `receive` None, it reports a disconnect."""
    pending = [body]

    async def again():
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive() if receive is not None else {"type": "http.disconnect"}

    return again
