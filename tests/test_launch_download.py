"""`launch.py --download NAME_OR_URL`: parsing, and real runs in a subprocess against a file
server on loopback (never the internet)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest

from tests.fileserver import Served, closed_port, file_server
from tests.test_launch import LAUNCH_ENV_VARS, REPO_ROOT, launch

SD15_PATH = "/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned-emaonly.safetensors"


def test_download_takes_a_value_and_repeats_and_is_not_passed_to_webui():
    options, rest = launch.parse_args(["--download", "sd15", "--port", "7861", "--download=https://host/x.safetensors"], env={})
    assert options.downloads == ["sd15", "https://host/x.safetensors"]
    assert rest == ["--port", "7861"]
    options, _ = launch.parse_args([], env={"COMMANDLINE_ARGS": "--download sdxl-base"})
    assert options.downloads == ["sdxl-base"]


@pytest.mark.parametrize("argv", [["--download"], ["--download", "--exit"], ["--download="]])
def test_download_without_a_value_is_an_error(argv, capsys):
    with pytest.raises(launch.LaunchError, match="--download needs a value"):
        launch.parse_args(argv, env={})
    assert launch.main([*argv, "--skip-install"]) == 1
    assert "--download needs a value" in capsys.readouterr().err


def run_launch(*args: str, **env_extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV_VARS}
    env.update(env_extra)
    return subprocess.run([sys.executable, str(REPO_ROOT / "launch.py"), "--skip-install", *args],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_launch_download_url_then_exit_puts_the_file_in_the_data_dirs_models(tmp_path, tiny_checkpoint):
    payload = tiny_checkpoint.read_bytes()
    served = Served(files={"/files/mine.safetensors": payload})
    with file_server(served) as base:
        result = run_launch("--download", base + "/files/mine.safetensors?download=true", "--exit", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    target = tmp_path / "models" / "Stable-diffusion" / "mine.safetensors"
    assert target.read_bytes() == payload
    assert sorted(p.name for p in target.parent.iterdir()) == ["mine.safetensors"]
    assert f"Downloaded {target}" in result.stdout
    assert "--exit: not starting the web UI." in result.stdout


def test_launch_download_of_a_catalog_name_goes_through_hf_endpoint_and_checks_the_hash(tmp_path):
    served = Served(files={SD15_PATH: b"not the real SD 1.5"})
    with file_server(served) as base:
        result = run_launch("--download", "sd15", "--exit", "--data-dir", str(tmp_path), HF_ENDPOINT=base)
    assert result.returncode == 1
    assert [r[0] for r in served.requests] == [SD15_PATH]
    expected = hashlib.sha256(b"not the real SD 1.5").hexdigest()
    assert f"expected sha256 6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa, got {expected}" in result.stderr
    assert list((tmp_path / "models" / "Stable-diffusion").iterdir()) == []


def test_launch_download_without_network_fails_fast_with_exit_status_1(tmp_path):
    started = time.monotonic()
    result = run_launch("--download", f"http://127.0.0.1:{closed_port()}/x.safetensors", "--exit", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "ERROR: Download of x.safetensors failed: could not connect to 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30  # the interpreter start included; the connect itself fails at once


def test_launch_download_of_an_unknown_name_lists_the_catalog(tmp_path):
    result = run_launch("--download", "sd99", "--exit", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    listed = result.stderr.split("'sd99' is neither a known checkpoint (", 1)[1].split(") nor an http(s) URL.", 1)[0].split(", ")
    assert listed[:3] == ["sd15", "sd21-768", "sdxl-base"] and "gfpgan-v1.4" in listed  # the postprocessing models follow the checkpoints


def test_launch_download_of_a_model_of_several_files_fetches_its_companions(tmp_path, monkeypatch):
    """`--download wd14-moat-v2` must bring the tagger's label table too (the catalog's `also`),
    as the Models tab does, or the tagger cannot run."""
    import json

    from modules.models import downloadable, fetch

    entry = {"title": "t", "architecture": "wd14", "size": 1, "sha256": "0" * 64, "folder": "deepbooru"}
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(json.dumps({"checkpoints": [
        {**entry, "name": "tagger", "filename": "tagger.onnx", "url": "https://host.invalid/tagger.onnx", "also": ["tagger-tags"]},
        {**entry, "name": "tagger-tags", "filename": "tagger.csv", "url": "https://host.invalid/tagger.csv"},
    ]}))
    fetched = []
    shipped_load = downloadable.Catalog.load
    monkeypatch.setattr(downloadable.Catalog, "load", lambda path=None: shipped_load(catalog_file))
    monkeypatch.setattr(fetch, "fetch_file", lambda source, folder, **k: fetched.append((source.filename, folder.name)) or folder / source.filename)
    launch.download_models(["tagger", "tagger-tags"], ["--data-dir", str(tmp_path)])
    assert fetched == [("tagger.onnx", "deepbooru"), ("tagger.csv", "deepbooru")]  # each once, the companion right after

