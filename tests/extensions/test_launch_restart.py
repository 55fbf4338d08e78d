"""launch.py's extension step (install.py of new or changed enabled extensions, one line each,
a failure not stopping the start) and the restart path: the page asks App.request_restart,
webui.main returns RESTART_EXIT_CODE after stopping the server, launch.py starts itself again."""

from __future__ import annotations

import json
import socket
import threading

import pytest

import launch
import webui
from modules.network import AccessRefused, ServerAccess
from modules.options import parse_args

COUNTING = "import pathlib\np = pathlib.Path('runs.txt')\np.write_text(str(int(p.read_text()) + 1 if p.exists() else 1))\n"


@pytest.fixture
def data(tmp_path):
    extensions = tmp_path / "extensions"
    for name in ("good", "off"):
        (extensions / name).mkdir(parents=True)
        (extensions / name / "install.py").write_text(COUNTING)
    (extensions / "bad").mkdir()
    (extensions / "bad" / "install.py").write_text("raise SystemExit('needs a compiler')\n")
    (tmp_path / "config.json").write_text(json.dumps({"disabled_extensions": ["off"]}))
    return tmp_path


def runs(folder) -> str:
    path = folder / "runs.txt"
    return path.read_text() if path.exists() else "0"


def test_launch_runs_the_install_step_of_new_or_changed_enabled_extensions(data, capsys):
    results = launch.install_extensions(launch.LaunchOptions(), ["--data-dir", str(data), "--api"])
    assert results["good"] is None and "needs a compiler" in results["bad"] and "off" not in results
    out = capsys.readouterr().out
    assert "Extension good: install step done." in out
    assert "WARNING: extension bad: install step failed; it may not work. bad: install.py failed (exit code 1)." in out
    assert [runs(data / "extensions" / n) for n in ("good", "off")] == ["1", "0"]

    again = launch.install_extensions(launch.LaunchOptions(), ["--data-dir", str(data)])
    assert list(again) == ["bad"]  # only the one that failed is tried again
    assert launch.install_extensions(launch.LaunchOptions(), ["--data-dir", str(data), "--disable-extra-extensions"]) == {}
    assert launch.install_extensions(launch.LaunchOptions(skip_install=True), ["--data-dir", str(data)]) == {}
    assert "--skip-install: not running the install step of bad." in capsys.readouterr().out
    assert runs(data / "extensions" / "good") == "1"


def test_a_restart_asked_by_webui_runs_launch_again(data, monkeypatch, capsys):
    """The loop with a fake webui entry: code 3 replaces the process with a fresh launch.py
    (os.execv, recorded here), which runs the install step again and starts webui again."""
    monkeypatch.setattr(launch, "prepare_environment", lambda options, args, env=None: [])
    monkeypatch.delenv("SD_WEBUI_RESTART", raising=False)
    started, execs = [], []
    monkeypatch.setattr(launch, "start_webui", lambda args: started.append((list(args), launch.os.environ.get("SD_WEBUI_RESTART"))) or 3)
    monkeypatch.setattr(launch.os, "execv", lambda path, argv: execs.append(argv))
    argv = ["--data-dir", str(data), "--skip-torch-cuda-test"]
    assert launch.main(argv) == launch.RESTART_EXIT_CODE == webui.RESTART_EXIT_CODE
    assert started == [(["--data-dir", str(data)], "1")]
    assert execs == [launch.relaunch_command(argv)] and execs[0][1].endswith("launch.py") and execs[0][2:] == argv
    assert "Restarting the web UI" in capsys.readouterr().out
    assert runs(data / "extensions" / "good") == "1"  # the step ran before the first start

    monkeypatch.setattr(launch, "start_webui", lambda args: 0)  # an ordinary stop: no restart
    execs.clear()
    assert launch.main(argv) == 0 and execs == []


def test_request_restart_stops_the_server_and_main_says_restart(tmp_path, monkeypatch):
    app = webui.App(*([None] * 7), access=ServerAccess.from_args(parse_args(["--listen"]), tmp_path))
    with pytest.raises(AccessRefused, match="Restarting the server is turned off.*--listen"):
        app.request_restart()
    app = webui.App(*([None] * 7), access=ServerAccess.from_args(parse_args([]), tmp_path))
    monkeypatch.delenv("SD_WEBUI_RESTART", raising=False)
    with pytest.raises(ValueError, match="not started by launch.py"):
        app.request_restart()
    assert not app.restart_requested.is_set()
    monkeypatch.setenv("SD_WEBUI_RESTART", "1")
    app.request_restart()
    assert app.restart_requested.is_set()

    class Queue:
        stopped = 0

        def stop(self):
            Queue.stopped += 1

    async def asgi(scope, receive, send):  # a server with nothing to serve
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"].split(".")[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stop = threading.Event()
    server = threading.Thread(target=webui.serve, args=(asgi, Queue()), kwargs=dict(stop=stop, host="127.0.0.1", port=port, log_level="warning"))
    server.start()
    stop.set()
    server.join(20)
    assert not server.is_alive() and Queue.stopped == 1
