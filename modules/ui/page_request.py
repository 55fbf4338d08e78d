"""Which requests are a GET of the page itself (its HTML at `page_path`, behind any proxy
prefix in `root_path`): what the page's ASGI middlewares act on (ui/theme.py forces the theme,
ui/localization.py puts the page's language in its HTML); everything else passes them by."""

from __future__ import annotations


class PagePath:
    def __init__(self, page_path: str = "/"):
        self.paths = {page_path.rstrip("/") or "/", page_path.rstrip("/") + "/"}

    def matches(self, scope) -> bool:
        """Whether an ASGI scope is an HTTP GET of the page's own address."""
        if scope["type"] != "http" or scope["method"] != "GET":
            return False
        path, root = scope.get("path", "/"), scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        return path in self.paths
