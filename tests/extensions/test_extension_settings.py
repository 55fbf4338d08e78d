"""GET /sdapi/v1/extensions in A1111's shape, and the extension switches in config.json: read
and written through /sdapi/v1/options (refused on a shared server), never drawn in the Settings tab."""

from __future__ import annotations

import json

from modules.settings import SettingsStore
from tests.extensions.gitrepos import git, make_repo
from tests.servers import in_process_api


def test_extensions_route_and_switches_through_options(tmp_path):
    repo, _ = make_repo(tmp_path / "extensions", "hello", {"scripts/nothing.txt": "not a script\n"})
    head = git(repo, "rev-parse", "HEAD").strip()
    with in_process_api(tmp_path, "--api", "--nowebui") as client:
        listed = client.get("/sdapi/v1/extensions").json()
        hello = next(e for e in listed if e["name"] == "hello")
        assert hello == {"name": "hello", "remote": None, "branch": "main", "commit_hash": head, "commit_date": hello["commit_date"],
                         "version": head[:8], "enabled": True}
        assert isinstance(hello["commit_date"], int) and hello["commit_date"] > 1_600_000_000
        assert all(set(e) == set(hello) for e in listed)

        options = client.get("/sdapi/v1/options").json()
        assert options["disabled_extensions"] == [] and options["disable_all_extensions"] == "none"
        assert options["extensions_index_url"].endswith("/index.json")
        r = client.post("/sdapi/v1/options", json={"disabled_extensions": ["hello", "gone-since"], "disable_all_extensions": "extra"})
        assert r.status_code == 200, r.text
        assert next(e for e in client.get("/sdapi/v1/extensions").json() if e["name"] == "hello")["enabled"] is False
        saved = json.loads((tmp_path / "config.json").read_text())
        assert saved["disabled_extensions"] == ["hello", "gone-since"] and saved["disable_all_extensions"] == "extra"
        for bad in ({"disable_all_extensions": "some"}, {"disabled_extensions": "hello"}, {"disabled_extensions": [1]}):
            r = client.post("/sdapi/v1/options", json=bad)
            assert r.status_code == 400 and "disable" in r.json()["detail"], r.text
    assert SettingsStore.open(tmp_path / "config.json")["disabled_extensions"] == ["hello", "gone-since"]

    with in_process_api(tmp_path, "--api", "--nowebui", "--listen") as client:
        r = client.post("/sdapi/v1/options", json={"disabled_extensions": []})
        assert r.status_code == 403 and "--listen" in r.json()["detail"] and "--enable-insecure-extension-access" in r.json()["detail"]
        assert client.post("/sdapi/v1/options", json={"disabled_extensions": ["hello", "gone-since"]}).status_code == 200  # unchanged: fine
    assert json.loads((tmp_path / "config.json").read_text())["disabled_extensions"] == ["hello", "gone-since"]


def test_the_settings_tab_draws_no_control_for_hidden_settings(tmp_path):
    import gradio as gr

    from modules.ui.settings import build_settings_tab

    class Models:
        current = None

        def titles(self):
            return []

    settings = SettingsStore.open(tmp_path / "config.json")
    with gr.Blocks():
        with gr.Tab("Settings") as tab:
            built = build_settings_tab(settings, Models(), None, None, lambda: [], lambda: [], tab)
    assert "samples_format" in built.components
    assert not {"disabled_extensions", "disable_all_extensions", "extensions_index_url"} & set(built.components)


def test_webui_extensions_index_replaces_the_default_index_url(tmp_path):
    import os
    import subprocess
    import sys

    from modules.options import REPO_DIR

    code = "import modules.settings as s; print(s.SettingsStore.open(__import__('pathlib').Path(r'%s'))['extensions_index_url'])" % (tmp_path / "c.json")
    env = {**os.environ, "WEBUI_EXTENSIONS_INDEX": "file:///mirror/index.json"}
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_DIR, env=env, capture_output=True, text=True).stdout.strip() == "file:///mirror/index.json"
    env.pop("WEBUI_EXTENSIONS_INDEX")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_DIR, env=env, capture_output=True, text=True).stdout.strip() == (
        "https://raw.githubusercontent.com/AUTOMATIC1111/stable-diffusion-webui-extensions/master/index.json")


def test_opening_the_settings_tab_refreshes_only_controls_the_store_changed(tmp_path):
    """Opening the tab re-reads the store (the API may have changed it), but a control the page
    already shows at the stored value gets no new value: an edit typed while that round trip is
    under way must survive (CI once lost one to this race)."""
    import gradio as gr

    from modules.ui.settings import build_settings_tab

    class Models:
        current = None

        def titles(self):
            return []

    settings = SettingsStore.open(tmp_path / "config.json")
    with gr.Blocks() as page:
        with gr.Tab("Settings") as tab:
            built = build_settings_tab(settings, Models(), None, None, lambda: [], lambda: [], tab)
    keys = list(built.components)
    refresh = next(f for f in page.fns.values() if f.fn is not None and f.fn.__qualname__ == "build_settings_tab.<locals>.<lambda>")
    shown = [settings[k] if k != "sd_model_checkpoint" else None for k in keys]
    shown[keys.index("samples_format")] = "jpg"  # the page is stale here: the store says png
    updates = dict(zip(keys, refresh.fn(*shown)[1:]))
    assert updates["samples_format"] == gr.update(value="png")
    assert updates["jpeg_quality"] == gr.update() and updates["samples_filename_pattern"] == gr.update()
    assert "value" not in updates["sd_vae"] and "choices" in updates["sd_vae"]
