"""Whose files gradio may serve to whom, when the server has log-ins.

gradio serves any file by path (`/gradio_api/file=<path>`) from its allowed folders: the
outputs folder and its own cache, where uploads and every file shown on the page live. On a
studio server that would let one user fetch another's images, uploads and trash by path.
`UserFiles` (ASGI middleware, built in webui.py with its state) decides per request:

- a file in the outputs folder belongs to the user whose folder it lies in (per-user outputs
  are `outputs/<folder>/<user>/...`; a trashed one keeps that path under `.trash/<token>/`):
  only that user gets it, as only that user's Gallery shows it, unless the
  `gallery_show_all_users` setting shares everyone's;
- a file in gradio's cache belongs to the users it was handed to: the response of
  `/gradio_api/upload` (what they uploaded) and the results of the page's events (what was
  shown to them) are read for cache paths, which `HandedFiles` records per session user. A
  cache file handed to no one (gradio's own) is served to any logged-in user.

Others get 404 with a sentence; a page event that names someone else's cached file as an
input (img2img from another user's upload) is refused the same way.
"""

from __future__ import annotations

import json
import os
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Callable, Iterable

from modules.network import read_body, refuse, replay, request_cookies, route_path

FILE_ROUTE = re.compile(r"^/(?:gradio_api/)?file(?:=|/)(?P<path>.+)$")
HANDING_ROUTES = re.compile(r"^/gradio_api/(?:upload/?$|queue/data/?$|run/|api/|call/)")  # whose answers carry files
INPUT_ROUTES = re.compile(r"^/gradio_api/(?:queue/join/?$|run/|api/|call/|stream/)")  # whose bodies may name files
MAX_EVENT_BODY = 64 * 1024 * 1024  # a page event's JSON; files themselves come through /upload
MAX_PENDING = 1024 * 1024  # an answer's unfinished line kept for the next chunk
NOT_YOURS = ("Not found: {what} is not one of your files. With log-ins on, each user's images and uploads are served only to "
             "that user.")
_JSON_STRING = re.compile(rb'"((?:[^"\\]|\\.)*)"')


def real(path: str | PurePath) -> str:
    """The absolute path with links resolved, as gradio checks it (relative paths are taken
    from the working folder, as gradio does)."""
    return os.path.realpath(os.path.abspath(str(path)))


def fold(name: str) -> str:
    """A name as a case-insensitive file system (macOS, Windows) matches it: `ALICE/` opens
    `alice/` there, so ownership must not tell them apart (on Linux, users whose names differ
    only in case share their files)."""
    return unicodedata.normalize("NFC", name).casefold().rstrip(". ")


@dataclass(frozen=True)
class OutputOwners:
    """Who owns a file in the outputs folder: the known users whose folders it lies in."""

    root: str  # the outputs folder, real path
    trash: str  # the Gallery's trash, real path
    user_folders: frozenset[str]  # every log-in's folder name (modules.outputs.naming.user_folder)
    shared: Callable[[], bool] = lambda: False  # the gallery_show_all_users setting

    @classmethod
    def of(cls, outputs: Path, trash: Path, users: Iterable[str], shared: Callable[[], bool] = lambda: False) -> "OutputOwners":
        from modules.outputs.naming import user_folder

        return cls(real(outputs), real(trash), frozenset(fold(user_folder(u)) for u in users), shared)

    def owners(self, path: str) -> frozenset[str] | None:
        """Whose `path` (a real path) is, as folded folder names; empty when no one's in
        particular (outputs/ itself, a category folder's own files), None when outside the
        outputs folder. As the Gallery decides: `<category>/<owner>/...`; and any folder of
        the path that is a user's, so `[user]` placed deeper by the folder pattern counts too.
        So files in folders of no current user (a removed user, dates from before log-ins)
        are no one's to read but with `gallery_show_all_users`."""
        for base, skip in ((self.trash, 1), (self.root, 0)):  # the trash first: it may lie inside outputs/
            if path == base or path.startswith(base.rstrip(os.sep) + os.sep):
                folders = [fold(p) for p in PurePath(os.path.relpath(path, base)).parts[skip:-1]]  # not the trash token, not the file
                return frozenset(folders[1:2]) | (frozenset(folders) & self.user_folders)
        return None

    def may_read(self, user: str | None, path: str) -> bool:
        from modules.outputs.naming import user_folder

        owners = self.owners(path)
        return not owners or (user is not None and fold(user_folder(user)) in owners) or self.shared()


class HandedFiles:
    """Which users were handed which files in gradio's cache folders (uploads, shown
    results). Safe to share between threads; files that are gone are dropped as it grows."""

    def __init__(self, cache_dirs: Iterable[str | Path], prune_every: int = 10_000):
        self.roots = tuple(sorted({real(d).rstrip(os.sep) + os.sep for d in cache_dirs}))
        self._markers = tuple(sorted({json.dumps(r)[1:-1].encode() for r in self.roots} | {r.encode() for r in self.roots}))
        self._readers: dict[str, tuple[str, set[str]]] = {}  # folded path -> (the path, who was handed it)
        self._lock = threading.Lock()
        self._prune_every, self._next_prune = prune_every, prune_every

    def in_cache(self, path: str) -> bool:
        return path.startswith(self.roots)

    def record(self, user: str, paths: Iterable[str]) -> None:
        with self._lock:
            for path in paths:  # folded: gradio names a cached file by its content's hash, so names alike but for case are alike
                self._readers.setdefault(fold(path), (path, set()))[1].add(user)
            if len(self._readers) >= self._next_prune:
                for gone in [key for key, (path, _) in self._readers.items() if not os.path.exists(path)]:
                    del self._readers[gone]
                self._next_prune = len(self._readers) + self._prune_every

    def readers(self, path: str) -> frozenset[str] | None:
        """Who was handed `path` (a real path); None when no one was."""
        with self._lock:
            found = self._readers.get(fold(path))
            return frozenset(found[1]) if found is not None else None

    def may_read(self, user: str | None, path: str) -> bool:
        readers = self.readers(path)
        return readers is None or user in readers

    def paths_in(self, text: bytes) -> set[str]:
        """The cache files that JSON `text` (an answer, an SSE line, a request body) names."""
        if not any(marker in text for marker in self._markers):
            return set()
        found = set()
        for match in _JSON_STRING.finditer(text):
            raw = match.group(1)
            if not any(marker in raw for marker in self._markers):
                continue
            try:
                value = json.loads(b'"' + raw + b'"')
            except ValueError:
                continue
            for candidate in (value, value.split("file=", 1)[-1]):  # a path, or a /gradio_api/file= URL
                path = real(candidate) if os.path.isabs(candidate) else None
                if path and self.in_cache(path):
                    found.add(path)
        return found


class UserFiles:
    """ASGI middleware: gradio's file routes serve a user's files to that user only (see the
    module's docstring). `session_user` reads the page's log-in from the cookies; without a
    page log-in (only --api-auth) no one is logged in on the page and `handed` is None."""

    def __init__(self, app, outputs: OutputOwners, session_user: Callable[[dict[str, str]], str | None] | None = None,
                 handed: HandedFiles | None = None):
        self.app, self.outputs, self.session_user, self.handed = app, outputs, session_user, handed

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = route_path(scope)
        user = self.session_user(request_cookies(scope)) if self.session_user is not None else None
        served = FILE_ROUTE.match(path)
        if served:
            if not self.may_read(user, real(served.group("path"))):
                return await refuse(scope, send, 404, NOT_YOURS.format(what=repr(served.group("path"))))
            return await self.app(scope, receive, send)
        if self.handed is None or user is None:
            return await self.app(scope, receive, send)
        if scope.get("method") == "POST" and INPUT_ROUTES.match(path):
            body = await read_body(receive, MAX_EVENT_BODY)
            if body is None:
                return await refuse(scope, send, 413, "This request is too large: upload files through /gradio_api/upload first.")
            others = sorted(p for p in self.handed.paths_in(body) if not self.handed.may_read(user, p))
            if others:
                return await refuse(scope, send, 404, NOT_YOURS.format(what=f"the file {Path(others[0]).name!r} this request names"))
            receive = replay(body, receive)
        if HANDING_ROUTES.match(path):
            scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", []) if k != b"accept-encoding"]}  # plain text to read
            send = self._recording(user, send)
        await self.app(scope, receive, send)

    def may_read(self, user: str | None, path: str) -> bool:
        if not self.outputs.may_read(user, path):
            return False
        return self.handed is None or not self.handed.in_cache(path) or self.handed.may_read(user, path)

    def _recording(self, user: str, send):
        """`send`, noting each cache file the answer hands to `user` before it goes out (an
        SSE stream is read line by line, so a path split between chunks is still found)."""
        pending = b""

        async def recording(message):
            nonlocal pending
            if message["type"] == "http.response.body":
                text = pending + message.get("body", b"")
                cut = text.rfind(b"\n") + 1 if message.get("more_body") else len(text)
                if len(text) - cut > MAX_PENDING:
                    cut = len(text)
                text, pending = text[:cut], text[cut:]
                self.handed.record(user, self.handed.paths_in(text))
            await send(message)

        return recording
