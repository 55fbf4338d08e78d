"""Local git repositories made inside a test (file:// URLs; never the network)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {"GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com", "GIT_COMMITTER_NAME": "Test",
           "GIT_COMMITTER_EMAIL": "test@example.com", "GIT_CONFIG_NOSYSTEM": "1"}


def git(folder: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(folder.parent)}
    return subprocess.run(["git", *args], cwd=folder, env=env, check=True, capture_output=True, text=True).stdout


def commit(folder: Path, files: dict[str, str], message: str = "change") -> str:
    """Write `files` (relative path -> text) into the repository and commit them; the new hash."""
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", message)
    return git(folder, "rev-parse", "HEAD").strip()


def make_repo(root: Path, name: str, files: dict[str, str]) -> tuple[Path, str]:
    """A repository `root/name` with one commit of `files` on branch main; (its folder, its file:// URL)."""
    folder = root / name
    folder.mkdir(parents=True)
    git(folder, "init", "-q", "-b", "main")
    commit(folder, files, "first")
    return folder, folder.as_uri()
