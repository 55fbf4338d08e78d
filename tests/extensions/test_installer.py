"""launch.py's install step: install.py and requirements.txt of enabled extensions that are new
or changed, each failure reported with the extension's name and last lines, the others going on."""

from __future__ import annotations

import json

import pytest

from modules.extensions.installer import InstallState, install_pending, install_step
from modules.extensions.layout import ExtensionDirs, discover
from tests.extensions.gitrepos import commit, make_repo

COUNTING = "import pathlib\np = pathlib.Path('runs.txt')\np.write_text(str(int(p.read_text()) + 1 if p.exists() else 1))\n"


@pytest.fixture
def dirs(tmp_path):
    dirs = ExtensionDirs(tmp_path / "builtin", tmp_path / "data" / "extensions")
    (dirs.builtin / "shipped").mkdir(parents=True)
    (dirs.builtin / "shipped" / "install.py").write_text(COUNTING)
    dirs.user.mkdir(parents=True)
    return dirs


def runs(folder) -> str:
    path = folder / "runs.txt"
    return path.read_text() if path.exists() else "0"


def test_only_new_or_changed_enabled_extensions_run_and_a_failure_does_not_stop_the_others(dirs):
    user = dirs.user
    repo, _ = make_repo(user, "git-ext", {"install.py": COUNTING})
    (user / "plain").mkdir()
    (user / "plain" / "install.py").write_text(COUNTING)
    (user / "broken").mkdir()
    (user / "broken" / "install.py").write_text("print('compiling...')\nraise RuntimeError('no compiler found')\n")
    (user / "off").mkdir()
    (user / "off" / "install.py").write_text(COUNTING)
    (user / "nothing").mkdir()
    state = InstallState.for_dirs(dirs)

    results = install_pending(discover(dirs, disabled={"off"}), state)
    assert set(results) == {"shipped", "git-ext", "plain", "broken"}
    assert results["shipped"] is results["git-ext"] is results["plain"] is None
    assert results["broken"].startswith("broken: install.py failed (exit code 1). Last lines:")
    assert "compiling..." in results["broken"] and "RuntimeError: no compiler found" in results["broken"]
    assert [runs(dirs.builtin / "shipped"), runs(repo), runs(user / "plain"), runs(user / "off")] == ["1", "1", "1", "0"]
    recorded = json.loads((user / ".installed.json").read_text())
    assert set(recorded) == {"shipped", "git-ext", "plain"}  # the failed one is tried again next time

    # next start: nothing changed but the broken one, which runs (and fails) again
    assert set(install_pending(discover(dirs, disabled={"off"}), state)) == {"broken"}
    # a new commit, an edited install.py, a newly enabled extension: each runs once more
    commit(repo, {"README.md": "new"}, "docs")
    (user / "plain" / "install.py").write_text(COUNTING + "# changed\n")
    (user / "broken" / "install.py").write_text("")
    assert install_pending(discover(dirs), state) == {"git-ext": None, "plain": None, "broken": None, "off": None}
    assert [runs(repo), runs(user / "plain"), runs(user / "off"), runs(dirs.builtin / "shipped")] == ["2", "2", "1", "1"]


def test_requirements_are_checked_then_pip_runs_only_for_what_is_missing(dirs, monkeypatch):
    folder = dirs.user / "reqs"
    folder.mkdir()
    (folder / "requirements.txt").write_text("packaging\n")  # installed: pip is not run at all
    (folder / "install.py").write_text(COUNTING)
    extension = discover(dirs)[1]
    assert install_step(extension) == ""
    assert runs(folder) == "1"

    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip must not reach any index in a test
    (folder / "requirements.txt").write_text("packaging\nsurely-not-a-real-package-xyz==1.0\n")
    with pytest.raises(ValueError, match=r"(?s)reqs: pip install -r requirements.txt failed \(exit code 1\).*surely-not-a-real-package-xyz"):
        install_step(extension)
    assert runs(folder) == "1"  # install.py waits for its requirements

    (folder / "requirements.txt").write_text("torchvision==0.1.0\n")
    with pytest.raises(ValueError, match=r"reqs: its requirements.txt is refused: requirements.txt line 1 .*would replace torchvision"):
        install_step(extension)


def test_install_py_gets_a_timeout(dirs, monkeypatch):
    folder = dirs.user / "slow"
    folder.mkdir()
    (folder / "install.py").write_text("import time\nprint('waiting', flush=True)\ntime.sleep(30)\n")
    with pytest.raises(ValueError, match=r"(?s)slow: install.py took longer than 1 s and was stopped"):
        install_step(discover(dirs)[1], timeout=1)
