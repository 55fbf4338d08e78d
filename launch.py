"""Prepare the Python environment, then start the web UI (webui.py).

Run it with the Python of the environment the web UI should use (webui.sh and webui.bat
do that for you: they create and activate ./venv first). What it does, in order:

1. Collects the arguments: its own command line plus ``COMMANDLINE_ARGS`` (split like a
   shell would), then takes out the flags that belong to this script (``LAUNCH_FLAGS``).
   Every other argument is handed to webui.py unchanged.
2. Warns when the Python version is outside the tested range.
3. Installs torch and torchvision with ``TORCH_COMMAND`` when torch is missing (or
   ``--reinstall-torch``); a venv that has torch but no torchvision gets the torchvision
   release built for that torch, and nothing else changes.
4. Checks whether torch can see a CUDA GPU; without one it warns and carries on (CPU).
5. Installs ``requirements.txt`` (``REQS_FILE``), and ``tests/requirements.txt`` (plus
   ``tests/requirements-nodeps.txt``, without dependencies) with ``--test-deps``, but only when
   something is missing or has the wrong version.
   When everything is in place, pip is not run at all.
6. With ``--xformers``, installs xformers if CUDA is available, otherwise warns; with
   ``--cloudflared``, installs pycloudflared unless a ``cloudflared`` program is on PATH.
7. Sets the offline/no-telemetry environment variables.
8. Runs the install step (``requirements.txt``, then ``install.py``) of every enabled extension
   that is new or changed since its last successful run (modules/extensions/installer.py); a
   failing one is reported and the start goes on, as in A1111. ``--skip-install`` skips it.
9. With ``--download NAME_OR_URL`` (repeatable), fetches each catalog checkpoint
   (``configs/checkpoints.json``) or URL into the models folder, with a progress bar.
10. Starts webui.py in this process (unless ``--exit``). When the page asks for a restart
   ("Apply and restart" in the Extensions tab), webui.py returns ``RESTART_EXIT_CODE`` and this
   script starts itself again in a fresh process, so step 8 runs for what changed.

This module runs before anything is installed, so it imports only the standard library at
the top level.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent

TORCH_VERSION = "2.14.1"
TORCHVISION_VERSION = "0.29.1"  # the torchvision release built against TORCH_VERSION
DEFAULT_TORCH_INDEX_URL = "https://download.pytorch.org/whl/cu130"
DEFAULT_REQS_FILE = "requirements.txt"
TEST_REQS_FILE = "tests/requirements.txt"
# Test-only packages whose declared dependencies would downgrade ours (sd-prompt-reader pins an
# old Pillow and a GUI toolkit its reader never imports): installed with --no-deps.
TEST_NODEPS_REQS_FILE = "tests/requirements-nodeps.txt"
DEFAULT_XFORMERS_PACKAGE = "xformers"
# --cloudflared without a cloudflared program on PATH: this package fetches one at first use.
CLOUDFLARED_PACKAGE = "pycloudflared>=0.3,<0.4"
SUPPORTED_PYTHON = ((3, 10), (3, 13))  # inclusive range of minor versions

# Flags that belong to launch.py. They are removed before the rest goes to webui.py.
LAUNCH_FLAGS = {
    "--skip-install": "skip_install",
    "--exit": "exit",
    "--reinstall-torch": "reinstall_torch",
    "--skip-torch-cuda-test": "skip_torch_cuda_test",
    "--skip-python-version-check": "skip_python_version_check",
    "--test-deps": "test_deps",
}

LAUNCH_FLAG_HELP = {
    "--skip-install": "install nothing; only report what is missing",
    "--exit": "prepare the environment, then quit without starting the web UI",
    "--reinstall-torch": "run TORCH_COMMAND even if torch is already installed",
    "--skip-torch-cuda-test": "do not check whether torch can use a CUDA GPU",
    "--skip-python-version-check": "do not warn about an untested Python version",
    "--test-deps": "also install the test-only packages (tests/requirements.txt)",
    "--download NAME_OR_URL": "fetch a checkpoint from configs/checkpoints.json (e.g. sd15) or a URL into models/ "
                              "before starting (repeatable; with --exit, only fetch)",
}

# launch.py flags that take a value; each use appends it to the list attribute.
LAUNCH_VALUE_FLAGS = {"--download": "downloads"}

RESTART_EXIT_CODE = 3  # webui.main's answer to a restart asked from the page (webui.RESTART_EXIT_CODE)

# webui.py flags that make launch.py want xformers.
XFORMERS_FLAGS = ("--xformers", "--force-enable-xformers")


class LaunchError(RuntimeError):
    """A step of the preparation failed and the web UI cannot start."""


@dataclasses.dataclass
class LaunchOptions:
    skip_install: bool = False
    exit: bool = False
    reinstall_torch: bool = False
    skip_torch_cuda_test: bool = False
    skip_python_version_check: bool = False
    test_deps: bool = False
    help: bool = False
    downloads: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RequirementStatus:
    """The outcome of checking one requirement line against the installed packages."""

    requirement: str
    name: str
    state: str  # "satisfied", "missing", "out of range", "not applicable" or "unknown"
    installed: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state in ("satisfied", "not applicable")

    def describe(self) -> str:
        if self.detail:
            return f"{self.requirement} ({self.detail})"
        if self.state == "out of range":
            return f"{self.requirement} (installed: {self.installed})"
        if self.state == "missing":
            return f"{self.requirement} (not installed)"
        if self.state == "unknown":
            return f"{self.requirement} (cannot be checked)"
        return self.requirement


# ---------------------------------------------------------------------------------------
# Arguments


def split_command_line(text: str) -> list[str]:
    """Split a command line the way the user's shell would (roughly, on Windows)."""
    if not text or not text.strip():
        return []
    if os.name == "nt":
        # posix=False keeps backslashes in Windows paths; strip the quotes it leaves on.
        parts = shlex.split(text, posix=False)
        return [p[1:-1] if len(p) >= 2 and p[0] == p[-1] and p[0] in "\"'" else p for p in parts]
    return shlex.split(text)


def collect_args(argv: list[str], env=None) -> list[str]:
    """The command-line arguments followed by those in COMMANDLINE_ARGS (as A1111 does)."""
    env = os.environ if env is None else env
    return list(argv) + split_command_line(env.get("COMMANDLINE_ARGS", ""))


def parse_args(argv: list[str], env=None) -> tuple[LaunchOptions, list[str]]:
    """Split the arguments into launch.py's own options and the rest (for webui.py).
    Raises LaunchError for a value flag without its value."""
    options = LaunchOptions()
    rest: list[str] = []
    args = iter(collect_args(argv, env))
    for arg in args:
        attribute = LAUNCH_FLAGS.get(arg)
        if attribute is not None:
            setattr(options, attribute, True)
            continue
        flag, has_value, value = arg.partition("=")
        if flag in LAUNCH_VALUE_FLAGS:
            value = value if has_value else next(args, None)
            if not value or (not has_value and value.startswith("--")):
                raise LaunchError(f"{flag} needs a value, e.g. {flag} sd15")
            getattr(options, LAUNCH_VALUE_FLAGS[flag]).append(value)
            continue
        if arg in ("-h", "--help"):
            options.help = True
        rest.append(arg)
    return options, rest


def launch_help() -> str:
    lines = ["launch.py options (all other options go to webui.py):"]
    for flag, text in LAUNCH_FLAG_HELP.items():
        lines.append(f"  {flag:<28} {text}")
    lines.append(
        "Environment: COMMANDLINE_ARGS, TORCH_COMMAND, TORCH_INDEX_URL, INDEX_URL, REQS_FILE, "
        "XFORMERS_PACKAGE"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Python, torch and CUDA


def python_version_warning(version_info=None) -> str | None:
    """A warning for Python versions outside SUPPORTED_PYTHON, or None."""
    version = tuple((version_info or sys.version_info)[:2])
    low, high = SUPPORTED_PYTHON
    if low <= version <= high:
        return None
    return (
        f"WARNING: Python {version[0]}.{version[1]} is outside the tested range "
        f"{low[0]}.{low[1]}-{high[0]}.{high[1]}; some packages may fail to install or work. "
        "Use --skip-python-version-check to hide this warning."
    )


def has_nvidia_gpu() -> bool:
    """Whether an NVIDIA driver is present (nvidia-smi can be found)."""
    return shutil.which("nvidia-smi") is not None


def default_torch_command(env=None) -> str:
    """The pip command line that installs torch and torchvision, a matched pair, on this platform.

    On Linux the PyPI torch wheel already is the CUDA build and on macOS it supports MPS;
    on Windows the PyPI wheel is CPU-only, so with an NVIDIA GPU the CUDA wheel index
    (TORCH_INDEX_URL) is added.
    """
    env = os.environ if env is None else env
    command = f"pip install torch=={TORCH_VERSION} torchvision=={TORCHVISION_VERSION}"
    if platform.system() == "Windows" and has_nvidia_gpu():
        index_url = env.get("TORCH_INDEX_URL") or DEFAULT_TORCH_INDEX_URL
        command += f" --extra-index-url {index_url}"
    if env.get("INDEX_URL"):
        command += f" --index-url {env['INDEX_URL']}"
    return command


def torch_command(env=None) -> str:
    """TORCH_COMMAND if the user set it, else the default for this platform."""
    env = os.environ if env is None else env
    return env.get("TORCH_COMMAND") or default_torch_command(env)


def command_to_argv(command: str) -> list[str]:
    """Turn an A1111-style command line ("pip install ...") into an argv for this Python."""
    parts = split_command_line(command)
    if not parts:
        raise LaunchError("TORCH_COMMAND is empty")
    head = parts[0].lower()
    if head in ("pip", "pip3"):
        return [sys.executable, "-m", "pip", *parts[1:]]
    if head == "-m":  # "-m pip install ..."
        return [sys.executable, *parts]
    if re.fullmatch(r"python[0-9.]*(\.exe)?", Path(head).name):
        return [sys.executable, *parts[1:]]
    return parts


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    except Exception:  # a broken distribution: treat it as missing
        return None


def torch_installed() -> bool:
    return installed_version("torch") is not None and importlib.util.find_spec("torch") is not None


def probe_torch() -> dict:
    """What torch can use: {"version", "cuda", "mps", "device", "error"}.

    A CPU-only torch build ("+cpu" local version) cannot have CUDA, so it is answered
    without importing torch (that takes seconds). Otherwise torch is imported in a
    subprocess, as A1111 does.
    """
    version = installed_version("torch")
    if version is None:
        return {"version": None, "cuda": False, "mps": False, "error": "torch is not installed"}
    if version.endswith("+cpu") or ("+rocm" not in version and platform.system() != "Darwin" and not has_nvidia_gpu()):
        # No CUDA build, or no NVIDIA driver to run one: nothing to import torch for (seconds).
        # (A ROCm build is probed: AMD cards answer through torch.cuda too.)
        return {"version": version, "cuda": False, "mps": False, "error": None}
    code = (
        "import json, torch\n"
        "cuda = torch.cuda.is_available()\n"
        "mps = getattr(torch.backends, 'mps', None)\n"
        "mps = bool(mps is not None and mps.is_available())\n"
        "name = torch.cuda.get_device_name(0) if cuda else None\n"
        "print(json.dumps({'version': torch.__version__, 'cuda': cuda, 'mps': mps, 'device': name}))\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"version": version, "cuda": False, "mps": False, "error": str(exc)}
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return {"version": version, "cuda": False, "mps": False, "error": " | ".join(tail)}
    try:
        info = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"version": version, "cuda": False, "mps": False, "error": "unexpected output"}
    info["error"] = None
    return info


def report_torch(info: dict) -> None:
    if info.get("error"):
        print(
            f"WARNING: could not check torch ({info['error']}). The web UI may fail to start; "
            "try --reinstall-torch."
        )
        return
    if info.get("cuda"):
        device = f": {info['device']}" if info.get("device") else ""
        print(f"torch {info['version']} with CUDA{device}")
    elif info.get("mps"):
        print(f"torch {info['version']}: no CUDA GPU; Apple MPS is available and will be used.")
    else:
        print(
            f"No CUDA GPU found: running on the CPU (slow). torch {info['version']} cannot use a "
            "CUDA GPU, so images will take much longer to generate. This is not an error; "
            "--skip-torch-cuda-test hides this check."
        )


# ---------------------------------------------------------------------------------------
# Requirements


def _packaging():
    """packaging's Requirement and InvalidRequirement: the installed copy, else pip's."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        try:
            from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
        except ImportError:
            return None, None
    return Requirement, InvalidRequirement


def read_requirements(path, _seen=None) -> list[str]:
    """The requirement lines of a requirements file, following "-r other.txt" includes.

    Comments, blank lines and pip options (--index-url, -c, ...) are left out.
    """
    path = Path(path)
    seen = set() if _seen is None else _seen
    resolved = path.resolve()
    if resolved in seen:
        return []
    seen.add(resolved)
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"\\\r?\n", " ", text)  # line continuations
    lines: list[str] = []
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        include = re.match(r"^(-r|--requirement)(\s+|=)(.+)$", line)
        if include:
            lines.extend(read_requirements(path.parent / include.group(3).strip(), seen))
            continue
        if line.startswith("-"):
            continue  # an option line (-c, --index-url, -e ...): nothing to check
        lines.append(line)
    return lines


def check_requirement(line: str, _depth: int = 0) -> RequirementStatus:
    """Check one requirement ("name[extras]>=1,<2; marker") against what is installed."""
    Requirement, InvalidRequirement = _packaging()
    if Requirement is None:
        return _check_requirement_without_packaging(line)
    try:
        req = Requirement(line)
    except InvalidRequirement as exc:
        return RequirementStatus(line, line, "unknown", detail=f"cannot parse: {exc}")
    if req.marker is not None and not req.marker.evaluate():
        return RequirementStatus(line, req.name, "not applicable")
    version = installed_version(req.name)
    if version is None:
        return RequirementStatus(line, req.name, "missing")
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        return RequirementStatus(line, req.name, "out of range", installed=version)
    if req.extras and _depth == 0:
        for extra_line in _extra_requirements(req.name, req.extras):
            extra_status = check_requirement(extra_line, _depth + 1)
            if not extra_status.ok:
                return RequirementStatus(
                    line, req.name, extra_status.state, installed=version,
                    detail=f"extra dependency {extra_status.describe()}",
                )
    return RequirementStatus(line, req.name, "satisfied", installed=version)


def _extra_requirements(name: str, extras) -> list[str]:
    """The dependencies that the given extras of an installed package add."""
    Requirement, InvalidRequirement = _packaging()
    lines = []
    for dep in importlib.metadata.requires(name) or []:
        try:
            req = Requirement(dep)
        except InvalidRequirement:
            continue
        if req.marker is None or "extra" not in str(req.marker):
            continue  # a plain dependency: not part of any extra
        if any(req.marker.evaluate({"extra": extra}) for extra in extras):
            text = req.name + (f"[{','.join(sorted(req.extras))}]" if req.extras else "")
            lines.append(text + str(req.specifier))
    return lines


def _check_requirement_without_packaging(line: str) -> RequirementStatus:
    """Fallback when no copy of packaging exists: check presence only."""
    match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    if not match:
        return RequirementStatus(line, line, "unknown", detail="cannot parse")
    version = installed_version(match.group(1))
    state = "satisfied" if version is not None else "missing"
    return RequirementStatus(line, match.group(1), state, installed=version)


def check_requirements_file(path) -> list[RequirementStatus]:
    return [check_requirement(line) for line in read_requirements(path)]


def unmet_requirements(path) -> list[RequirementStatus]:
    return [status for status in check_requirements_file(path) if not status.ok]


# ---------------------------------------------------------------------------------------
# Running pip


def pip_argv(*args: str, env=None) -> list[str]:
    """`python -m pip <args>` for this Python, with --prefer-binary and INDEX_URL."""
    env = os.environ if env is None else env
    argv = [sys.executable, "-m", "pip", *args, "--prefer-binary"]
    if env.get("INDEX_URL"):
        argv += ["--index-url", env["INDEX_URL"]]
    return argv


def run_pip(argv: list[str], description: str) -> None:
    """Run an install command (normally pip), streaming its output. Raises LaunchError."""
    print(f"Installing {description}: {' '.join(shlex.quote(a) for a in argv)}", flush=True)
    try:
        result = subprocess.run(argv)
    except OSError as exc:
        raise LaunchError(f"could not run {argv[0]}: {exc}") from exc
    if result.returncode != 0:
        raise LaunchError(f"installing {description} failed (exit code {result.returncode})")
    importlib.invalidate_caches()


# ---------------------------------------------------------------------------------------
# Preparation steps


def ensure_torch(options: LaunchOptions, env=None) -> bool:
    """Run TORCH_COMMAND if torch is missing or --reinstall-torch. True if it ran."""
    installed = torch_installed()
    if installed and not options.reinstall_torch:
        return False
    command = torch_command(env)
    if options.skip_install:
        if installed:
            print("WARNING: --reinstall-torch is ignored because of --skip-install.")
        else:
            print(f"WARNING: torch is not installed and --skip-install was given: "
                  f"not running `{command}`. The web UI will not start without torch.")
        return False
    run_pip(command_to_argv(command), "torch")
    if not torch_installed():
        raise LaunchError(f"torch is still not importable after `{command}`")
    return True


def torchvision_requirement(torch_version: str) -> list[str]:
    """pip arguments that add the torchvision built for an installed torch and change nothing
    else: torch is pinned to the version it has, so pip's resolver picks the one matching
    torchvision (torchvision 0.N+15 goes with torch 2.N). A torch from one of PyTorch's own
    indexes (`2.13.0+cpu`, `+cu128`) gets torchvision from the same index, since PyPI's
    build does not load beside it."""
    match = re.match(r"2\.(\d+)\.\d+", torch_version)
    if match is None:
        raise LaunchError(f"cannot tell which torchvision goes with torch {torch_version}: install it with TORCH_COMMAND")
    args = [f"torchvision==0.{int(match.group(1)) + 15}.*", f"torch=={torch_version}"]
    local = torch_version.partition("+")[2]
    if local:
        args += ["--extra-index-url", f"https://download.pytorch.org/whl/{local}"]
    return args


def ensure_torchvision(options: LaunchOptions, env=None) -> bool:
    """Add torchvision to a venv that has torch alone (made before the project needed it).
    Metadata only when both are there, so an up-to-date start runs nothing. True if pip ran."""
    torch_version = installed_version("torch")
    if torch_version is None or installed_version("torchvision") is not None:
        return False
    if options.skip_install:
        print("WARNING: torchvision is not installed and --skip-install was given: upscalers and face restoration will not work.")
        return False
    run_pip(pip_argv("install", *torchvision_requirement(torch_version), env=env), f"torchvision for torch {torch_version}")
    if installed_version("torchvision") is None:
        raise LaunchError(f"torchvision is still missing after installing it for torch {torch_version}; try --reinstall-torch")
    return True


def ensure_requirements(path, options: LaunchOptions, env=None, no_deps: bool = False) -> bool:
    """pip install -r path, only if something in it is missing or out of range (`no_deps`:
    without the packages' own dependencies).

    True if pip ran.
    """
    path = Path(path)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.exists():
        print(f"WARNING: requirements file not found: {path}")
        return False
    unmet = unmet_requirements(path)
    if not unmet:
        return False
    label = _display_path(path)
    listing = "\n".join(f"  {status.describe()}" for status in unmet)
    if options.skip_install:
        print(f"WARNING: --skip-install: not installing from {label}:\n{listing}")
        return False
    print(f"Missing or out-of-range requirements in {label}:\n{listing}")
    run_pip(pip_argv("install", *(["--no-deps"] if no_deps else []), "-r", str(path), env=env), f"requirements from {label}")
    still_unmet = unmet_requirements(path)
    if still_unmet:
        listing = "\n".join(f"  {status.describe()}" for status in still_unmet)
        print(f"WARNING: still not satisfied after installing {label}:\n{listing}")
    return True


def wants_xformers(args: list[str]) -> bool:
    return any(flag in args for flag in XFORMERS_FLAGS)


def ensure_xformers(args: list[str], options: LaunchOptions, cuda_available, env=None) -> bool:
    """Install xformers for --xformers, only when CUDA is available. True if pip ran.

    cuda_available is a bool or a callable returning one (so the slow check runs only
    when it is needed).
    """
    if not wants_xformers(args) or installed_version("xformers") is not None:
        return False
    if options.skip_install:
        print("WARNING: --xformers was given but xformers is not installed (--skip-install).")
        return False
    available = cuda_available() if callable(cuda_available) else cuda_available
    if not available:
        print(
            "WARNING: --xformers was given but no CUDA GPU is available; xformers only works "
            "on CUDA, so it is not installed and the default attention is used."
        )
        return False
    env_ = os.environ if env is None else env
    package = env_.get("XFORMERS_PACKAGE") or DEFAULT_XFORMERS_PACKAGE
    # --no-deps: xformers' dependencies would otherwise replace the installed torch.
    run_pip(pip_argv("install", package, "--no-deps", env=env), "xformers")
    return True


def ensure_cloudflared(args: list[str], options: LaunchOptions, env=None) -> bool:
    """For --cloudflared, install pycloudflared unless a cloudflared program is on PATH or the
    package is there already. True if pip ran. A failure only warns: the tunnel then reports
    that it cannot open, and the web UI still serves locally."""
    if "--cloudflared" not in args or shutil.which("cloudflared") or installed_version("pycloudflared") is not None:
        return False
    if options.skip_install:
        print("WARNING: --cloudflared was given but there is no cloudflared program on PATH and pycloudflared "
              "is not installed (--skip-install): no tunnel will open.")
        return False
    try:
        run_pip(pip_argv("install", CLOUDFLARED_PACKAGE, env=env), "pycloudflared (for --cloudflared)")
    except LaunchError as exc:
        print(f"WARNING: {exc}; --cloudflared will not open a tunnel.")
        return False
    return True


def apply_environment(env=None) -> None:
    """Environment variables for the web UI: no analytics or telemetry, offline HF hub.

    Values the user set explicitly are kept (HF_HUB_OFFLINE=0 allows downloads).
    """
    env = os.environ if env is None else env
    env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")


def git_commit() -> str | None:
    """The checked-out commit, read from .git without running git."""
    git_dir = REPO_ROOT / ".git"
    try:
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        ref_file = git_dir / ref
        if ref_file.exists():
            return ref_file.read_text(encoding="utf-8").strip()
        packed = git_dir / "packed-refs"
        if packed.exists():
            for line in packed.read_text(encoding="utf-8").splitlines():
                if line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
    except OSError:
        return None
    return None


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def prepare_environment(options: LaunchOptions, args: list[str], env=None) -> list[str]:
    """Install what is missing (see the module docstring); returns what was installed.

    Raises LaunchError when an installation fails.
    """
    env = os.environ if env is None else env
    installed: list[str] = []

    if ensure_torch(options, env):
        installed.append("torch")
    if ensure_torchvision(options, env):
        installed.append("torchvision")

    torch_info: dict | None = None

    def cuda_available() -> bool:
        nonlocal torch_info
        if torch_info is None:
            torch_info = probe_torch()
        return bool(torch_info.get("cuda"))

    if not options.skip_torch_cuda_test and torch_installed():
        cuda_available()
        report_torch(torch_info)

    reqs_file = env.get("REQS_FILE") or DEFAULT_REQS_FILE
    if ensure_requirements(reqs_file, options, env):
        installed.append(reqs_file)
    if options.test_deps and ensure_requirements(TEST_REQS_FILE, options, env):
        installed.append(TEST_REQS_FILE)
    if options.test_deps and ensure_requirements(TEST_NODEPS_REQS_FILE, options, env, no_deps=True):
        installed.append(TEST_NODEPS_REQS_FILE)

    if ensure_xformers(args, options, cuda_available, env):
        installed.append("xformers")
    if ensure_cloudflared(args, options, env):
        installed.append("pycloudflared")
    return installed


def read_settings_file(path: Path) -> dict:
    """config.json's values (only the extension switches are needed here); {} when it is
    missing or unreadable (webui.py reports that itself)."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


def install_extensions(options: LaunchOptions, webui_args: list[str]) -> dict[str, str | None]:
    """Step 8: the install step of every enabled extension that is new or changed, one line
    each; {name: None (done) or why it failed}. A failure does not stop the start."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        from modules.extensions.installer import InstallState, install_pending
        from modules.extensions.layout import ExtensionDirs, discover, switches
        from modules.options import Paths, build_parser
    except ImportError as exc:
        print(f"WARNING: extensions' install steps not run: {exc}")
        return {}
    try:  # webui.py reports bad flags (and prints --help) itself
        flags, _ = build_parser().parse_known_args([a for a in webui_args if a not in ("-h", "--help")])
    except SystemExit:
        return {}
    paths = Paths.from_args(flags)
    dirs = ExtensionDirs.for_paths(paths)
    extensions = discover(dirs, *switches(read_settings_file(paths.settings), flags))
    state = InstallState.for_dirs(dirs)
    if options.skip_install:
        pending = [e.name for e in extensions if e.enabled and (e.install_script or e.requirements) and _needs_install(state, e)]
        if pending:
            print(f"WARNING: --skip-install: not running the install step of {', '.join(pending)}.")
        return {}
    started = time.perf_counter()
    import logging  # what install.py prints is shown, as A1111 does (webui.py sets up logging for itself later)

    echo, installer_log = logging.StreamHandler(sys.stdout), logging.getLogger("modules.extensions.installer")
    echo.setFormatter(logging.Formatter("%(message)s"))
    installer_log.addHandler(echo)
    installer_log.setLevel(logging.INFO)
    try:
        results = install_pending(extensions, state)
    finally:
        installer_log.removeHandler(echo)
        installer_log.setLevel(logging.NOTSET)
    for name, error in results.items():
        if error is None:
            print(f"Extension {name}: install step done.")
        else:
            print(f"WARNING: extension {name}: install step failed; it may not work. {error}")
    if results:
        print(f"Extensions' install steps: {len(results)} in {time.perf_counter() - started:.1f} s.", flush=True)
    return results


def _needs_install(state, extension) -> bool:
    try:
        return state.needs_install(extension)
    except ValueError:
        return True


def relaunch_command(argv: list[str]) -> list[str]:
    """The command that starts this script again with the arguments it was given."""
    return [sys.executable, str(REPO_ROOT / "launch.py"), *argv]


def relaunch(argv: list[str]) -> None:
    """Replace this process with a fresh launch.py (a restart asked from the page): a new
    interpreter loads updated and new extensions cleanly. Returns only if that fails."""
    command = relaunch_command(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(command[0], command)
    except OSError as exc:
        print(f"ERROR: could not restart ({exc}); start the web UI again by hand.", file=sys.stderr)


def download_models(queries: list[str], webui_args: list[str]) -> list[Path]:
    """--download: fetch each catalog name or URL into the models folder that webui.py's
    flags (--data-dir, --models-dir...) point at, with a console progress bar. Raises
    LaunchError with the reason when one fails."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        from modules.models.catalog import HashCache
        from modules.models.downloadable import Catalog, model_folders, resolve_request
        from modules.models.fetch import fetch_file
        from modules.options import Paths, parse_args as parse_webui_args
    except ImportError as exc:
        raise LaunchError(f"--download needs the web UI's requirements: {exc}") from exc
    paths = Paths.from_args(parse_webui_args(webui_args))
    folders = model_folders(paths)
    fetched = []
    try:
        catalog = Catalog.load()
        pending, seen = list(queries), set()
        while pending:
            query = pending.pop(0)
            entry = catalog.find(query)
            if entry is not None:  # a model of several files: its `also` entries come with it (a tagger's label table)
                if entry.name in seen:
                    continue
                seen.add(entry.name)
                pending[:0] = list(entry.also)
            source, folder = resolve_request(query, catalog)
            print(f"Downloading {source.describe()} from {source.url} to {folders[folder]}", flush=True)
            path = fetch_file(source, folders[folder])
            if source.sha256:  # verified: the first load need not hash it again
                HashCache(paths.hash_cache).remember(path, source.sha256)
            print(f"Downloaded {path}", flush=True)
            fetched.append(path)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    return fetched


def start_webui(args: list[str]) -> int:
    """Import webui.py from the repository root and run its main(args)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    sys.argv = [str(REPO_ROOT / "webui.py"), *args]
    webui = importlib.import_module("webui")
    result = webui.main(args)
    return int(result or 0)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    argv = sys.argv[1:] if argv is None else argv
    try:
        options, args = parse_args(argv)
    except LaunchError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1

    commit = git_commit()
    print(f"Python {platform.python_version()} ({sys.executable})"
          + (f", commit {commit[:10]}" if commit else ""))
    if not options.skip_python_version_check:
        warning = python_version_warning()
        if warning:
            print(warning)
    if options.help:
        print(launch_help())

    try:
        installed = prepare_environment(options, args)
    except LaunchError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    if installed:
        print(f"Installed: {', '.join(installed)}.")
    elif not options.skip_install:
        print("Nothing to install: all requirements are satisfied.")

    install_extensions(options, args)
    apply_environment()
    print(f"Environment ready in {time.perf_counter() - started:.2f} s.", flush=True)
    if options.downloads:
        try:
            download_models(options.downloads, args)
        except LaunchError as exc:
            print(f"ERROR: {exc}", file=sys.stderr)
            return 1
    if options.exit:
        print("--exit: not starting the web UI.")
        return 0
    os.environ["SD_WEBUI_RESTART"] = "1"  # webui.py may stop for a restart: this script starts it again (A1111's variable)
    code = start_webui(args)
    if code == RESTART_EXIT_CODE:
        print("Restarting the web UI, as asked from the page ...", flush=True)
        relaunch(argv)
    return code


if __name__ == "__main__":
    sys.exit(main())
