"""The Extra networks cards' pictures: GET /extra-networks/thumb?kind=lora&name=<key>&v=<mtime>.

Only the preview of an item a tab lists is served, found by its exact key (a name with `..` or a
path that is not a listed key is 404), scaled down on the server and cached by file version; the
`v` in the address changes when the picture does, so the browser may keep it. A page route: it
sits behind the page's log-in (modules/network.GradioGuard guards every route that is not the API's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Response
from fastapi.concurrency import run_in_threadpool

from modules.models.network_cards import KINDS, NetworkCards

if TYPE_CHECKING:
    from webui import App

PATH = "/extra-networks/thumb"


async def preview_response(cards: NetworkCards, kind: str, name: str) -> Response:
    if kind not in KINDS:
        raise HTTPException(404, f"No such card kind: {kind}.")
    data = await run_in_threadpool(cards.thumbnail, kind, name)
    if data is None:
        raise HTTPException(404, "That card has no preview picture.")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


def build_network_previews_router(app: "App") -> APIRouter:
    """The picture route over the app's cards (the tabs' own, so thumbnails are cached once)."""
    cards = app.network_cards
    router = APIRouter()

    async def thumb(kind: str = "", name: str = "") -> Response:
        return await preview_response(cards, kind, name)

    router.add_api_route(PATH, thumb, methods=["GET"], include_in_schema=False)
    return router
