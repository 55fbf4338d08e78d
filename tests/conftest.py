"""Shared fixtures. Everything runs offline on the CPU at 64 px."""

from __future__ import annotations

import os

os.environ.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
# A safety net: a checkpoint download that a test starts by mistake goes to a closed loopback
# port and fails at once, never to the internet. Servers the tests start inherit it.
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
# One thread per process (and per server a test starts): the models here are tiny, so a second
# intra-op thread gains nothing, and the suite runs in two pytest-xdist workers (pytest.ini)
# that would otherwise fight over the same cores. TEST_TORCH_THREADS=N gives N.
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("TEST_TORCH_THREADS", "1"))

import json  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


@pytest.fixture(scope="session")
def configs_dir() -> Path:
    return CONFIGS


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The tiny random model written as an A1111 single file, once per test session."""
    from modules.models.tiny import FILE_NAME, write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / FILE_NAME, CONFIGS)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    """The tiny checkpoint loaded through the product's own loader, fp32 on the CPU."""
    from modules.models.loader import load_checkpoint

    return load_checkpoint(tiny_checkpoint, configs_dir=CONFIGS, device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)


def scheduler_config(arch: str = "tiny-sd1") -> dict:
    return json.loads((CONFIGS / arch / "scheduler" / "scheduler_config.json").read_text())


@pytest.fixture(scope="session")
def demo_model():
    """The shipped demo model (modules/demo), loaded like the app loads it, fp32 on the CPU."""
    from modules.demo.embedded import EMBEDDED_PATH
    from modules.models.loader import load_checkpoint

    return load_checkpoint(EMBEDDED_PATH, configs_dir=CONFIGS, device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_inpainting_model(tmp_path_factory):
    """The tiny model's inpainting variant (9-channel UNet), written and loaded like a user's file."""
    from modules.models.loader import load_checkpoint
    from modules.models.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(tmp_path_factory.mktemp("inpaint") / "tiny-inpainting.safetensors", CONFIGS, in_channels=9)
    return load_checkpoint(path, configs_dir=CONFIGS, device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)


@pytest.fixture(scope="session")
def scripts_app(tmp_path_factory, tiny_checkpoint):
    """(app, client): the app with its page and API, the tiny model loaded, driven in-process;
    shared by the script API tests (tests/api/test_script_routes.py, tests/scripts/test_*_api.py),
    which change no setting and pick everything per request, so one build serves them all."""
    from tests.servers import data_dir_with_tiny_model, in_process_app

    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("scripts-api"), tiny_checkpoint)
    with in_process_app(data, "--api", "--disable-console-progressbars", checkpoint=tiny_checkpoint) as (app, client):
        yield app, client


@pytest.fixture
def no_network(monkeypatch):
    """Refuse, and record (the host), every attempt to resolve or reach a host other than loopback."""
    attempts = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def local(host) -> bool:
        return str(host) in ("127.0.0.1", "::1", "localhost", "0.0.0.0") or str(host).startswith("127.")

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not local(address[0]):
            attempts.append(address[0])
            raise OSError("network disabled in tests")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not local(host):
            attempts.append(host)
            raise socket.gaierror("network disabled in tests")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts
