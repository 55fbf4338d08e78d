"""An extension's install step: `pip install -r requirements.txt` (after requirements_check
has read it) and then its `install.py`, as A1111's launch.py runs it (the web UI's Python,
the extension's folder as working directory, PYTHONPATH the web UI's folder so
`import launch` works).

The step runs only for an extension that is new or changed since its last successful run:
`<data-dir>/extensions/.installed.json` keeps a fingerprint of each one's commit,
install.py and requirements.txt. Output goes to the log; a failure is a ValueError naming the
extension with the last lines of what it printed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from modules.extensions import git, requirements_check
from modules.extensions.layout import Extension, ExtensionDirs
from modules.files import atomic_path
from modules.options import REPO_DIR

log = logging.getLogger(__name__)

STATE_FILE = ".installed.json"
INSTALL_TIMEOUT = 900.0  # seconds for one install.py
PIP_TIMEOUT = 1800.0  # seconds for one pip install
TAIL_LINES = 15


def fingerprint(extension: Extension) -> str:
    """What decides whether the install step must run again: the checked-out commit and the
    contents of install.py and requirements.txt (a built-in extension has no commit of its own)."""
    digest = hashlib.sha256()
    commit = git.run(["rev-parse", "HEAD"], extension.path).strip() if git.is_repository(extension.path) else ""
    digest.update(commit.encode() + b"\0")
    for part in (extension.install_script, extension.requirements):
        digest.update(part.read_bytes() if part is not None else b"-")
        digest.update(b"\0")
    return digest.hexdigest()[:32]


@dataclass
class InstallState:
    """`.installed.json`: extension name -> fingerprint of its last successful install step,
    written through a temp file so a crash leaves the old file or the new, never half."""

    path: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_dirs(cls, dirs: ExtensionDirs) -> "InstallState":
        return cls(Path(dirs.user) / STATE_FILE)

    def load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # none yet, or unreadable: every extension counts as new
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) else {}

    def _write(self, change) -> None:
        with self._lock:
            data = self.load()
            change(data)
            with atomic_path(self.path) as temp:
                temp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def record(self, name: str, print_: str) -> None:
        self._write(lambda data: data.__setitem__(name, print_))

    def forget(self, name: str) -> None:
        self._write(lambda data: data.pop(name, None))

    def needs_install(self, extension: Extension) -> bool:
        return self.load().get(extension.name) != fingerprint(extension)


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float, what: str) -> str:
    """Run a command with its output captured (merged); ValueError with its last lines on failure."""
    try:
        result = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode("utf-8", "replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise ValueError(f"{what} took longer than {timeout:g} s and was stopped.{_tail(output)}") from None
    except OSError as exc:
        raise ValueError(f"{what} could not start: {exc.strerror or exc}") from None
    if result.returncode != 0:
        raise ValueError(f"{what} failed (exit code {result.returncode}).{_tail(result.stdout)}")
    return result.stdout


def _tail(output: str) -> str:
    lines = [line for line in (output or "").splitlines() if line.strip()]
    return (" Last lines:\n" + "\n".join(lines[-TAIL_LINES:])) if lines else ""


def install_step(extension: Extension, python: str = sys.executable, repo_root: Path = REPO_DIR,
                 timeout: float = INSTALL_TIMEOUT, pip_timeout: float = PIP_TIMEOUT) -> str:
    """Install `extension`'s requirements.txt (checked first, and only when something in it is
    missing) and run its install.py. Returns what they printed (also logged); ValueError
    naming the extension on a refusal or a failure."""
    name, output = extension.name, []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_root), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PYTHONUNBUFFERED": "1"}
    if extension.requirements is not None:
        try:
            lines = requirements_check.check_requirements(extension.requirements, extension.path)
        except ValueError as exc:
            raise ValueError(f"{name}: its requirements.txt is refused: {exc}") from None
        if requirements_check.unmet(lines):
            output.append(_pip_install(extension, python, env, pip_timeout))
    if extension.install_script is not None:
        text = _run([python, str(extension.install_script)], extension.path, env, timeout, f"{name}: install.py")
        for line in text.splitlines():
            log.info("[%s install.py] %s", name, line)
        output.append(text)
    return "".join(output)


def _pip_install(extension: Extension, python: str, env: dict[str, str], timeout: float) -> str:
    """pip install -r requirements.txt, with torch & co. pinned by a constraints file."""
    with tempfile.TemporaryDirectory(prefix="webui-ext-") as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text("\n".join(requirements_check.protected_pins()) + "\n", encoding="utf-8")
        argv = [python, "-m", "pip", "install", "-r", str(extension.requirements), "-c", str(constraints), "--prefer-binary",
                "--disable-pip-version-check"]
        if os.environ.get("INDEX_URL"):
            argv += ["--index-url", os.environ["INDEX_URL"]]
        log.info("Installing the requirements of %s", extension.name)
        text = _run(argv, extension.path, env, timeout, f"{extension.name}: pip install -r requirements.txt")
    for line in text.splitlines():
        log.debug("[%s pip] %s", extension.name, line)
    return text


def install_if_changed(extension: Extension, state: InstallState, python: str = sys.executable, repo_root: Path = REPO_DIR,
                       force: bool = False) -> bool:
    """Run the install step when the extension is new or changed (or `force`), then record it.
    True when it ran; ValueError (not recorded, so it is tried again next time) on failure."""
    if extension.install_script is None and extension.requirements is None:
        return False  # nothing to run, nothing to remember
    current = fingerprint(extension)
    if not force and state.load().get(extension.name) == current:
        return False
    install_step(extension, python, repo_root)
    state.record(extension.name, current)
    return True


def install_pending(extensions: list[Extension], state: InstallState, python: str = sys.executable,
                    repo_root: Path = REPO_DIR) -> dict[str, str | None]:
    """launch.py's step: every enabled extension that is new or changed gets its install step.
    Returns {name: None (done) or the reason it failed} for those that ran; a failure does not
    stop the others (A1111 carries on too)."""
    results: dict[str, str | None] = {}
    for extension in extensions:
        if not extension.enabled:
            continue
        try:
            if install_if_changed(extension, state, python, repo_root):
                results[extension.name] = None
        except (ValueError, OSError) as exc:  # an unreadable install.py fails its extension, not launch.py
            results[extension.name] = str(exc)
    return results
