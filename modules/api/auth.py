"""Who is calling the API: the --api-auth log-in, or without one the client's address.

Kept apart from the routes so the LAN layer (modules.network) can parse the same
`user:password` lists without importing the routes.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import TYPE_CHECKING, Callable

from fastapi import HTTPException, Request

if TYPE_CHECKING:
    from modules.login_limits import LoginLimits


def parse_users(spec: str | None) -> dict[str, str]:
    """`user:pass[,user2:pass2]`; the password is everything after the first colon."""
    users = {}
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user:
            raise ValueError(f"Bad credentials '{item}': use user:password[,user2:password2].")
        users[user] = password
    return users


def _refused(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Basic"})


def basic_credentials(header: str | None) -> tuple[str, str]:
    """(user, password) from an `Authorization: Basic ...` header; a 401 that says what is
    wrong with a missing or malformed one."""
    if not header or not header.strip():
        raise _refused("Not authenticated: this server needs HTTP Basic credentials (--api-auth).")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise _refused(f"Authorization scheme '{scheme}' is not supported: send HTTP Basic credentials.")
    if not token.strip():
        raise _refused("Not authenticated: the Authorization header holds no credentials (--api-auth is set).")
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _refused("Malformed Authorization header: the Basic credentials are not valid base64.") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise _refused("Malformed Authorization header: the Basic credentials must be user:password.")
    return user, password


def user_dependency(users: dict[str, str], limits: "LoginLimits | None" = None) -> Callable[..., str]:
    """Who is asking: the --api-auth user (checked, 401 otherwise), or without auth the client's
    address. Jobs wait in one lane per user, so this is also what keeps the queue fair.

    Wrong passwords are counted by `limits` (the app's, which the page's log-in uses too):
    past the limit, tries from that address or for that
    user get 429 with Retry-After until the back-off ends. A malformed header is not a try.

    Without --api-auth any Authorization header is ignored, as A1111 does: Open WebUI and
    SillyTavern send `Basic ` with empty credentials when their auth setting is blank."""

    def current_user(request: Request) -> str:
        if not users:
            return f"ip:{request.client.host}" if request.client else ""
        user, password = basic_credentials(request.headers.get("authorization"))
        address = request.client.host if request.client else None
        refusal = limits.refusal(address, user) if limits is not None else None
        if refusal is not None:
            raise HTTPException(status_code=429, detail=refusal.detail, headers={"Retry-After": str(refusal.retry_after)})
        expected = users.get(user)
        if expected is None or not secrets.compare_digest(password.encode(), expected.encode()):
            if limits is not None:
                limits.failed(address, user)
            raise _refused("Incorrect username or password")
        if limits is not None:
            limits.succeeded(address, user)
        return user

    return current_user
