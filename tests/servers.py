"""Starting the real server (through launch.py, as a user would) for tests that talk to it over HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 90, context: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def data_dir_with_tiny_model(data: Path, tiny_checkpoint: Path) -> Path:
    """A data folder whose models/Stable-diffusion holds the tiny random model."""
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_checkpoint, ckpts / tiny_checkpoint.name)
    return data


@contextmanager
def launched(data: Path, *flags: str, ready_path: str = "/", fetch_default: bool = False, env_extra: dict | None = None,
             tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Run launch.py on a free loopback port with `data` as its data folder; yields the base
    URL once `ready_path` answers 200, and stops the whole process group afterwards.

    `--no-download-sd-model` is passed unless `fetch_default`: a test server must never
    start fetching SD 1.5 (HF_ENDPOINT from conftest points at a closed port besides)."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "COMMANDLINE_ARGS": "",
           **(env_extra or {})}
    if not fetch_default:
        flags = ("--no-download-sd-model", *flags)
    log = open(data / "server.log", "a")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "launch.py"), "--skip-install", "--data-dir", str(data), "--port", str(port), *flags],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        scheme = "https" if tls else "http"  # tls: a client context that trusts the server's --tls-certfile
        wait_http(f"{scheme}://127.0.0.1:{port}{ready_path}", proc, context=tls)
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except ProcessLookupError:  # it already exited (a failed start): wait_http said why
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@contextmanager
def in_process_app(data: Path, *flags: str, checkpoint: Path | None = None, raise_server_exceptions: bool = True):
    """The app built from `flags` with `data` as its data folder, its ASGI server driven
    in-process by a TestClient: yields (app, client). With `checkpoint`, that model is loaded
    before the first request; without, no model is (for routes that need no generation)."""
    from fastapi.testclient import TestClient

    import webui
    from modules.options import parse_args

    args = parse_args(["--data-dir", str(data), *flags])
    app = webui.App.create(args)
    try:
        if checkpoint is not None:
            assert app.start(str(checkpoint)).wait(120), f"{checkpoint} did not load"
        with TestClient(app.build_asgi(args), raise_server_exceptions=raise_server_exceptions) as client:
            yield app, client
    finally:
        app.queue.shutdown()


@contextmanager
def in_process_api(data: Path, *flags: str):
    """`in_process_app`'s client, no model loaded."""
    with in_process_app(data, *flags) as (_, client):
        yield client


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A throwaway key and certificate for 127.0.0.1 (openssl CLI), for --tls-keyfile/--tls-certfile."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return key, cert
