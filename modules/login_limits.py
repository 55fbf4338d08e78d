"""Back-off for wrong passwords, shared by the page's log-in and the API's HTTP Basic.

A studio machine on a LAN must not let anyone try passwords as fast as the network allows.
`LoginLimits` counts wrong passwords per client address and per user name; after
`max_failures` of them, further tries from that address, or for that user, are refused for a
delay that doubles with each further wrong password. The app owns one instance (built in
webui.py); `PageLoginLimit` applies it to gradio's `POST /login`, and modules.api.auth to the
API's credentials.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

from modules.network import read_body, refuse, replay, route_path


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0  # when the last wrong password came
    until: float = 0.0  # tries are refused before this time


@dataclass(frozen=True)
class Refusal:
    """Why a log-in try is refused now, and in how many whole seconds to try again."""

    detail: str
    retry_after: int


class LoginLimits:
    """Per-address and per-user back-off. The first `max_failures` wrong passwords cost
    nothing; the last of them locks for `base_delay` seconds, each further one for twice
    the one before, up to `max_delay`. The count is forgotten after `forget_after` seconds
    without a wrong password (counted from the end of the lock), and a right password
    resets it. `clock` is injectable so tests need not wait."""

    def __init__(self, max_failures: int = 5, base_delay: float = 30.0, max_delay: float = 900.0, forget_after: float = 900.0,
                 clock: Callable[[], float] = time.monotonic, max_tracked: int = 10_000):
        if max_failures < 1 or base_delay < 0 or max_delay < base_delay or forget_after < 0:
            raise ValueError("Log-in limits need max_failures >= 1 and 0 <= base_delay <= max_delay, forget_after >= 0.")
        self.max_failures, self.base_delay, self.max_delay, self.forget_after = max_failures, base_delay, max_delay, forget_after
        self._clock, self._max_tracked = clock, max_tracked
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], _Failures] = {}

    def refusal(self, address: str | None, user: str | None) -> Refusal | None:
        """Why a try from `address` for `user` must wait, or None when it may go ahead."""
        now = self._clock()
        with self._lock:
            waits = [(self._failures[key].until - now, key) for key in self._keys(address, user) if key in self._failures]
        wait, key = max(waits, default=(0.0, None))
        if key is None or wait <= 0:
            return None
        who = "from this address" if key[0] == "address" else f"for the user {key[1]!r}"
        seconds = math.ceil(wait)
        return Refusal(f"Too many wrong passwords {who}: log-ins are paused; try again in {seconds} second{'s' if seconds != 1 else ''}.",
                       seconds)

    def failed(self, address: str | None, user: str | None) -> None:
        """A wrong password (or an unknown user): count it against the address and the user."""
        now = self._clock()
        with self._lock:
            if len(self._failures) >= self._max_tracked:
                self._forget_old(now)
            for key in self._keys(address, user):
                state = self._failures.get(key)
                if state is None or self._forgotten(state, now):
                    state = self._failures[key] = _Failures()
                state.count += 1
                state.last = now
                if state.count >= self.max_failures:
                    state.until = now + min(self.max_delay, self.base_delay * 2 ** (state.count - self.max_failures))

    def succeeded(self, address: str | None, user: str | None) -> None:
        """A right password: the address and the user start again from nothing."""
        with self._lock:
            for key in self._keys(address, user):
                self._failures.pop(key, None)

    @staticmethod
    def _keys(address: str | None, user: str | None) -> list[tuple[str, str]]:
        return [key for key in (("address", address), ("user", user)) if key[1]]

    def _forgotten(self, state: _Failures, now: float) -> bool:
        return now - max(state.last, state.until) > self.forget_after

    def _forget_old(self, now: float) -> None:
        for key in [k for k, s in self._failures.items() if self._forgotten(s, now)]:
            del self._failures[key]


MAX_LOGIN_FORM = 64 * 1024  # a user name and a password; anything longer is not a log-in


class PageLoginLimit:
    """ASGI middleware over gradio's `POST /login`: a try that must wait gets 429 with
    Retry-After before gradio sees it; gradio's answer (200 logged in, 400 wrong) is
    counted. Everything else passes through untouched."""

    def __init__(self, app, limits: LoginLimits):
        self.app, self.limits = app, limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or route_path(scope) not in ("/login", "/login/"):
            return await self.app(scope, receive, send)
        body = await read_body(receive, MAX_LOGIN_FORM)
        if body is None:
            return await refuse(scope, send, 413, "A log-in form is a user name and a password; this one is too large.")
        address = scope["client"][0] if scope.get("client") else None
        user = await _form_user(scope, body)
        refusal = self.limits.refusal(address, user)
        if refusal is not None:
            return await refuse(scope, send, 429, refusal.detail, {"retry-after": str(refusal.retry_after)})

        async def counted(message):
            if message["type"] == "http.response.start":
                if message["status"] == 200:
                    self.limits.succeeded(address, user)
                elif message["status"] == 400:  # gradio's "Incorrect credentials."
                    self.limits.failed(address, user)
            await send(message)

        await self.app(scope, replay(body, receive), counted)


async def _form_user(scope, body: bytes) -> str | None:
    """The user name a log-in form names, as gradio reads it (stripped); None when it names none."""
    from starlette.requests import Request

    try:
        form = await Request(scope, replay(body, None)).form()
    except Exception:  # noqa: BLE001 - a form gradio cannot read either: it answers that itself
        return None
    name = form.get("username")
    return (name.strip() or None) if isinstance(name, str) else None
