"""The "Available" list: an extension index in A1111's index.json format
(`{"tags": {tag: description}, "extensions": [{"name", "url", "description", "tags", "added",
"created_at", "stars"}, ...]}`), read from a URL (the `extensions_index_url` setting) or, for
tests and offline mirrors, a file:// URL or a local path. Entries already installed are marked
by their repository URL. No gradio here: the Extensions tab renders what this returns.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from modules.extensions.manage import normalize_url

TIMEOUT = 10.0  # seconds to wait for the index server
MAX_BYTES = 32 * 1024 * 1024  # A1111's index is about 1 MB


@dataclass(frozen=True)
class IndexEntry:
    """One extension of the index. `description` is HTML in A1111's index: escape or sanitise
    it before showing it."""

    name: str
    url: str
    description: str = ""
    tags: tuple[str, ...] = ()
    added: str = ""  # YYYY-MM-DD, when it joined the index
    created_at: str = ""  # ISO date of the repository
    stars: int = 0
    installed: bool = False


@dataclass(frozen=True)
class ExtensionIndex:
    source: str
    tags: dict[str, str]  # tag -> what it means
    entries: tuple[IndexEntry, ...]

    def mark_installed(self, installed_urls: Iterable[str]) -> "ExtensionIndex":
        """The same index with `installed` set on the entries whose URL is installed (trailing
        `.git` and `/` ignored)."""
        urls = {normalize_url(u) for u in installed_urls if u}
        return replace(self, entries=tuple(replace(e, installed=normalize_url(e.url) in urls) for e in self.entries))


def read_source(source: str, timeout: float = TIMEOUT) -> bytes:
    """The bytes at `source`: http(s) with a timeout, file:// or a path. ValueError saying it
    could not be loaded (offline?) otherwise."""
    source = (source or "").strip()
    if not source:
        raise ValueError("No extension index URL is set (the extensions_index_url setting).")
    scheme = urlsplit(source).scheme.lower()
    try:
        if scheme in ("http", "https"):
            request = urllib.request.Request(source, headers={"User-Agent": "stable-diffusion-webui", "Accept": "application/json"})
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) only, checked above)
                data = response.read(MAX_BYTES + 1)
        elif scheme == "file":
            data = _read_file(Path(urllib.request.url2pathname(urlsplit(source).path)))
        elif scheme in ("", ) or (len(scheme) == 1 and source[1:3] in (":\\", ":/")):  # a path (C:\... on Windows)
            data = _read_file(Path(source))
        else:
            raise ValueError(f"The extension index must be an http(s):// or file:// URL, not {source!r}.")
    except ValueError:
        raise
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise ValueError(f"Could not load the index from {source} (offline?): {why}") from None
    if len(data) > MAX_BYTES:
        raise ValueError(f"The index at {source} is larger than {MAX_BYTES // (1024 * 1024)} MB; is it the right URL?")
    return data


def _read_file(path: Path) -> bytes:
    with open(path, "rb") as file:
        return file.read(MAX_BYTES + 1)


def parse_index(data: bytes | str, source: str = "the index") -> ExtensionIndex:
    """An index from its JSON text; ValueError "the index at … does not parse: …" for anything
    that is not A1111's format. Entries without a name or an http(s) URL are skipped."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"The index at {source} does not parse: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("extensions"), list):
        raise ValueError(f"The index at {source} does not parse: it is not an object with an \"extensions\" list.")
    tags = raw.get("tags") if isinstance(raw.get("tags"), dict) else {}
    entries = []
    for item in raw["extensions"]:
        if not isinstance(item, dict):
            continue
        name, url = item.get("name"), item.get("url")
        if not isinstance(name, str) or not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https", "file"):
            continue
        item_tags = item.get("tags") if isinstance(item.get("tags"), list) else []
        stars = item.get("stars")
        entries.append(IndexEntry(name.strip(), url.strip(), _text(item.get("description")), tuple(t for t in item_tags if isinstance(t, str)),
                                  _text(item.get("added")), _text(item.get("created_at")),
                                  stars if isinstance(stars, int) and not isinstance(stars, bool) else 0))
    return ExtensionIndex(source, {str(k): _text(v) for k, v in tags.items()}, tuple(entries))


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def load_index(source: str, installed_urls: Iterable[str] = (), timeout: float = TIMEOUT) -> ExtensionIndex:
    """Read, parse and mark the index at `source` (see read_source and parse_index for the errors).
    The Extensions tab calls it with `ExtensionManager.installed_urls()`."""
    return parse_index(read_source(source, timeout), source).mark_installed(installed_urls)
