"""Reaching the running server from elsewhere: gradio's public share tunnel (--share), a
Cloudflare quick tunnel (--cloudflared), and opening the local page in a browser (--autolaunch).

All of it happens once the server answers, on a thread beside uvicorn (`StartupLinks`). A tunnel
that cannot open (no network, a blocked download) is a printed sentence, never a crash: the
server keeps serving locally. Nothing here is imported by the generation core or the API.
"""

from __future__ import annotations

import collections
import os
import queue
import re
import secrets
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlparse, urlunparse

# cloudflared prints the quick tunnel's address in a box on stderr; api.trycloudflare.com is the
# service it asks for one, named in its error messages, not a tunnel.
CLOUDFLARED_URL = re.compile(r"https://(?!api\.)[-a-z0-9]+\.trycloudflare\.com")
CLOUDFLARED_DOWNLOADS = "https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/downloads/"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class TunnelError(RuntimeError):
    """A tunnel could not be opened; the message is a sentence for the console."""


@dataclass
class Tunnel:
    name: str  # "gradio share" or "cloudflared"
    url: str
    close: Callable[[], None]


def wait_until_serving(url: str, timeout: float = 600, stop: threading.Event | None = None, interval: float = 0.25) -> bool:
    """True once `url` gives any HTTP answer (a login page or a 404 counts), False after
    `timeout` seconds or when `stop` is set. Certificates are not checked: it is our own server."""
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5, context=context):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(interval)
    return False


def open_gradio_share(local_url: str) -> Tunnel:
    """gradio's share link (https://….gradio.live) to the server at `local_url`, the way
    `Blocks.launch(share=True)` opens it: a share token, a tunnel address from gradio's API
    server (or GRADIO_SHARE_SERVER_ADDRESS), and the frpc program gradio downloads at first use."""
    from gradio import networking, tunneling

    parsed = urlparse(local_url)
    if parsed.scheme == "https":
        raise TunnelError("gradio's share tunnel passes plain HTTP on to the server, which serves HTTPS here (--tls-keyfile/"
                          "--tls-certfile); use --cloudflared, or start without TLS")
    token = secrets.token_urlsafe(32)
    try:
        address = networking.setup_tunnel(parsed.hostname or "127.0.0.1", parsed.port or 80, token, None, None)
    except Exception as exc:  # httpx, OSError, ValueError with frpc's log, checksum: all mean "no link"
        raise TunnelError(_share_failure(exc, tunneling)) from exc
    # gradio's share server answers on https even though frpc names the address http (as launch() does).
    scheme = "http" if networking.GRADIO_SHARE_SERVER_ADDRESS else "https"
    url = urlunparse(urlparse(address)._replace(scheme=scheme))

    def close() -> None:
        for tunnel in list(tunneling.CURRENT_TUNNELS):
            if tunnel.share_token == token and tunnel.proc is not None:
                tunnel.proc.terminate()
                tunnel.proc = None

    return Tunnel("gradio share", url, close)


def _share_failure(exc: Exception, tunneling) -> str:
    text = str(exc).strip()
    if type(exc).__name__ == "ChecksumMismatchError":
        return f"the frpc program gradio downloaded ({tunneling.BINARY_PATH}) has the wrong checksum; delete it and start again"
    if "share link from Gradio API" in text:
        return "gradio's share server (api.gradio.app) could not be reached: is this machine online?"
    if not os.path.exists(tunneling.BINARY_PATH):
        return (f"gradio's tunnel program could not be downloaded ({text or type(exc).__name__}). Without internet access, "
                f"download {tunneling.BINARY_URL} elsewhere and save it as {tunneling.BINARY_PATH} (executable)")
    if text.startswith(tunneling.TUNNEL_ERROR_MESSAGE):  # frpc ran but gave no address; its log follows
        log = [line for line in text[len(tunneling.TUNNEL_ERROR_MESSAGE):].splitlines() if line.strip()]
        return "gradio's tunnel program (frpc) gave no address: " + (" | ".join(log[-6:]) or "(no output)")
    lines = [line for line in text.splitlines() if line.strip()]
    return " | ".join(lines[:6]) or type(exc).__name__


def find_cloudflared() -> str | None:
    """A `cloudflared` program on PATH, else the one the pycloudflared package keeps (it is
    downloaded from Cloudflare's GitHub releases at first use). None when neither is there."""
    on_path = shutil.which("cloudflared")
    if on_path:
        return on_path
    try:
        from pycloudflared.util import download, get_info
    except ImportError:
        return None
    try:
        info = get_info()
    except RuntimeError as exc:  # no cloudflared build for this system
        raise TunnelError(f"pycloudflared has no cloudflared program for this machine ({exc})") from exc
    if not os.path.exists(info.executable):
        print("Downloading the cloudflared program (pycloudflared)...", flush=True)
        try:
            download(info)
        except Exception as exc:
            if os.path.exists(info.executable):  # a partial file would pass for the program next time
                os.remove(info.executable)
            raise TunnelError(f"the cloudflared program could not be downloaded from {info.url} ({exc})") from exc
    return info.executable


def open_cloudflared(local_url: str, binary: str | None = None, timeout: float = 60) -> Tunnel:
    """A Cloudflare quick tunnel (https://….trycloudflare.com, no account) to `local_url`. The
    cloudflared process runs until `close()`; its log is read all along, so it never blocks on
    a full pipe."""
    binary = binary or find_cloudflared()
    if binary is None:
        raise TunnelError("no cloudflared program: start through launch.py (it installs the pycloudflared package for "
                          f"--cloudflared), or install cloudflared from {CLOUDFLARED_DOWNLOADS}")
    command = [binary, "tunnel", "--no-autoupdate", "--url", local_url]
    if local_url.startswith("https:"):
        command.append("--no-tls-verify")  # our own certificate, perhaps self-signed
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
    except OSError as exc:
        raise TunnelError(f"cloudflared could not be started ({exc})") from exc
    found: queue.Queue[str | None] = queue.Queue()
    tail: collections.deque[str] = collections.deque(maxlen=8)

    def read() -> None:
        announced = False
        for line in proc.stdout:
            tail.append(line.rstrip())
            match = None if announced else CLOUDFLARED_URL.search(line)
            if match:
                announced = True
                found.put(match.group(0))
        found.put(None)  # it exited

    threading.Thread(target=read, name="cloudflared-log", daemon=True).start()

    def close() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()

    try:
        url = found.get(timeout=timeout)
        ended = url is None  # its output closed: it is exiting
    except queue.Empty:
        url, ended = None, False
    if url is None:
        try:
            code = proc.wait(5) if ended else None
        except subprocess.TimeoutExpired:
            code = None
        close()
        why = f"it exited with code {code}" if code is not None else f"it gave no address within {timeout:.0f} s"
        last = " | ".join(line for line in tail if line.strip())
        raise TunnelError(f"cloudflared opened no tunnel: {why}. Its last lines: {last or '(none)'}")
    return Tunnel("cloudflared", url, close)


def is_local_start(args) -> bool:
    """Served on this machine only: no --listen, --share, --cloudflared or outside --server-name."""
    return not (args.listen or getattr(args, "share", False) or getattr(args, "cloudflared", False)
                or (args.server_name and args.server_name not in LOOPBACK))


class StartupLinks:
    """Once the server at `local_url` answers: open the tunnels the flags ask for and print
    their URLs (A1111's "Running on public URL: …"), warn when they lead to a page without a
    log-in, and with --autolaunch open the local page in the browser (local starts only)."""

    def __init__(self, args, local_url: str, openers: dict[str, Callable[[str], Tunnel]] | None = None, wait_timeout: float = 600):
        self.args, self.local_url, self.wait_timeout = args, local_url, wait_timeout
        self.openers = openers or {"share": open_gradio_share, "cloudflared": open_cloudflared}
        self.tunnels: list[Tunnel] = []
        self.browser_opened = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def wanted(self) -> list[str]:
        return [flag for flag in ("share", "cloudflared") if getattr(self.args, flag, False)]

    def start(self) -> None:
        if self.wanted or self.args.autolaunch:
            self._thread = threading.Thread(target=self.run, name="startup-links", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        if not wait_until_serving(self.local_url, self.wait_timeout, self._stop):
            if not self._stop.is_set():
                print(f"The server did not answer at {self.local_url}: no tunnel opened, no browser started.", flush=True)
            return
        for flag in self.wanted:
            if self._stop.is_set():
                return
            try:
                tunnel = self.openers[flag](self.local_url)
            except Exception as exc:  # TunnelError has the sentence; anything else still must not stop the server
                reason = str(exc) if isinstance(exc, TunnelError) else f"{type(exc).__name__}: {exc}"
                print(f"Could not open the --{flag} tunnel: {reason}. The web UI keeps running locally at {self.local_url}", flush=True)
                continue
            with self._lock:
                if self._stop.is_set():  # the server stopped while the tunnel was opening
                    tunnel.close()
                    return
                self.tunnels.append(tunnel)
            print(f"Running on public URL: {tunnel.url}", flush=True)
        if self.tunnels:
            self.warn_if_open()
        if self.args.autolaunch and is_local_start(self.args) and not self.args.nowebui and not self._stop.is_set():
            import webbrowser

            webbrowser.open(self.local_url)
            self.browser_opened = True

    def warn_if_open(self) -> None:
        lines = []
        if not (self.args.gradio_auth or getattr(self.args, "gradio_auth_path", None)) and not self.args.nowebui:
            lines.append("Anyone who has the public link can use this web UI: generate, change settings, see your images.")
            lines.append("Add a log-in with --gradio-auth user:password.")
        if (self.args.api or self.args.nowebui) and not self.args.api_auth:
            lines.append("The API (/sdapi/v1) is open through the link too: add --api-auth user:password.")
        if lines:
            bar = "!" * 78
            print("\n".join([bar, "WARNING: the public link has no log-in.", *lines, bar]), flush=True)

    def close(self) -> None:
        with self._lock:
            self._stop.set()
            tunnels, self.tunnels = self.tunnels, []
        for tunnel in tunnels:
            try:
                tunnel.close()
            except Exception:  # stopping anyway
                pass
