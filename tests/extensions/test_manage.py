"""Installing, updating, switching and removing extensions from local git repositories
(file:// URLs) into a temporary data folder, as the Extensions tab does it."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from modules.extensions.layout import ExtensionDirs
from modules.extensions.manage import ExtensionManager
from modules.network import AccessRefused, ServerAccess
from modules.options import REPO_DIR, parse_args
from modules.settings import SettingsStore
from tests.extensions.gitrepos import commit, git, make_repo

# install.py counts its runs in a file beside it and records where it ran and what PYTHONPATH was.
INSTALL_PY = """import json, os, pathlib
here = pathlib.Path.cwd()
runs = here / "runs.txt"
runs.write_text(str(int(runs.read_text()) + 1 if runs.exists() else 1))
(here / "ran.json").write_text(json.dumps({"cwd": str(here), "pythonpath": os.environ.get("PYTHONPATH", "")}))
print("hello from install.py")
"""


@pytest.fixture
def setup(tmp_path):
    data = tmp_path / "data"
    builtin = tmp_path / "builtin"
    (builtin / "shipped" / "scripts").mkdir(parents=True)
    dirs = ExtensionDirs(builtin, data / "extensions")
    settings = SettingsStore.open(data / "config.json")
    repo, url = make_repo(tmp_path / "remote", "sd-webui-hello", {"scripts/hello.py": "X = 1\n", "install.py": INSTALL_PY})
    return ExtensionManager(dirs, settings, python=sys.executable), repo, url, data


def leftovers(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "extensions").iterdir() if p.name.startswith(".installing"))


def test_install_from_file_url_runs_install_py_and_reports_version(setup):
    manager, repo, url, data = setup
    extension = manager.install(url)
    target = data / "extensions" / "sd-webui-hello"
    assert extension.name == "sd-webui-hello" and extension.path == target and not extension.builtin and extension.enabled
    assert (target / "scripts" / "hello.py").read_text() == "X = 1\n"
    ran = json.loads((target / "ran.json").read_text())
    assert ran["pythonpath"].split(":")[0] == str(REPO_DIR)
    assert Path(ran["cwd"]).parent == data / "extensions"  # the temporary clone beside the others, renamed since
    assert leftovers(data) == []
    head = git(repo, "rev-parse", "HEAD").strip()
    row = next(r for r in manager.api_list() if r["name"] == "sd-webui-hello")
    assert row["remote"] == url and row["branch"] == "main" and row["commit_hash"] == head and row["version"] == head[:8]
    assert isinstance(row["commit_date"], int) and row["enabled"] is True
    shipped = next(r for r in manager.api_list() if r["name"] == "shipped")
    assert shipped == {"name": "shipped", "remote": None, "branch": None, "commit_hash": None, "commit_date": None, "version": "",
                       "enabled": True}
    assert [r["name"] for r in manager.installed()] == ["shipped", "sd-webui-hello"]
    # launch.py's step knows it ran already: nothing pending
    assert manager.install_pending() == {}
    assert (target / "runs.txt").read_text() == "1"


def test_install_refuses_duplicates_and_bad_input_leaving_nothing(setup, tmp_path):
    manager, repo, url, data = setup
    stale, recent = data / "extensions" / ".installing-old-1234", data / "extensions" / ".installing-new-5678"
    stale.mkdir(parents=True)
    recent.mkdir()
    os.utime(stale, (time.time() - 7 * 3600,) * 2)  # left by a server killed mid-install
    manager.install(url)
    assert not stale.exists() and recent.exists()  # a recent one may be another install under way
    recent.rmdir()
    with pytest.raises(ValueError, match="already exists"):
        manager.install(url)
    with pytest.raises(ValueError, match="already installed as sd-webui-hello"):
        manager.install(url + ".git/", name="other")
    not_repo = tmp_path / "plain"
    not_repo.mkdir()
    with pytest.raises(ValueError, match=r"Cloning .*plain failed: fatal: .*plain. does not appear to be a git repository"):
        manager.install(not_repo.as_uri())
    with pytest.raises(ValueError, match="not an https:// or file:// URL"):
        manager.install("http://example.com/a/b.git")
    with pytest.raises(ValueError, match="starts with '-'"):
        manager.install("--upload-pack=touch%20/tmp/pwned")
    with pytest.raises(ValueError, match="not an https:// or file:// URL"):
        manager.install("ext::sh%20-c%20touch")
    with pytest.raises(ValueError, match="is not a branch name"):
        manager.install(url, branch="--upload-pack=touch")
    with pytest.raises(ValueError, match="user name or password"):
        manager.install("https://me:secret@example.com/a/b.git")
    with pytest.raises(ValueError, match="not a usable extension folder name"):
        manager.install(url, name="../escape")
    with pytest.raises(ValueError, match="built-in extension"):
        manager.install(url, name="shipped")
    _, other = make_repo(tmp_path / "remote", "other", {"scripts/other.py": ""})
    with pytest.raises(ValueError, match="Remote branch nope not found"):
        manager.install(other, branch="nope")
    assert leftovers(data) == [] and sorted(p.name for p in (data / "extensions").iterdir() if p.is_dir()) == ["sd-webui-hello"]


def test_a_failing_install_py_or_a_torch_requirement_leaves_nothing(setup, tmp_path):
    manager, _, _, data = setup
    _, failing = make_repo(tmp_path / "remote", "broken", {"install.py": "print('step one')\nraise SystemExit('cannot build the thing')\n"})
    with pytest.raises(ValueError, match=r"(?s)broken: install.py failed \(exit code 1\).*step one.*cannot build the thing"):
        manager.install(failing)
    _, torchy = make_repo(tmp_path / "remote", "torchy", {"requirements.txt": "numpy\ntorch==1.13.1\n"})
    with pytest.raises(ValueError, match=r"torchy: its requirements.txt is refused: requirements.txt line 2 \('torch==1.13.1'\) "
                                         r"would replace torch 2\.14\.1.* asks for torch==1\.13\.1"):
        manager.install(torchy)
    assert not (data / "extensions" / "broken").exists() and not (data / "extensions" / "torchy").exists()
    assert leftovers(data) == []


def test_update_after_a_new_commit_then_disable_and_uninstall(setup):
    manager, repo, url, data = setup
    manager.install(url)
    target = data / "extensions" / "sd-webui-hello"
    assert manager.check_updates() == {"sd-webui-hello": False}
    new_head = commit(repo, {"scripts/hello.py": "X = 2\n"}, "second")
    assert manager.check_updates() == {"sd-webui-hello": True}
    assert next(r for r in manager.installed() if r["name"] == "sd-webui-hello")["update"] is True
    manager.update("sd-webui-hello")
    assert (target / "scripts" / "hello.py").read_text() == "X = 2\n"
    assert (target / "runs.txt").read_text() == "2"  # a new commit: its install step ran again
    assert next(r for r in manager.api_list() if r["name"] == "sd-webui-hello")["commit_hash"] == new_head
    assert manager.check_updates() == {"sd-webui-hello": False}

    (target / "scripts" / "hello.py").write_text("X = 'mine'\n")  # a local edit in the way of the next update
    commit(repo, {"scripts/hello.py": "X = 3\n"}, "third")
    with pytest.raises(ValueError, match="changed locally"):
        manager.update("sd-webui-hello")
    with pytest.raises(ValueError, match="built-in extension: it cannot be updated"):
        manager.update("shipped")

    assert manager.set_enabled({"sd-webui-hello": False}) == ["sd-webui-hello"]
    assert json.loads((data / "config.json").read_text())["disabled_extensions"] == ["sd-webui-hello"]
    assert {r["name"]: r["enabled"] for r in manager.installed()} == {"shipped": True, "sd-webui-hello": False}
    manager.apply(["sd-webui-hello"], "extra")
    saved = json.loads((data / "config.json").read_text())
    assert saved["disabled_extensions"] == ["shipped"] and saved["disable_all_extensions"] == "extra"
    assert {r["name"]: r["enabled"] for r in manager.installed()} == {"shipped": False, "sd-webui-hello": False}
    with pytest.raises(ValueError, match="disable_all must be one of"):
        manager.apply([], "some")

    with pytest.raises(ValueError, match="built-in extension: it cannot be uninstalled"):
        manager.uninstall("shipped")
    manager.uninstall("sd-webui-hello")
    assert not target.exists() and [r["name"] for r in manager.installed()] == ["shipped"]
    assert "sd-webui-hello" not in json.loads((data / "extensions" / ".installed.json").read_text())


@pytest.mark.parametrize("flags, named", [
    (["--listen"], "--listen"), (["--share"], "--share"), (["--server-name", "0.0.0.0"], "--server-name"),
    (["--gradio-auth", "a:b"], "--gradio-auth"), (["--api-auth", "a:b"], "--api-auth"),
])
def test_every_change_is_refused_on_a_shared_server(setup, flags, named):
    manager, _, url, data = setup
    access = ServerAccess.from_args(parse_args(flags), data)
    shared = ExtensionManager(manager.dirs, manager.settings, access)
    for call in (lambda: shared.install(url), lambda: shared.check_updates(), lambda: shared.update("x"), lambda: shared.uninstall("x"),
                 lambda: shared.set_enabled({"shipped": False}), lambda: shared.apply([], "all"), lambda: shared.install_pending()):
        with pytest.raises(AccessRefused, match=f"{named}.*--enable-insecure-extension-access"):
            call()
    # the settings route writes the same keys: refused the same way
    manager.settings.add_guard(access.check_setting)
    with pytest.raises(AccessRefused, match="Changing disabled_extensions is turned off"):
        manager.settings.update({"disabled_extensions": ["shipped"]})
    assert not (data / "extensions").exists() or leftovers(data) == []
    assert not (data / "extensions" / "sd-webui-hello").exists()


def test_the_owner_can_allow_changes_on_a_shared_server(setup):
    manager, _, url, data = setup
    access = ServerAccess.from_args(parse_args(["--listen", "--gradio-auth", "a:b", "--enable-insecure-extension-access"]), data)
    allowed = ExtensionManager(manager.dirs, manager.settings, access)
    assert allowed.refusal() is None
    assert allowed.install(url).name == "sd-webui-hello"
    assert ExtensionManager(manager.dirs, manager.settings, auth_on=True).refusal("Installing extensions").startswith(
        "Installing extensions is turned off: this server is used by other people")
