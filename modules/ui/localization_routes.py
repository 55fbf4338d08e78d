"""GET /internal/localization: the strings the page's translator uses, `{"name", "lang",
"strings"}`, for the setting's language or the one `?localization=<name>` asks for ("None":
English, no strings). Behind the page's log-in, like every page route (modules/network.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from modules.ui.localization import active_name, page_data

if TYPE_CHECKING:
    from modules.localization import Localizations
    from modules.settings import SettingsStore
    from webui import App

PATH = "/internal/localization"


def localization_answer(settings: "SettingsStore", localizations: "Localizations", asked: str | None) -> JSONResponse:
    """The route's answer: 404 with a sentence for a name no file has."""
    if asked is not None and asked not in localizations.choices():
        return JSONResponse({"detail": f"There is no localization named '{asked}': the choices are {', '.join(localizations.choices())}."},
                            status_code=404)
    name = asked if asked is not None else active_name(settings, localizations)
    return JSONResponse(page_data(name, localizations), headers={"Cache-Control": "no-store"})


def build_localization_router(app: "App") -> APIRouter:
    router = APIRouter()
    settings, localizations = app.settings, app.localizations

    @router.get(PATH, include_in_schema=False)
    def localization(localization: str | None = None) -> JSONResponse:
        return localization_answer(settings, localizations, localization)

    return router
