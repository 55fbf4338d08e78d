"""--theme light|dark: the page opens in that theme whatever the browser prefers.

gradio 6 takes the page's theme from the `__theme` query parameter of its address (there is
no server-side setting for it; A1111 forces it the same way). So a browser opening the page
without one is redirected to the same address with `__theme=<theme>` added. An address that
already names a theme keeps it, and nothing but a browser's request for the page itself is
redirected (API clients, gradio's own routes and HEAD checks are left alone).
"""

from __future__ import annotations

from urllib.parse import parse_qs

from modules.ui.page_request import PagePath

THEMES = ("light", "dark")


class ForcedTheme:
    """ASGI middleware: `app.add_middleware(ForcedTheme, theme="dark", page_path="/")`."""

    def __init__(self, app, theme: str, page_path: str = "/"):
        if theme not in THEMES:
            raise ValueError(f"Unknown theme '{theme}': use one of {', '.join(THEMES)}.")
        self.app, self.theme = app, theme
        self.page = PagePath(page_path)

    def _redirects(self, scope) -> bool:
        if not self.page.matches(scope):
            return False
        accept = dict(scope.get("headers") or []).get(b"accept", b"")
        query = scope.get("query_string", b"").decode("latin-1")
        return b"text/html" in accept and "__theme" not in parse_qs(query, keep_blank_values=True)

    async def __call__(self, scope, receive, send):
        if not self._redirects(scope):
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        # A relative reference: the same path (behind any proxy prefix), the query plus the theme.
        location = "?" + (f"{query}&" if query else "") + f"__theme={self.theme}"
        await send({"type": "http.response.start", "status": 307,
                    "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0"), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": b""})
