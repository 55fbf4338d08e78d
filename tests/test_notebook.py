"""The Colab notebook (notebooks/colab.ipynb): valid nbformat 4, and its cells, minus the ones
tagged "colab-only" (Google Drive, git clone), run headless in a kernel of this venv's Python.
The test's own settings follow the Settings cell: a free loopback port, a temporary folder
standing in for Drive, and the cloudflared tunnel played by a fake `cloudflared` program that
prints an address, so nothing reaches beyond loopback."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from modules.options import Paths, parse_args
from tests.servers import free_port
from tests.test_sharing import CLOUDFLARED_OUTPUT, fake_program, stopped

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "colab.ipynb"
KERNEL = "webui-venv"


def cells(nb, tag: str | None = None) -> list:
    return [c for c in nb.cells if tag is None or tag in c.metadata.get("tags", [])]


def test_notebook_is_valid_and_keeps_colab_steps_tagged():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.cells[0].cell_type == "markdown"
    colab_only = "\n".join(c.source for c in cells(nb, "colab-only"))
    assert "drive.mount(" in colab_only and "git clone" in colab_only
    rest = "\n".join(c.source for c in nb.cells if c not in cells(nb, "colab-only"))
    assert "google.colab" not in rest and "!git" not in rest
    settings = next(c.source for c in nb.cells if c.source.startswith("#@title Settings"))
    for name in ("DATA_DIR", "TUNNEL", "GRADIO_AUTH", "EXTRA_FLAGS", "PORT"):
        assert f"\n{name} = " in settings
    start = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for flag in ("--data-dir", "--share", "--cloudflared", "--gradio-auth", "launch.py"):
        assert flag in start


def test_data_dir_holds_every_user_file(tmp_path):
    """What the notebook relies on: --data-dir alone puts models, outputs and every settings
    and state file in the Drive folder."""
    paths = Paths.from_args(parse_args(["--data-dir", str(tmp_path)]))
    files = [paths.settings, paths.ui_config, *paths.styles_files, paths.gallery_index, paths.hash_cache, paths.outputs_dir,
             paths.models_dir, *paths.ckpt_dirs, paths.loras, paths.embeddings, paths.vaes]
    assert [f for f in files if not f.is_relative_to(tmp_path)] == []
    assert [p.name for p in (paths.settings, paths.ui_config, *paths.styles_files)] == ["config.json", "ui-config.json", "styles.csv"]


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch):
    """A kernel spec for this Python, and every Jupyter/IPython folder in the temporary folder."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "web UI venv", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    for name, folder in (("JUPYTER_DATA_DIR", "jupyter-data"), ("JUPYTER_RUNTIME_DIR", "jupyter-runtime"),
                         ("JUPYTER_CONFIG_DIR", "jupyter-config"), ("IPYTHONDIR", "ipython")):
        monkeypatch.setenv(name, str(tmp_path / folder))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    for name, value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1"), ("COMMANDLINE_ARGS", "")):
        monkeypatch.setenv(name, value)
    return KERNEL


def post_json(url: str, body: dict, log: Path | None = None) -> dict:
    """The answer's JSON; an error answer fails with its body and the end of the server's log."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        tail = log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else ""
        raise AssertionError(f"{url}: HTTP {exc.code}: {exc.read()[:2000]!r}\nserver log:\n{tail}") from None


def test_notebook_runs_headless_and_serves_from_the_data_dir(tmp_path, venv_kernel, monkeypatch):
    from nbclient import NotebookClient

    data, port = tmp_path / "drive" / "sd-webui", free_port()
    (tmp_path / "bin").mkdir()
    fake_program(tmp_path / "bin" / "cloudflared", CLOUDFLARED_OUTPUT)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells = [c for c in nb.cells if "colab-only" not in c.metadata.get("tags", [])]
    at = next(i for i, c in enumerate(nb.cells) if c.source.startswith("#@title Settings")) + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell(
        f"DATA_DIR = {str(data)!r}\nTUNNEL = 'cloudflared'\nGRADIO_AUTH = ''\n"
        f"EXTRA_FLAGS = '--no-download-sd-model --api --disable-console-progressbars'\nPORT = {port}"))
    stop = nbformat.v4.new_code_cell(
        "if 'server' in globals():\n    server.terminate()\n    try:\n        server.wait(30)\n"
        "    except subprocess.TimeoutExpired:\n        server.kill()\n    print('stopped', server.returncode)")
    nb.cells.append(stop)
    client = NotebookClient(nb, kernel_name=venv_kernel, timeout=120, resources={"metadata": {"path": str(REPO)}})
    url = f"http://127.0.0.1:{port}"
    with client.setup_kernel():
        try:
            for index, cell in enumerate(nb.cells[:-1]):
                client.execute_cell(cell, index)
            printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
            assert f"The web UI answers at {url}/ (inside this runtime)." in printed
            assert "Running on public URL: https://seasonal-feelings-anonymous-dd.trycloudflare.com\n" in printed
            assert "WARNING: no GRADIO_AUTH" in printed
            with urllib.request.urlopen(url + "/", timeout=10) as page:
                assert page.status == 200
            # A setting and an image, through the API (--api from EXTRA_FLAGS): both land on "Drive".
            post_json(url + "/sdapi/v1/options", {"jpeg_quality": 81}, data / "webui.log")
            result = post_json(url + "/sdapi/v1/txt2img", {"prompt": "a red circle on a blue background", "steps": 2, "width": 64,
                                                          "height": 64, "seed": 3, "save_images": True}, data / "webui.log")
            assert len(result["images"]) == 1
        finally:
            client.execute_cell(stop, len(nb.cells) - 1)
    assert "stopped" in "".join(o.get("text", "") for o in stop.outputs)
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/", timeout=2)
    assert json.loads((data / "config.json").read_text())["jpeg_quality"] == 81
    assert (data / "ui-config.json").is_file() and (data / "queue.sqlite3").is_file()
    assert "Running on local URL:  " + url in (data / "webui.log").read_text()
    assert [p.name for p in (data / "outputs" / "txt2img-images").glob("*/*.png")] == ["00000-3.png"]
    assert (data / "models" / "Stable-diffusion").is_dir()
    assert stopped(int((tmp_path / "bin" / "cloudflared.pid").read_text()))  # the tunnel ends with the server
