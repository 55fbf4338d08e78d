"""The few git operations the extension manager needs, as calls of the `git` program.

Each call has a timeout, never asks for a password (a private or mistyped URL fails at once
instead of waiting on a prompt nobody sees) and turns a failure into a ValueError ending with
git's own reason, so the Extensions tab and launch.py can show it as it is.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

TIMEOUT = 60.0  # seconds: status and local commands
NETWORK_TIMEOUT = 600.0  # seconds: clone, fetch, pull
# No prompts, no credential helpers, no pager; ssh (not used by our URLs) in batch mode all the same.
_QUIET_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "GCM_INTERACTIVE": "never",
              "GIT_SSH_COMMAND": "ssh -o BatchMode=yes", "GIT_PAGER": "cat", "LC_ALL": "C"}
_QUIET_CONFIG = ("-c", "credential.helper=", "-c", "core.askPass=", "-c", "protocol.ext.allow=never")


@dataclass(frozen=True)
class GitVersion:
    """What A1111's /sdapi/v1/extensions reports of a folder's checkout; all None for a folder
    that is not a git repository of its own (a built-in extension)."""

    remote: str | None = None
    branch: str | None = None
    commit_hash: str | None = None
    commit_date: int | None = None  # unix seconds of the commit

    @property
    def version(self) -> str:
        """The short hash A1111 shows as the version ('' without a commit)."""
        return (self.commit_hash or "")[:8]


def run(args: list[str], cwd: Path | None = None, timeout: float = TIMEOUT, what: str | None = None) -> str:
    """`git <args>` in `cwd`; its standard output, or ValueError naming `what` with git's reason."""
    what = what or f"git {args[0]}"
    env = {**os.environ, **_QUIET_ENV}
    try:
        result = subprocess.run(["git", *_QUIET_CONFIG, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout)
    except FileNotFoundError:
        raise ValueError(f"{what} failed: the git program is not installed (or not on PATH).") from None
    except subprocess.TimeoutExpired:
        raise ValueError(f"{what} took longer than {timeout:g} s and was stopped (a slow or unreachable server?).") from None
    if result.returncode != 0:
        raise ValueError(f"{what} failed: {reason(result.stderr or result.stdout)}")
    return result.stdout


def reason(output: str) -> str:
    """git's own sentence from its error output: the first 'fatal:'/'error:' line (the cause;
    later ones are general advice such as "Could not read from remote repository"), else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    marked = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return marked[0] if marked else (lines or ["no message"])[-1]


def without_password(url: str) -> str:
    """`url` without a user:password@ part, for showing and comparing."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def is_repository(folder: Path) -> bool:
    """Whether `folder` is the top of a git checkout of its own (not just inside the web UI's)."""
    return (Path(folder) / ".git").exists()


def version_info(folder: Path) -> GitVersion:
    """Remote, branch, commit and commit date of `folder`; empty for a folder that is not a
    repository of its own, or one git cannot read (a broken clone)."""
    folder = Path(folder)
    if not is_repository(folder):
        return GitVersion()
    try:
        head = run(["log", "-1", "--format=%H %ct"], folder).split()
        branch = run(["rev-parse", "--abbrev-ref", "HEAD"], folder).strip()
    except ValueError:
        return GitVersion()
    try:
        remote = run(["config", "--get", "remote.origin.url"], folder).strip() or None
    except ValueError:  # no origin: a repository made by hand
        remote = None
    return GitVersion(without_password(remote) if remote else None, None if branch == "HEAD" else branch,
                      head[0] if head else None, int(head[1]) if len(head) > 1 else None)


def clone(url: str, dest: Path, branch: str | None = None, timeout: float = NETWORK_TIMEOUT) -> None:
    """Clone `url` (with its submodules) into `dest`, which must not exist yet. Over https only
    the commits come at first (`--filter=blob:none`: file contents as needed), as A1111 does."""
    args = ["clone", "--recurse-submodules"]
    if urlsplit(url).scheme in ("http", "https"):
        args.append("--filter=blob:none")
    if branch:
        args += ["--branch", branch]
    run([*args, "--", url, str(dest)], timeout=timeout, what=f"Cloning {without_password(url)}")


def fetch(folder: Path, timeout: float = NETWORK_TIMEOUT) -> None:
    run(["fetch", "--quiet"], folder, timeout, what=f"Fetching updates of {Path(folder).name}")


def commits_behind(folder: Path) -> int:
    """How many commits the branch's upstream (as last fetched) has that HEAD lacks."""
    name = Path(folder).name
    try:
        run(["rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}"], folder)
    except ValueError:
        raise ValueError(f"{name} has no branch to update from (a detached checkout or a branch without upstream).") from None
    return int(run(["rev-list", "--count", "HEAD..@{u}"], folder, what=f"Comparing {name} with its upstream").strip() or 0)


def has_update(folder: Path, timeout: float = NETWORK_TIMEOUT) -> bool:
    """Fetch, then whether the upstream branch has commits HEAD does not."""
    fetch(folder, timeout)
    return commits_behind(folder) > 0


def pull(folder: Path, timeout: float = NETWORK_TIMEOUT) -> None:
    """Fast-forward to the upstream branch (with submodules). Local edits in the way, or a
    branch that went its own way, stop it with a sentence saying what to do."""
    name = Path(folder).name
    try:
        run(["pull", "--ff-only", "--recurse-submodules"], folder, timeout, what=f"Updating {name}")
    except ValueError as exc:
        text = str(exc)
        if "local changes" in text or "would be overwritten" in text or "untracked working tree files" in text:
            raise ValueError(f"Updating {name} failed: files in its folder were changed locally and the update would overwrite "
                             f"them. Commit or undo those changes in {folder}, then update again.") from None
        if "Not possible to fast-forward" in text or "non-fast-forward" in text or "diverg" in text:
            raise ValueError(f"Updating {name} failed: its folder has commits of its own that are not on the remote branch, "
                             f"so it cannot simply move forward. Reset or re-install it.") from None
        raise
