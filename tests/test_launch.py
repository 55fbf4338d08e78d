"""Tests of launch.py's logic. Nothing is installed for real: pip is never run."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_DIR = REPO_ROOT / "venv"
VENV_PYTHON = VENV_DIR / "bin" / "python"

LAUNCH_ENV_VARS = (
    "COMMANDLINE_ARGS", "TORCH_COMMAND", "TORCH_INDEX_URL", "INDEX_URL", "REQS_FILE",
    "XFORMERS_PACKAGE", "GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
)


def _load_launch():
    spec = importlib.util.spec_from_file_location("launch", REPO_ROOT / "launch.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["launch"] = module  # dataclasses look the module up while it executes
    spec.loader.exec_module(module)
    return module


launch = _load_launch()


@pytest.fixture
def clean_env(monkeypatch):
    """No launch-related variables in os.environ; whatever the test sets is undone."""
    for name in LAUNCH_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def no_pip(monkeypatch):
    """Fail the test if anything tries to install (records the calls)."""
    calls = []

    def fake_run_pip(argv, description):
        calls.append((list(argv), description))
        raise AssertionError(f"pip was called to install {description}: {argv}")

    monkeypatch.setattr(launch, "run_pip", fake_run_pip)
    return calls


@pytest.fixture
def record_pip(monkeypatch):
    """Record install calls without running them."""
    calls = []
    monkeypatch.setattr(launch, "run_pip", lambda argv, description: calls.append((list(argv), description)))
    return calls


def _subprocess_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV_VARS}
    env.update(extra)
    return env


# --- arguments -----------------------------------------------------------------------------


def test_launch_flags_are_stripped_and_others_pass_through():
    options, rest = launch.parse_args(
        ["--exit", "--port", "7861", "--skip-install", "--listen", "--test-deps"], env={}
    )
    assert options.exit and options.skip_install and options.test_deps
    assert not options.reinstall_torch and not options.skip_torch_cuda_test
    assert rest == ["--port", "7861", "--listen"]


def test_every_launch_flag_is_recognised():
    options, rest = launch.parse_args(list(launch.LAUNCH_FLAGS), env={})
    assert rest == []
    for attribute in launch.LAUNCH_FLAGS.values():
        assert getattr(options, attribute) is True


def test_commandline_args_are_appended_after_argv():
    env = {"COMMANDLINE_ARGS": '--xformers --skip-torch-cuda-test --ckpt "my model.safetensors" --exit'}
    options, rest = launch.parse_args(["--api", "--reinstall-torch"], env=env)
    assert options.skip_torch_cuda_test and options.exit and options.reinstall_torch
    assert rest == ["--api", "--xformers", "--ckpt", "my model.safetensors"]


def test_empty_commandline_args():
    for value in ("", "   "):
        options, rest = launch.parse_args(["--listen"], env={"COMMANDLINE_ARGS": value})
        assert rest == ["--listen"]
        assert options == launch.LaunchOptions()


def test_help_is_passed_through_and_noted():
    options, rest = launch.parse_args(["--help"], env={})
    assert options.help and rest == ["--help"]
    assert "--skip-install" in launch.launch_help()


# --- torch command -------------------------------------------------------------------------


def _platform(monkeypatch, system, nvidia):
    monkeypatch.setattr(launch.platform, "system", lambda: system)
    monkeypatch.setattr(
        launch.shutil, "which",
        lambda name, *a, **k: ("/usr/bin/nvidia-smi" if nvidia and name == "nvidia-smi" else None),
    )


@pytest.mark.parametrize(
    "system, nvidia",
    [("Linux", False), ("Linux", True), ("Darwin", False), ("Windows", False)],
)
def test_default_torch_command_plain(monkeypatch, system, nvidia):
    _platform(monkeypatch, system, nvidia)
    assert launch.default_torch_command(env={}) == "pip install torch==2.14.1 torchvision==0.29.1"


def test_default_torch_command_windows_nvidia(monkeypatch):
    _platform(monkeypatch, "Windows", True)
    assert launch.default_torch_command(env={}) == (
        "pip install torch==2.14.1 torchvision==0.29.1 --extra-index-url https://download.pytorch.org/whl/cu130"
    )
    custom = {"TORCH_INDEX_URL": "https://example.invalid/whl/cu999"}
    assert launch.default_torch_command(env=custom).endswith("--extra-index-url https://example.invalid/whl/cu999")


def test_index_url_and_torch_command_override(monkeypatch):
    _platform(monkeypatch, "Linux", False)
    assert launch.default_torch_command(env={"INDEX_URL": "https://mirror.invalid/simple"}) == (
        "pip install torch==2.14.1 torchvision==0.29.1 --index-url https://mirror.invalid/simple"
    )
    assert launch.torch_command(env={"TORCH_COMMAND": "pip install torch==9.9"}) == "pip install torch==9.9"
    assert launch.torch_command(env={}) == "pip install torch==2.14.1 torchvision==0.29.1"


def test_command_to_argv_uses_this_python():
    assert launch.command_to_argv("pip install torch==2.13.0") == [
        sys.executable, "-m", "pip", "install", "torch==2.13.0",
    ]
    assert launch.command_to_argv("python -m pip install x")[:3] == [sys.executable, "-m", "pip"]
    assert launch.command_to_argv("uv pip install x") == ["uv", "pip", "install", "x"]
    with pytest.raises(launch.LaunchError):
        launch.command_to_argv("  ")


def test_pip_argv_index_url():
    argv = launch.pip_argv("install", "-r", "r.txt", env={"INDEX_URL": "https://mirror.invalid/simple"})
    assert argv[:3] == [sys.executable, "-m", "pip"]
    assert argv[-2:] == ["--index-url", "https://mirror.invalid/simple"]
    assert "--index-url" not in launch.pip_argv("install", "x", env={})


# --- requirement checks --------------------------------------------------------------------


def test_requirement_satisfied_for_installed_package():
    status = launch.check_requirement("pip>=1")
    assert status.state == "satisfied" and status.installed


def test_requirement_missing():
    status = launch.check_requirement("definitely-not-a-package==1.0")
    assert status.state == "missing" and not status.ok
    assert "not installed" in status.describe()


def test_requirement_out_of_range():
    status = launch.check_requirement("pip>=999")
    assert status.state == "out of range" and not status.ok
    assert status.installed in status.describe()


def test_requirement_marker_not_applicable():
    status = launch.check_requirement('definitely-not-a-package==1.0; python_version < "3"')
    assert status.state == "not applicable" and status.ok


def test_unparsable_requirement_is_not_ok():
    assert launch.check_requirement("this is not === a requirement").state == "unknown"


def test_read_requirements_file(tmp_path):
    (tmp_path / "extra.txt").write_text("pip>=1  # inline comment\n")
    (tmp_path / "req.txt").write_text(
        "# comment\n\n--index-url https://example.invalid/simple\n-r extra.txt\n"
        "definitely-not-a-package==1.0\npip>=999 \\\n  ; python_version >= '3'\n"
    )
    lines = launch.read_requirements(tmp_path / "req.txt")
    assert [" ".join(line.split()) for line in lines] == [
        "pip>=1", "definitely-not-a-package==1.0", "pip>=999 ; python_version >= '3'",
    ]
    states = [s.state for s in launch.check_requirements_file(tmp_path / "req.txt")]
    assert states == ["satisfied", "missing", "out of range"]


def test_repo_requirements_are_satisfied_in_this_environment():
    """The venv the tests run in has everything requirements.txt asks for."""
    unmet = launch.unmet_requirements(REPO_ROOT / "requirements.txt")
    assert not unmet, [s.describe() for s in unmet]
    unmet_tests = launch.unmet_requirements(REPO_ROOT / "tests" / "requirements.txt")
    assert not unmet_tests, [s.describe() for s in unmet_tests]


def test_requirements_txt_leaves_torch_out():
    names = [re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower()
             for line in launch.read_requirements(REPO_ROOT / "requirements.txt")]
    assert "torch" not in names
    assert not {"torchvision", "open_clip_torch", "open-clip-torch", "timm"} & set(names)


# --- preparation steps (pip replaced) --------------------------------------------------------


def test_ensure_requirements_installs_only_when_unmet(tmp_path, record_pip):
    satisfied = tmp_path / "ok.txt"
    satisfied.write_text("pip>=1\n")
    assert launch.ensure_requirements(satisfied, launch.LaunchOptions(), env={}) is False
    assert record_pip == []

    unmet = tmp_path / "unmet.txt"
    unmet.write_text("pip>=1\ndefinitely-not-a-package==1.0\n")
    assert launch.ensure_requirements(unmet, launch.LaunchOptions(), env={}) is True
    [(argv, _)] = record_pip
    assert argv[:6] == [sys.executable, "-m", "pip", "install", "-r", str(unmet)]


def test_ensure_requirements_skip_install(tmp_path, record_pip, capsys):
    unmet = tmp_path / "unmet.txt"
    unmet.write_text("definitely-not-a-package==1.0\n")
    assert launch.ensure_requirements(unmet, launch.LaunchOptions(skip_install=True), env={}) is False
    assert record_pip == []
    assert "definitely-not-a-package" in capsys.readouterr().out


def test_torch_is_installed_when_missing(monkeypatch, record_pip):
    state = {"installed": False}

    def fake_run_pip(argv, description):
        record_pip.append((argv, description))
        state["installed"] = True

    monkeypatch.setattr(launch, "run_pip", fake_run_pip)
    monkeypatch.setattr(launch, "torch_installed", lambda: state["installed"])
    assert launch.ensure_torch(launch.LaunchOptions(), env={"TORCH_COMMAND": "pip install torch==2.13.0"})
    assert record_pip == [([sys.executable, "-m", "pip", "install", "torch==2.13.0"], "torch")]


def test_torch_present_is_left_alone_unless_reinstall(monkeypatch, record_pip):
    monkeypatch.setattr(launch, "torch_installed", lambda: True)
    assert launch.ensure_torch(launch.LaunchOptions(), env={}) is False
    assert record_pip == []
    assert launch.ensure_torch(launch.LaunchOptions(reinstall_torch=True), env={}) is True
    assert len(record_pip) == 1
    assert launch.ensure_torch(launch.LaunchOptions(reinstall_torch=True, skip_install=True), env={}) is False
    assert len(record_pip) == 1


@pytest.mark.parametrize("torch_version, expected", [
    ("2.14.1", ["torchvision==0.29.*", "torch==2.14.1"]),
    ("2.13.0+cpu", ["torchvision==0.28.*", "torch==2.13.0+cpu", "--extra-index-url", "https://download.pytorch.org/whl/cpu"]),
    ("2.8.0+cu128", ["torchvision==0.23.*", "torch==2.8.0+cu128", "--extra-index-url", "https://download.pytorch.org/whl/cu128"]),
])
def test_torchvision_is_matched_to_the_installed_torch(torch_version, expected):
    assert launch.torchvision_requirement(torch_version) == expected


def test_torchvision_added_to_a_venv_with_torch_alone(monkeypatch, record_pip):
    versions = {"torch": "2.13.0+cpu", "torchvision": None}

    def fake_run_pip(argv, description):
        record_pip.append((argv, description))
        versions["torchvision"] = "0.28.0+cpu"

    monkeypatch.setattr(launch, "run_pip", fake_run_pip)
    monkeypatch.setattr(launch, "installed_version", versions.get)
    assert launch.ensure_torchvision(launch.LaunchOptions(), env={}) is True
    [(argv, description)] = record_pip
    assert argv[:5] == [sys.executable, "-m", "pip", "install", "torchvision==0.28.*"]
    assert "torch==2.13.0+cpu" in argv and "--upgrade" not in argv and "--force-reinstall" not in argv
    assert description == "torchvision for torch 2.13.0+cpu"
    # Both present: metadata only, no pip.
    assert launch.ensure_torchvision(launch.LaunchOptions(), env={}) is False
    assert len(record_pip) == 1


def test_torchvision_not_added_with_skip_install(monkeypatch, record_pip, capsys):
    monkeypatch.setattr(launch, "installed_version", {"torch": "2.14.1"}.get)
    assert launch.ensure_torchvision(launch.LaunchOptions(skip_install=True), env={}) is False
    assert record_pip == [] and "torchvision is not installed" in capsys.readouterr().out


def test_torch_install_failure_is_an_error(monkeypatch):
    monkeypatch.setattr(launch, "torch_installed", lambda: False)
    monkeypatch.setattr(launch, "run_pip", lambda argv, description: None)
    with pytest.raises(launch.LaunchError):
        launch.ensure_torch(launch.LaunchOptions(), env={})


def test_xformers_only_with_cuda(monkeypatch, record_pip, capsys):
    monkeypatch.setattr(launch, "installed_version", lambda name: None)
    options = launch.LaunchOptions()
    assert launch.ensure_xformers(["--listen"], options, lambda: pytest.fail("probed"), env={}) is False
    assert launch.ensure_xformers(["--xformers"], options, False, env={}) is False
    assert "no CUDA GPU" in capsys.readouterr().out
    assert record_pip == []
    assert launch.ensure_xformers(["--xformers"], options, lambda: True, env={}) is True
    [(argv, _)] = record_pip
    assert argv[3:6] == ["install", "xformers", "--no-deps"]


def test_cuda_warning_on_cpu(capsys):
    launch.report_torch({"version": "2.13.0+cpu", "cuda": False, "mps": False, "error": None})
    assert "No CUDA GPU found: running on the CPU (slow)" in capsys.readouterr().out


def test_cpu_torch_build_is_probed_without_importing(monkeypatch):
    monkeypatch.setattr(launch, "installed_version", lambda name: "2.13.0+cpu")
    monkeypatch.setattr(launch.subprocess, "run", lambda *a, **k: pytest.fail("subprocess used"))
    assert launch.probe_torch()["cuda"] is False


def test_cuda_build_without_nvidia_driver_is_probed_without_importing(monkeypatch):
    """PyPI's Linux torch is a CUDA build: without an NVIDIA driver the start must not spend
    seconds importing it just to learn there is no GPU."""
    _platform(monkeypatch, "Linux", False)
    monkeypatch.setattr(launch, "installed_version", lambda name: "2.14.1")
    monkeypatch.setattr(launch.subprocess, "run", lambda *a, **k: pytest.fail("subprocess used"))
    assert launch.probe_torch()["cuda"] is False


def test_torch_probe_subprocess_reports(monkeypatch):
    """With an NVIDIA driver, a CUDA torch build is probed by importing torch in a subprocess."""
    pytest.importorskip("torch")
    _platform(monkeypatch, "Linux", True)
    monkeypatch.setattr(launch, "installed_version", lambda name: "2.14.1")
    info = launch.probe_torch()
    assert info["error"] is None, info
    assert isinstance(info["cuda"], bool) and isinstance(info["mps"], bool)


def test_python_version_warning():
    assert launch.python_version_warning((3, 11, 7)) is None
    assert launch.python_version_warning((3, 10, 0)) is None
    assert launch.python_version_warning((3, 13, 1)) is None
    assert "3.9" in launch.python_version_warning((3, 9, 18))
    assert "3.14" in launch.python_version_warning((3, 14, 0))


def test_apply_environment_defaults_and_user_choice():
    env = {}
    launch.apply_environment(env)
    assert env == {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env = {"HF_HUB_OFFLINE": "0"}
    launch.apply_environment(env)
    assert env["HF_HUB_OFFLINE"] == "0"


# --- main (in process) -----------------------------------------------------------------------


def test_main_exit_installs_nothing(clean_env, no_pip, capsys):
    assert launch.main(["--exit"]) == 0
    out = capsys.readouterr().out
    assert "Nothing to install" in out
    assert no_pip == []
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_main_skip_install_exit(clean_env, no_pip):
    assert launch.main(["--skip-install", "--exit", "--test-deps"]) == 0
    assert no_pip == []


def test_main_hands_remaining_args_to_webui(clean_env, no_pip, monkeypatch):
    received = {}

    def fake_main(argv=None):
        received["argv"] = argv
        received["offline"] = os.environ.get("HF_HUB_OFFLINE")
        return 0

    monkeypatch.setitem(sys.modules, "webui", types.SimpleNamespace(main=fake_main))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    clean_env.setenv("COMMANDLINE_ARGS", "--skip-torch-cuda-test --api")
    assert launch.main(["--skip-install", "--port", "7999"]) == 0
    assert received == {"argv": ["--port", "7999", "--api"], "offline": "1"}


def test_main_returns_1_when_install_fails(clean_env, monkeypatch, capsys):
    def failing(options, args, env=None):
        raise launch.LaunchError("boom")

    monkeypatch.setattr(launch, "prepare_environment", failing)
    assert launch.main(["--exit"]) == 1
    assert "boom" in capsys.readouterr().err


# --- real runs (subprocess) ------------------------------------------------------------------

needs_venv = pytest.mark.skipif(not VENV_PYTHON.exists(), reason="the repository has no venv/")


@needs_venv
@pytest.mark.parametrize(
    "args, commandline_args",
    [(["--exit"], ""), ([], "--exit"), (["--skip-install", "--exit"], "")],
)
def test_launch_exit_subprocess_runs_no_pip(tmp_path, args, commandline_args):
    result = subprocess.run(
        [str(VENV_PYTHON), str(REPO_ROOT / "launch.py"), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=_subprocess_env(COMMANDLINE_ARGS=commandline_args),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Installing" not in result.stdout
    assert "-m pip" not in result.stdout
    if "--skip-install" not in args:
        assert "Nothing to install" in result.stdout
    ready = re.search(r"Environment ready in ([0-9.]+) s", result.stdout)
    assert ready and float(ready.group(1)) < 2.0, result.stdout
    assert list(tmp_path.iterdir()) == []


@needs_venv
@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
@pytest.mark.parametrize("venv_dir", ["venv-path", "-"])
def test_webui_sh_uses_existing_venv(tmp_path, venv_dir):
    env = _subprocess_env()
    if venv_dir == "-":
        env.update(venv_dir="-", python_cmd=str(VENV_PYTHON))
    else:
        env.update(venv_dir=str(VENV_DIR.resolve()))
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "webui.sh"), "--exit", "--skip-install"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Creating a Python venv" not in result.stdout
    assert "--exit: not starting the web UI." in result.stdout
    assert str(VENV_DIR.resolve()) in result.stdout  # launch.py ran with the venv's Python
    assert list(tmp_path.iterdir()) == []


def test_webui_sh_is_executable():
    assert os.access(REPO_ROOT / "webui.sh", os.X_OK)
