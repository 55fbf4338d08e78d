"""Downloading one model file over HTTP(S) into a models/ folder, safely.

What a half-finished or tampered download must never do is end up under a name the
checkpoint scanner lists, so a file arrives as `<name>.partial` beside its target (a suffix
`catalog.PARTIAL_SUFFIXES` skips), is resumed from there with an HTTP Range request after an
interruption, has its SHA-256 checked when it is known, and only then is renamed into place.

Hub files and any other URL take this one httpx path: huggingface_hub's downloader obeys the
process-wide HF_HUB_OFFLINE=1 the app sets so that loaders never reach the hub (it is read once,
at import), and it writes into its own cache rather than models/, so using it would mean
flipping that global for every thread.

No gradio here: the CLI (`launch.py --download`), the app's start-up and the page all call it.
"""

from __future__ import annotations

import email.message
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from modules.models.catalog import HASH_CHUNK

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"  # one of catalog.PARTIAL_SUFFIXES: the scanner skips files that are still arriving
# What may be fetched into a models folder: checkpoints, LoRAs, VAEs, embeddings.
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
# Also allowed for a file whose SHA-256 is pinned (catalog entries): ONNX graphs (taggers, face
# detectors) and the small data files beside model weights (label tables, tokenizer vocabularies).
PINNED_EXTENSIONS = (".onnx", ".csv", ".txt", ".json")
CONNECT_TIMEOUT_S = 5.0  # with no network a fetch fails within seconds, not minutes
READ_TIMEOUT_S = 60.0
DEFAULT_HUB = "https://huggingface.co"  # HF_ENDPOINT's default, as in huggingface_hub and A1111
RESUME_ATTEMPTS = 3  # automatic resumes after a dropped connection, within one fetch
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f<>:"/\\|?*]')
_EXTENDED_FILENAME = re.compile(r"filename\*\s*=\s*([\w-]*)'[^']*'([^;]+)", re.IGNORECASE)


class FetchCancelled(Exception):
    """The fetch was cancelled; the partial file is kept so that a later fetch resumes it."""


@dataclass(frozen=True)
class FetchSource:
    """What to fetch: the URL and, where known (catalog entries), the file name, size and
    SHA-256 the result must have."""

    url: str
    filename: str | None = None
    sha256: str | None = None
    size: int | None = None
    label: str = ""  # how messages name it; the file name when empty
    # The file's Git blob id (SHA-1 of "blob <size>\0" + content): the pin a file kept in a Git
    # repository comes with when nobody publishes its SHA-256 (TAESD's decoders).
    git_blob: str | None = None

    @property
    def pinned(self) -> bool:
        return bool(self.sha256 or self.git_blob)

    def describe(self) -> str:
        return self.label or self.filename or filename_from_url(self.url) or self.url


@dataclass(frozen=True)
class FetchStatus:
    """One moment of a fetch, for a page or API to show. `state` is one of "waiting",
    "connecting", "downloading", "verifying", "done", "failed", "cancelled"."""

    name: str
    url: str
    folder: Path
    state: str = "waiting"
    filename: str | None = None  # once known (a URL may leave it to the server)
    done_bytes: int = 0
    total_bytes: int | None = None
    path: Path | None = None  # the final file, once there
    error: str | None = None
    skipped: bool = False  # the file was already there with the right hash

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    @property
    def fraction(self) -> float | None:
        if self.state == "done":
            return 1.0
        if not self.total_bytes:
            return None
        return min(1.0, self.done_bytes / self.total_bytes)


class FetchProgress:
    """A fetch's live state, shared between the thread that downloads and whoever polls it.
    Pass it to `fetch_file` (it is also a `(done, total)` callback); read it with `status()`;
    `cancel()` stops the download at the next chunk, keeping the partial file for a resume."""

    def __init__(self, source: FetchSource, folder: Path, on_finish: Callable[[FetchStatus], None] | None = None):
        """`on_finish(status)` runs once when the fetch ends, before anyone can see it ended:
        whoever polls and sees "done" then finds the file already in the lists it rescans."""
        self._lock = threading.Lock()
        self._status = FetchStatus(name=source.describe(), url=source.url, folder=Path(folder))
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._on_finish = on_finish

    def __call__(self, done: int, total: int | None) -> None:
        self.update(state="downloading", done_bytes=done, total_bytes=total)

    def update(self, **changes) -> None:
        with self._lock:
            if self._finished.is_set():
                return  # an ended fetch stays as it ended
            status = replace(self._status, **changes)
            if not status.finished:
                self._status = status
                return
        if self._on_finish is not None:
            try:
                self._on_finish(status)
            except Exception:
                log.exception("After the download of %s", status.name)
        with self._lock:
            self._status = status
            self._finished.set()

    def status(self) -> FetchStatus:
        with self._lock:
            return self._status

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the fetch has finished (done, failed or cancelled); False on timeout."""
        return self._finished.wait(timeout)


# --------------------------------------------------------------------------- names

def safe_filename(name: str) -> str:
    """A file name that stays inside its folder: the last path component only, no leading
    dots (no `..`, no hidden files), no control or reserved characters. ValueError when
    nothing usable is left."""
    base = re.split(r"[/\\]", unquote(name or "").strip())[-1]
    cleaned = _UNSAFE_CHARS.sub("_", base).strip().lstrip(".").strip()[:200]
    if not cleaned or set(cleaned) <= {".", "_", " "}:
        raise ValueError(f"Cannot make a safe file name from {name!r}.")
    return cleaned


def _last_segment(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def filename_from_url(url: str) -> str | None:
    """The last path segment of a URL when it names a model file, else None (for example
    `/api/download/models/123`, whose name only the server's Content-Disposition gives)."""
    segment = _last_segment(url)
    return segment if segment.lower().endswith(MODEL_EXTENSIONS) else None


def filename_from_disposition(header: str | None) -> str | None:
    """The file name in a Content-Disposition header: the RFC 5987 `filename*=` when given
    (RFC 6266 prefers it), else the plain `filename=`."""
    if not header:
        return None
    extended = _EXTENDED_FILENAME.search(header)
    if extended:
        try:
            return unquote(extended.group(2).strip().strip('"'), encoding=extended.group(1) or "utf-8", errors="strict") or None
        except (LookupError, UnicodeDecodeError):
            pass
    message = email.message.Message()
    message["content-disposition"] = header
    return message.get_filename() or None


def _check_model_name(name: str, url: str, pinned: bool = False) -> str:
    name = safe_filename(name)
    allowed = MODEL_EXTENSIONS + PINNED_EXTENSIONS if pinned else MODEL_EXTENSIONS
    if not name.lower().endswith(allowed):
        raise ValueError(f"{url} gives the file '{name}', which is not a model file ({', '.join(MODEL_EXTENSIONS)}).")
    return name


def partial_path(target: Path) -> Path:
    return target.with_name(target.name + PARTIAL_SUFFIX)


# --------------------------------------------------------------------------- hashing

def git_blob_id(path: Path) -> str:
    """The Git blob id of a file: what `git ls-tree` lists for it."""
    hasher = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _sha256_file(path: Path, hasher=None):
    hasher = hasher or hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            hasher.update(chunk)
    return hasher


# --------------------------------------------------------------------------- fetching

def default_client(timeout_s: float = CONNECT_TIMEOUT_S):
    """An httpx client that follows redirects (hub `resolve` URLs redirect to a CDN) and gives
    up connecting after `timeout_s` seconds."""
    import httpx

    from modules.version import VERSION

    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=timeout_s)
    return httpx.Client(follow_redirects=True, timeout=timeout, headers={"User-Agent": f"stable-diffusion-webui/{VERSION}"})


def hub_endpoint(env=None) -> str:
    """HF_ENDPOINT without a trailing slash, https://huggingface.co when unset."""
    env = os.environ if env is None else env
    return (env.get("HF_ENDPOINT") or DEFAULT_HUB).rstrip("/")


def _auth_headers(url: str) -> dict[str, str]:
    """HF_TOKEN, sent only to the hub itself (httpx drops it on a redirect to another host)."""
    token = os.environ.get("HF_TOKEN")
    if token and urlsplit(url).netloc == urlsplit(hub_endpoint()).netloc:
        return {"Authorization": f"Bearer {token}"}
    return {}


def _http_error(status: int, url: str, label: str) -> ValueError:
    if status == 404:
        return ValueError(f"Download of {label} failed: not found (HTTP 404) at {url}.")
    if status in (401, 403):
        return ValueError(f"Download of {label} failed: {url} needs a log-in or is not public (HTTP {status}); "
                          "for a gated Hugging Face file set HF_TOKEN.")
    return ValueError(f"Download of {label} failed: the server answered HTTP {status} for {url}.")


def _connect_error(exc: Exception, url: str, label: str) -> ValueError:
    host = urlsplit(url).netloc or url
    return ValueError(f"Download of {label} failed: could not connect to {host} ({type(exc).__name__}: {exc or 'no answer'}). "
                      "Check the network connection (and HF_ENDPOINT for hub files).")


def fetch_file(
    source: FetchSource,
    folder: Path,
    *,
    progress: FetchProgress | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
    console: bool = True,
    client=None,
    resume_attempts: int = RESUME_ATTEMPTS,
) -> Path:
    """Download `source` into `folder` and return the final path.

    - The file name comes from `source.filename`, else the URL, else the server's
      Content-Disposition, and is sanitized; it must have a model extension.
    - An existing file of that name is kept: returned as is when its SHA-256 is the expected
      one, else a ValueError (nothing is overwritten).
    - Bytes go to `<name>.partial`; a partial file left by an earlier try is resumed with an
      HTTP Range request, and a dropped connection is resumed up to `resume_attempts` times.
    - With a known SHA-256 (or size) the result is checked before it is renamed into place; a
      mismatch deletes the partial file and raises a ValueError with expected and actual values.
    - `progress` (a FetchProgress) and `on_progress(done, total)` follow it; `console` shows a
      tqdm bar. Failures raise ValueError with a sentence; FetchCancelled after `cancel()`.
    """
    import httpx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    label = source.describe()
    own_client = client is None
    client = client or default_client()
    report = _Reporter(progress, on_progress, console, label)
    try:
        name = source.filename or filename_from_url(source.url)
        target = None
        if name:
            target = folder / _check_model_name(name, source.url, pinned=source.pinned)
            if _already_there(target, source, report):
                return target
        attempts = 0
        for _ in range(resume_attempts + 3):  # the extra turns: restarts that made no progress to lose
            report.state("connecting")
            try:
                return _download(client, source, folder, target, report)
            except _Interrupted as interrupted:
                target = interrupted.target
                if interrupted.restart:
                    continue
                attempts += 1
                if attempts > resume_attempts:
                    raise ValueError(
                        f"Download of {label} was interrupted after {interrupted.done:,} bytes ({interrupted.reason}). "
                        f"The partial file {partial_path(target).name} is kept: run the download again to resume it."
                    ) from None
                log.warning("Download of %s interrupted at %s bytes (%s); resuming.", label, f"{interrupted.done:,}", interrupted.reason)
                time.sleep(min(2.0, 0.25 * attempts))
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError) as exc:
                raise _connect_error(exc, source.url, label) from None
            except httpx.TooManyRedirects:
                raise ValueError(f"Download of {label} failed: too many redirects from {source.url}.") from None
            except httpx.UnsupportedProtocol:
                raise ValueError(f"Cannot download {source.url}: only http:// and https:// URLs are supported.") from None
            except httpx.TimeoutException as exc:  # waiting for the answer: nothing was received
                raise ValueError(f"Download of {label} failed: {source.url} did not answer in time ({type(exc).__name__}).") from None
            except httpx.HTTPError as exc:  # e.g. the connection closed before the answer's headers
                raise ValueError(f"Download of {label} failed: {type(exc).__name__}: {exc or 'connection closed'}.") from None
        raise ValueError(f"Download of {label} failed: {source.url} kept restarting.")
    except FetchCancelled:
        report.finish(state="cancelled", error="cancelled")
        raise
    except (ValueError, OSError) as exc:
        message = str(exc) if isinstance(exc, ValueError) else f"Download of {label} failed: {exc}"
        report.finish(state="failed", error=message)
        if isinstance(exc, ValueError):
            raise
        raise ValueError(message) from exc
    finally:
        report.close()
        if own_client:
            client.close()


class _Interrupted(Exception):
    """The connection dropped mid-file: the partial file holds `done` good bytes."""

    def __init__(self, target: Path, done: int, reason: str, restart: bool = False):
        super().__init__(reason)
        self.target, self.done, self.reason = target, done, reason
        self.restart = restart  # reconnect at once: no transfer was lost (not counted as an interruption)


class _Reporter:
    """Sends progress to the FetchProgress, the callback and the console bar."""

    def __init__(self, progress: FetchProgress | None, callback, console: bool, label: str):
        self.progress, self.callback, self.console, self.label = progress, callback, console, label
        self.bar = None

    def state(self, state: str, **changes) -> None:
        if self.progress is not None:
            if self.progress.cancelled:
                raise FetchCancelled(self.label)
            self.progress.update(state=state, **changes)

    def start(self, name: str, done: int, total: int | None) -> None:
        self.state("downloading", filename=name, done_bytes=done, total_bytes=total)
        if self.console:
            from tqdm import tqdm

            self.close()
            self.bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024, desc=name, dynamic_ncols=True)
        if self.callback is not None:
            self.callback(done, total)

    def advance(self, done: int, total: int | None, step: int) -> None:
        if self.progress is not None:
            if self.progress.cancelled:
                raise FetchCancelled(self.label)
            self.progress(done, total)
        if self.callback is not None:
            self.callback(done, total)
        if self.bar is not None:
            self.bar.update(step)

    def finish(self, **changes) -> None:
        if self.progress is not None:
            self.progress.update(**changes)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _already_there(target: Path, source: FetchSource, report: _Reporter) -> bool:
    """True when `target` exists with the expected hash (nothing to do); ValueError when a
    different or unverifiable file has that name; False when it is absent."""
    if not target.exists():
        return False
    if source.pinned:
        kind, expected, digest = (("sha256", source.sha256, lambda: _sha256_file(target).hexdigest()) if source.sha256
                                  else ("Git blob", source.git_blob, lambda: git_blob_id(target)))
        report.state("verifying", filename=target.name)
        got = digest()
        if got == expected.lower():
            size = target.stat().st_size
            log.info("%s is already in %s with the right %s: nothing to download.", target.name, target.parent, kind)
            report.finish(state="done", path=target, skipped=True, done_bytes=size, total_bytes=size)
            return True
        raise ValueError(f"{target} already exists and is a different file ({kind} {got}, expected {expected}); "
                         "it is not overwritten. Move or rename it first.")
    raise ValueError(f"{target} already exists; it is not overwritten. Move or rename it first.")


def _download(client, source: FetchSource, folder: Path, target: Path | None, report: _Reporter) -> Path:
    """One connection: open (resuming if a partial file exists), stream, verify, move into place."""
    import httpx

    label = source.describe()
    offset = _partial_size(target)
    headers = {"Accept-Encoding": "identity", **_auth_headers(source.url)}  # byte offsets must be the file's own
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with client.stream("GET", source.url, headers=headers) as response:
        if response.status_code == 416 and offset:  # the partial file is complete already, or bigger than the file
            if source.size and offset == source.size:
                return _finish(partial_path(target), target, source, report, offset)
            partial_path(target).unlink(missing_ok=True)
            raise _Interrupted(target, 0, "the partial file did not match the server's file; starting again", restart=True)
        if response.status_code >= 400:
            raise _http_error(response.status_code, source.url, label)
        if target is None:  # the URL did not name the file: the server does
            name = filename_from_disposition(response.headers.get("content-disposition")) or _last_segment(str(response.url))
            if not name:
                raise ValueError(f"Cannot tell the file name of {source.url}: neither the URL nor the server names a model file.")
            target = folder / _check_model_name(name, source.url, pinned=source.pinned)
            if _already_there(target, source, report):
                return target
            if _partial_size(target):  # a partial file from an earlier try: reconnect with a Range request
                raise _Interrupted(target, _partial_size(target), "resuming the partial file", restart=True)
        partial = partial_path(target)
        if response.status_code == 206 and _range_start(response) == offset:
            mode, done = "ab", offset
        else:  # the server ignored the Range request: start again from the first byte
            mode, done = "wb", 0
        total = _total_size(response, done) or source.size
        hasher = _sha256_file(partial) if mode == "ab" and source.sha256 else hashlib.sha256()
        report.start(target.name, done, total)
        try:
            with open(partial, mode) as handle:
                for chunk in response.iter_bytes():  # as they arrive: a dropped connection loses nothing received
                    handle.write(chunk)
                    hasher.update(chunk)
                    done += len(chunk)
                    report.advance(done, total, len(chunk))
        except (httpx.ReadError, httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.WriteError) as exc:
            raise _Interrupted(target, done, f"{type(exc).__name__}: {exc or 'connection closed'}") from None
        if total is not None and done < total:
            raise _Interrupted(target, done, f"the server sent {done:,} of {total:,} bytes")
    return _finish(partial, target, source, report, done, hasher)


def _partial_size(target: Path | None) -> int:
    if target is None:
        return 0
    try:
        return partial_path(target).stat().st_size
    except OSError:
        return 0


def _range_start(response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("content-range", ""))
    return int(match.group(1)) if match else None


def _total_size(response, offset: int) -> int | None:
    """The whole file's size: from Content-Range for a resumed request, else Content-Length
    (absent when the server compresses or streams without a length)."""
    match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("content-range", ""))
    if match:
        return int(match.group(1))
    length = response.headers.get("content-length")
    if length and length.isdigit() and "content-encoding" not in response.headers:
        return offset + int(length)
    return None


def _finish(partial: Path, target: Path, source: FetchSource, report: _Reporter, done: int, hasher=None) -> Path:
    """Verify the complete partial file, then rename it to `target` in one step."""
    report.close()
    report.state("verifying", done_bytes=done)
    if source.sha256:
        digest = (hasher or _sha256_file(partial)).hexdigest()
        if digest != source.sha256.lower():
            partial.unlink(missing_ok=True)
            raise ValueError(f"Download of {source.describe()} is corrupt: expected sha256 {source.sha256.lower()}, got {digest}. "
                             "The downloaded file was deleted; try again.")
    if source.git_blob and (blob := git_blob_id(partial)) != source.git_blob.lower():
        partial.unlink(missing_ok=True)
        raise ValueError(f"Download of {source.describe()} is corrupt: expected Git blob {source.git_blob.lower()}, got {blob}. "
                         "The downloaded file was deleted; try again.")
    if source.size is not None and done != source.size:
        partial.unlink(missing_ok=True)
        raise ValueError(f"Download of {source.describe()} has the wrong size: expected {source.size:,} bytes, got {done:,}. "
                         "The downloaded file was deleted; try again.")
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    if target.exists():  # someone put a file there while this one downloaded
        raise ValueError(f"{target} appeared while downloading; it is not overwritten. The download is kept as {partial.name}.")
    os.replace(partial, target)
    log.info("Downloaded %s to %s", target.name, target.parent)
    report.finish(state="done", path=target, done_bytes=done, total_bytes=done)
    return target
