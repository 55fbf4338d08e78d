"""Installing, updating, switching and removing extensions: what the Extensions tab and the
API do with `extensions/`. No gradio here: every method takes plain values and either returns
plain data or raises a ValueError with a sentence the page shows as it is.

Every change runs code on the server or changes what runs there, so all of them are refused
on a shared server (network flags or log-ins) unless its owner allows them
(`ServerAccess.extension_refusal`, modules/network.py). Changes take effect at the next
start: the page offers "Apply and restart" (`App.request_restart`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from modules.extensions import git
from modules.extensions.installer import InstallState, install_if_changed
from modules.extensions.layout import DISABLE_ALL_MODES, Extension, ExtensionDirs, check_name, discover, switches
from modules.network import AccessRefused, ServerAccess
from modules.options import REPO_DIR

log = logging.getLogger(__name__)

_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
TEMP_PREFIX = ".installing-"  # a clone on its way in (discover skips dot folders)
STALE_SECONDS = 6 * 3600  # a temporary clone this old was left by a process that died mid-install


def normalize_url(url: str) -> str:
    """A repository URL for comparing: no password, no trailing slash or `.git`, host in lower case."""
    text = git.without_password((url or "").strip())
    parts = urlsplit(text)
    path = parts.path.rstrip("/")
    path = path[:-4] if path.endswith(".git") else path
    return f"{parts.scheme.lower()}://{(parts.netloc or '').lower()}{path.rstrip('/')}" if parts.scheme else path


def check_url(url: str) -> str:
    """`url` when it is an https:// or file:// git URL this server may clone, else ValueError."""
    text = (url or "").strip() if isinstance(url, str) else ""
    if not text:
        raise ValueError("Give the URL of the extension's git repository, such as https://github.com/user/extension.")
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise ValueError(f"{text!r} is not a URL: it holds spaces or control characters.")
    if text.startswith("-"):
        raise ValueError(f"{text!r} is not a URL: it starts with '-' (git would read it as an option).")
    parts = urlsplit(text)
    if parts.scheme not in ("https", "file"):
        raise ValueError(f"{text!r} is not an https:// or file:// URL; extensions are installed from https:// (or file:// for a "
                         "repository on this machine).")
    if parts.scheme == "https" and (parts.username is not None or parts.password is not None):
        raise ValueError(f"{git.without_password(text)!r}: a URL with a user name or password is refused (it would be stored in the "
                         "extension's folder and shown in the list); use a public repository URL.")
    if parts.scheme == "https" and not parts.hostname:
        raise ValueError(f"{text!r} has no host name.")
    return text


def name_from_url(url: str) -> str:
    """The folder name A1111 derives: the URL's last part without `.git`."""
    last = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    return last[:-4] if last.endswith(".git") else last


def _remove_tree(path: Path) -> None:
    """rmtree that also removes read-only files (git's packs on Windows)."""
    def retry(func, name, _exc):
        os.chmod(name, stat.S_IWRITE)
        func(name)

    if path.exists():
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=retry)
        else:
            shutil.rmtree(path, onerror=retry)


class ExtensionManager:
    """The extensions of one server: `dirs` (built-in and user folders), config.json
    (`settings`: disabled_extensions, disable_all_extensions), who may change them
    (`access`; None: a local server), and the Python that runs install steps.

    `auth_on` says log-ins are on when `access` was not built from the flags. `args` (the parsed
    flags) makes --disable-all-extensions / --disable-extra-extensions show in `enabled`."""

    def __init__(self, dirs: ExtensionDirs, settings, access: ServerAccess | None = None, python: str = sys.executable,
                 auth_on: bool = False, args=None, repo_root: Path = REPO_DIR):
        access = access or ServerAccess(Path(dirs.user))
        if auth_on and not access.logins:
            access = replace(access, logins=("log-ins on",))
        self.dirs, self.settings, self.access, self.python, self.args, self.repo_root = dirs, settings, access, python, args, repo_root
        self.state = InstallState.for_dirs(dirs)
        self._updates: dict[str, bool | str] = {}  # the last check_updates, for installed()
        self._lock = threading.RLock()  # one change at a time (two clicks must not clone into one folder)

    # -- reading ----------------------------------------------------------------------------

    def extensions(self) -> list[Extension]:
        """Every extension folder, with `enabled` as config.json and the flags say."""
        disabled, mode = switches(self.settings.values, self.args)
        return discover(self.dirs, disabled, mode)

    def find(self, name: str) -> Extension:
        """The extension called `name`; ValueError naming the ones there are otherwise."""
        for extension in self.extensions():
            if extension.name == name:
                return extension
        raise ValueError(f"There is no extension called {name!r}.")

    def installed(self) -> list[dict]:
        """One dict per extension, built-in ones first: name, title, builtin, enabled, path,
        remote, branch, commit, date (unix seconds or None), version (short hash, else the
        manifest's version), description, and `update` from the last check_updates (None: not
        checked, True: an update is there, False: up to date, str: why it could not be checked)."""
        rows = []
        for extension in self.extensions():
            info = git.version_info(extension.path)
            rows.append({
                "name": extension.name, "title": extension.title, "builtin": extension.builtin, "enabled": extension.enabled,
                "path": str(extension.path), "remote": info.remote, "branch": info.branch, "commit": info.commit_hash,
                "date": info.commit_date, "version": info.version or extension.manifest.version,
                "description": extension.manifest.description, "update": self._updates.get(extension.name),
            })
        return rows

    def api_list(self) -> list[dict]:
        """A1111's GET /sdapi/v1/extensions: name, remote, branch, commit_hash, commit_date, version, enabled."""
        out = []
        for extension in self.extensions():
            info = git.version_info(extension.path)
            out.append({"name": extension.name, "remote": info.remote, "branch": info.branch, "commit_hash": info.commit_hash,
                        "commit_date": info.commit_date, "version": info.version, "enabled": extension.enabled})
        return out

    def installed_urls(self) -> set[str]:
        """The normalised remote URLs of the user's extensions (to mark an index's entries)."""
        return {normalize_url(r) for r in (git.version_info(e.path).remote for e in self.extensions() if not e.builtin) if r}

    def refusal(self, action: str = "Changing extensions") -> str | None:
        """Why changes are refused on this server (for the page to say up front), or None."""
        return self.access.extension_refusal(action)

    def _require(self, action: str) -> None:
        refusal = self.access.extension_refusal(action)
        if refusal:
            raise AccessRefused(refusal)

    # -- changes ----------------------------------------------------------------------------

    def install(self, url: str, branch: str | None = None, name: str | None = None) -> Extension:
        """Clone `url` into extensions/<name>, run its install step, and return it. It is
        cloned into a hidden temporary folder beside the others and renamed into place only
        when everything worked: on any failure nothing is left behind. It loads at the next start."""
        self._require("Installing extensions")
        url = check_url(url)
        name = check_name((name or "").strip() or name_from_url(url))
        branch = (branch or "").strip() or None
        if branch is not None and (not _BRANCH.match(branch) or ".." in branch):
            raise ValueError(f"{branch!r} is not a branch name.")
        with self._lock:
            target = Path(self.dirs.user) / name
            if (Path(self.dirs.builtin) / name).exists():
                raise ValueError(f"{name!r} is the name of a built-in extension; give the new one another folder name.")
            if target.exists():
                raise ValueError(f"extensions/{name} already exists; uninstall it first, or give another folder name.")
            wanted = normalize_url(url)
            for extension in self.extensions():
                remote = git.version_info(extension.path).remote if not extension.builtin else None
                if remote and normalize_url(remote) == wanted:
                    raise ValueError(f"{git.without_password(url)} is already installed as {extension.name}.")
            Path(self.dirs.user).mkdir(parents=True, exist_ok=True)
            self._remove_stale_clones()
            temp = Path(self.dirs.user) / f"{TEMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
            try:
                git.clone(url, temp, branch)
                staged = Extension(name, temp, builtin=False)
                install_if_changed(staged, _NoState(), self.python, self.repo_root, force=True)
                try:
                    temp.rename(target)
                except OSError as exc:
                    raise ValueError(f"Could not move the new extension into extensions/{name}: {exc.strerror or exc}") from None
            except BaseException:
                _remove_tree(temp)
                raise
            self._updates.pop(name, None)
            extension = self.find(name)
            self._record(extension)
            log.info("Installed extension %s from %s into %s", name, git.without_password(url), target)
            return extension

    def check_updates(self, names: list[str] | None = None) -> dict[str, bool | str]:
        """Fetch each user extension that is a git checkout (all, or `names`) and say whether its
        branch has new commits: {name: True (update there) | False (up to date) | reason it could not be checked}."""
        self._require("Checking extensions for updates")
        results: dict[str, bool | str] = {}
        for extension in self.extensions():
            if extension.builtin or (names is not None and extension.name not in names):
                continue
            if not git.is_repository(extension.path):
                results[extension.name] = "not a git checkout: it cannot be updated from here"
                continue
            try:
                results[extension.name] = git.has_update(extension.path)
            except ValueError as exc:
                results[extension.name] = str(exc)
        self._updates.update(results)
        return results

    def update(self, name: str) -> Extension:
        """Pull the new commits of a user extension, then run its install step again if it
        changed. The new code loads at the next start."""
        self._require("Updating extensions")
        with self._lock:
            extension = self._user_extension(name, "updated")
            if not git.is_repository(extension.path):
                raise ValueError(f"{name} is not a git checkout, so it cannot be updated from here.")
            git.pull(extension.path)
            self._updates[name] = False
            if extension.enabled:  # a disabled one gets its install step when it is switched on (launch.py)
                try:
                    install_if_changed(extension, self.state, self.python, self.repo_root)
                except (ValueError, OSError) as exc:
                    raise ValueError(f"{name} was updated to its new commits, but its install step failed (launch.py tries it "
                                     f"again at the next start): {exc}") from None
            log.info("Updated extension %s", name)
            return self.find(name)

    def uninstall(self, name: str) -> None:
        """Delete a user extension's folder (built-in ones cannot be removed; disable them)."""
        self._require("Uninstalling extensions")
        with self._lock:
            extension = self._user_extension(name, "uninstalled")
            _remove_tree(extension.path)
            self.state.forget(name)
            self._updates.pop(name, None)
            log.info("Uninstalled extension %s", name)

    def set_enabled(self, names_enabled: Mapping[str, bool]) -> list[str]:
        """Switch the named extensions on (True) or off (False) in config.json; the others keep
        their state. Returns the new disabled_extensions."""
        self._require("Enabling or disabling extensions")
        known = {e.name for e in self.extensions()}
        unknown = [n for n in names_enabled if n not in known]
        if unknown:
            raise ValueError(f"There is no extension called {', '.join(map(repr, unknown))}.")
        with self._lock:
            disabled = set(self.settings["disabled_extensions"] or [])
            disabled -= {n for n, on in names_enabled.items() if on}
            disabled |= {n for n, on in names_enabled.items() if not on}
            self.settings.update({"disabled_extensions": sorted(disabled)})
            return sorted(disabled)

    def apply(self, enabled: list[str], disable_all: str = "none") -> list[str]:
        """A1111's "Apply": the extensions in `enabled` are on, every other one found is off, and
        `disable_all` is "none", "extra" (user extensions off) or "all". Returns disabled_extensions."""
        self._require("Enabling or disabling extensions")
        if disable_all not in DISABLE_ALL_MODES:
            raise ValueError(f"disable_all must be one of {', '.join(DISABLE_ALL_MODES)}; got {disable_all!r}.")
        with self._lock:
            names = [e.name for e in self.extensions()]
            wanted = set(enabled)
            disabled = sorted(n for n in names if n not in wanted)
            self.settings.update({"disabled_extensions": disabled, "disable_all_extensions": disable_all})
            return disabled

    def install_pending(self) -> dict[str, str | None]:
        """Run the install step of every enabled extension that is new or changed (launch.py's
        step, offered here for a caller that has no launch.py). {name: None or why it failed}."""
        self._require("Running extensions' install.py")
        from modules.extensions.installer import install_pending

        return install_pending(self.extensions(), self.state, self.python, self.repo_root)

    # -- helpers ----------------------------------------------------------------------------

    def _user_extension(self, name: str, verb: str) -> Extension:
        check_name(name)
        extension = self.find(name)
        if extension.builtin:
            raise ValueError(f"{name} is a built-in extension: it cannot be {verb} (it can be disabled).")
        if not extension.path.resolve().is_relative_to(Path(self.dirs.user).resolve()):
            raise ValueError(f"{name} is not inside the extensions folder.")
        return extension

    def _remove_stale_clones(self) -> None:
        """Temporary clones left by a server killed during an install (a running install's is newer)."""
        now = time.time()
        for folder in Path(self.dirs.user).glob(TEMP_PREFIX + "*"):
            try:
                if folder.is_dir() and now - folder.stat().st_mtime > STALE_SECONDS:
                    _remove_tree(folder)
            except OSError as exc:
                log.warning("Could not remove the unfinished install %s: %s", folder, exc)

    def _record(self, extension: Extension) -> None:
        """A fresh install's step has just run: launch.py need not run it again."""
        from modules.extensions.installer import fingerprint

        try:
            self.state.record(extension.name, fingerprint(extension))
        except (OSError, ValueError) as exc:
            log.warning("Could not record the install of %s (%s): launch.py will run its install step again.", extension.name, exc)


class _NoState:
    """A stand-in InstallState for the temporary clone (recorded under its real name after the move)."""

    def load(self) -> dict[str, str]:
        return {}

    def record(self, name: str, print_: str) -> None:
        pass
