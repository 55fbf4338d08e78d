"""Downloads that run in the background of the app: the first-start default checkpoint and
whatever the page asks for. The app object owns one `Downloads`; each download is a thread
with a `FetchProgress` that the page polls."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from modules.models.downloadable import Catalog, resolve_request
from modules.models.fetch import FetchCancelled, FetchProgress, FetchSource, FetchStatus, fetch_file

if TYPE_CHECKING:
    from modules.models.catalog import HashCache

log = logging.getLogger(__name__)


class Downloads:
    def __init__(
        self,
        folders: Mapping[str, Path],
        catalog: Catalog,
        *,
        console: bool = True,
        hashes: "HashCache | None" = None,
        on_finished: Callable[[str, FetchStatus], None] | None = None,
    ):
        """`folders` maps A1111's models/ subfolder names (Stable-diffusion, Lora, VAE,
        embeddings) to paths. A verified download's SHA-256 goes into `hashes`, so it is not
        read again to hash it. `on_finished(folder_name, status)` runs on the download's thread
        when one ends, done or not (the app rescans its lists there)."""
        self.folders = dict(folders)
        self.catalog = catalog
        self.console = console
        self.hashes = hashes
        self.on_finished = on_finished
        self._lock = threading.Lock()
        self._all: list[FetchProgress] = []
        self._running: dict[tuple[str, Path], FetchProgress] = {}

    def start(self, query: str, folder: str | None = None, *, failure_note: str = "") -> FetchProgress:
        """Begin downloading a catalog name or an http(s) URL in a thread and return its
        progress at once. A bad query is a ValueError here; a failed download shows in the
        progress (`status().error`) and as one logged line, ending with `failure_note`.
        Asking again for a download that is running returns the running one: two writers
        must never share a partial file. A catalog entry's `also` entries start with it."""
        source, folder_name = resolve_request(query, self.catalog, folder=folder)
        directory = self._folder(folder_name)
        key = (source.url, directory)
        with self._lock:
            running = self._running.get(key)
            if running is not None:
                return running
            progress = FetchProgress(source, directory, on_finish=lambda status: self._finished(source, folder_name, key, status))
            self._all.append(progress)
            self._running[key] = progress
        thread = threading.Thread(target=self._run, args=(source, directory, progress, failure_note),
                                  name=f"download-{source.describe()}", daemon=True)
        thread.start()
        entry = self.catalog.find(query)
        for companion in entry.also if entry is not None else ():  # the rest of a model of several files
            self.start(companion, failure_note=failure_note)
        return progress

    def statuses(self) -> list[FetchStatus]:
        """Every download started since the app started, oldest first."""
        with self._lock:
            return [p.status() for p in self._all]

    def running(self) -> list[FetchProgress]:
        with self._lock:
            return list(self._running.values())

    def _folder(self, name: str) -> Path:
        try:
            return self.folders[name]
        except KeyError:
            raise ValueError(f"No '{name}' folder is configured for downloads.") from None

    def _run(self, source: FetchSource, directory: Path, progress: FetchProgress, failure_note: str) -> None:
        try:
            fetch_file(source, directory, progress=progress, console=self.console)
        except FetchCancelled:
            log.info("Download of %s cancelled; the partial file is kept for a later resume.", source.describe())
        except ValueError as exc:  # already a sentence; the progress holds it too
            if failure_note:  # the app carries on without it: a warning, not an error
                log.warning("%s %s", exc, failure_note)
            else:
                log.error("%s", exc)
        except Exception as exc:  # a bug must not vanish silently in a thread
            log.exception("Download of %s failed", source.describe())
            progress.update(state="failed", error=f"Download of {source.describe()} failed: {type(exc).__name__}: {exc}")

    def _finished(self, source: FetchSource, folder_name: str, key, status: FetchStatus) -> None:
        """Runs as a download ends, before its progress says so."""
        with self._lock:
            self._running.pop(key, None)
        if status.state == "done" and status.path is not None and source.sha256 and self.hashes is not None:
            self.hashes.remember(status.path, source.sha256)
        if self.on_finished is not None:
            self.on_finished(folder_name, status)
