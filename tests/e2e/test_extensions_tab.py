"""The Extensions tab in Chromium: install from a local git repository (file://), see it listed
with its version, update it after a new commit, disable it with Apply (restart recorded),
install from a file:// index, uninstall; on a shared server every action shows the refusal.
The tab runs alone in a small gradio app over a temporary data folder, with the real manager."""

from __future__ import annotations

import html
import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import pytest

from modules.extensions.layout import ExtensionDirs
from modules.network import ServerAccess
from modules.settings import SettingsStore
from modules.ui.extensions import available_html, build_extensions_tab, installed_html
from tests.extensions.gitrepos import commit, git, make_repo
from tests.servers import free_port

# Screenshots to look at, only when asked for: EXTENSIONS_SCREENSHOTS=<folder>.
SCREENSHOTS = Path(os.environ["EXTENSIONS_SCREENSHOTS"]) if os.environ.get("EXTENSIONS_SCREENSHOTS") else None


def screenshot(page, name: str) -> None:
    if SCREENSHOTS is not None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
TRACEBACK = 'Traceback (most recent call last):\n  File "scripts/bad.py", line 1, in <module>\nImportError: no module named <nope>'


def test_installed_table_escapes_marks_builtin_and_shows_load_errors():
    rows = [{"name": "shipped", "builtin": True, "enabled": True, "description": "Comes with <the> app."},
            {"name": "mine", "builtin": False, "enabled": False, "remote": "https://example.com/<x>.git", "branch": "main",
             "commit": "0123456789abcdef", "version": "01234567", "date": "2026-12-06 14:00", "update": True}]
    text = installed_html(rows, {}, {"mine": TRACEBACK, "gone": "Traceback\nValueError: boom"})
    assert "Comes with &lt;the&gt; app." in text
    assert "built-in" in text and "data-action='uninstall' data-name='shipped'" not in text
    assert "<input type='checkbox' data-name='mine'>" in text  # unticked: disabled
    assert "&lt;x&gt;" in text and "<x>" not in text
    assert "data-action='update' data-name='mine'" in text and "01234567" in text
    assert html.escape(TRACEBACK) in text and "gone failed to load and is off: ValueError: boom" in text


def test_available_table_marks_installed_and_hides_by_tag():
    entries = [{"name": "Hello", "url": "https://example.com/a/sd-hello.git", "description": "Says <b>hi</b> &amp; <script>alert(1)</script>",
                "tags": ["script"]},
               {"name": "Ads", "url": "https://example.com/a/ads", "description": "", "tags": ["ads"]}]
    text = available_html(entries, [{"name": "sd-hello", "remote": "https://example.com/a/sd-hello"}], hide_tags=["ads"])
    assert "Says hi &amp; alert(1)" in text and "<script" not in text and ">installed<" in text and "data-url='https://example.com/a/ads'" not in text
    assert "Hidden by the tag and search filters: 1." in text


@contextmanager
def served(manager, restart, errors: dict | None = None):
    """The tab alone (after a first tab, as on the page), served by gradio on a free port;
    yields (its address, the Blocks, the port)."""
    with gr.Blocks() as blocks:
        with gr.Tabs():
            with gr.Tab("txt2img"):
                gr.Markdown("another tab")
            with gr.Tab("Extensions", id="extensions") as tab:
                build_extensions_tab(manager, restart=restart, errors=lambda: errors or {}, tab=tab)
    port = free_port()
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", blocks, port
    finally:
        blocks.close()




@pytest.fixture
def setup(tmp_path):
    from modules.extensions.manage import ExtensionManager

    data, builtin = tmp_path / "data", tmp_path / "builtin"
    (builtin / "shipped" / "scripts").mkdir(parents=True)
    settings = SettingsStore.open(data / "config.json")
    repo, url = make_repo(tmp_path / "remote", "sd-webui-hello", {"scripts/hello.py": "X = 1\n"})
    _, other = make_repo(tmp_path / "remote", "sd-webui-other", {"scripts/other.py": "Y = 1\n"})
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"tags": {"script": "Scripts"}, "extensions": [
        {"name": "Other <ext>", "url": other, "description": "An extension from the index.", "tags": ["script"], "added": "2026-12-01"},
    ]}))
    settings.update({"extensions_index_url": index.as_uri()})
    return {"dirs": ExtensionDirs(builtin, data / "extensions"), "settings": settings, "repo": repo, "url": url, "data": data,
            "manager": ExtensionManager}


def open_tab(page, url: str):
    page.goto(url)
    page.get_by_role("tab", name="Extensions").click()
    page.wait_for_selector("#extensions_installed_html table", timeout=30000)


def message(page, selector: str, contains: str) -> str:
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)", arg=[selector, contains], timeout=60000)
    return page.inner_text(selector)


def test_install_update_disable_index_and_uninstall_in_chromium(browser, setup):
    s = setup
    manager = s["manager"](s["dirs"], s["settings"], python=sys.executable)
    restarts: list = []
    target = s["data"] / "extensions" / "sd-webui-hello"
    with served(manager, lambda: restarts.append("restart"), errors={"broken-one": TRACEBACK}) as (url, _, _):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("dialog", lambda dialog: dialog.accept())  # Uninstall asks first
        open_tab(page, url)
        assert not page.locator("#extensions_shared_notice").is_visible()
        # a failed import shows with its traceback, folded
        error = page.locator("#extensions_installed_html tr[data-error='broken-one']")
        assert "broken-one failed to load and is off: ImportError: no module named <nope>" in error.inner_text()
        error.locator("summary").click()
        assert 'File "scripts/bad.py", line 1' in error.locator("pre").inner_text()

        # Install from URL: a name that would escape extensions/ is refused with the reason, then the real install
        page.get_by_role("tab", name="Install from URL").click()
        page.fill("#extensions_install_url textarea", s["url"])
        page.fill("#extensions_install_dirname textarea", "../escape")
        page.click("#extensions_install_button")
        assert "not a usable extension folder name" in message(page, "#extensions_install_result", "folder name")
        page.fill("#extensions_install_dirname textarea", "")
        page.click("#extensions_install_button")
        assert "Installed sd-webui-hello" in message(page, "#extensions_install_result", "Installed")
        assert (target / "scripts" / "hello.py").read_text() == "X = 1\n"

        page.get_by_role("tab", name="Installed").click()
        row = page.locator("#extensions_installed_html tr[data-name='sd-webui-hello']")
        head = git(s["repo"], "rev-parse", "HEAD").strip()
        assert head[:8] in row.inner_text() and s["url"] in row.inner_text() and "main" in row.inner_text()
        assert page.locator("#extensions_installed_html input[data-name='sd-webui-hello']").is_checked()
        assert "built-in" in page.locator("#extensions_installed_html tr[data-name='shipped']").inner_text()

        # a new commit upstream: Check for updates offers Update, which pulls it
        new_head = commit(s["repo"], {"scripts/hello.py": "X = 2\n"}, "second")
        page.click("#extensions_check")
        assert "Updates available: sd-webui-hello." in message(page, "#extensions_installed_status", "Updates available")
        row.locator("button[data-action='update']").click()
        assert "sd-webui-hello" in message(page, "#extensions_installed_status", "Updated")
        assert (target / "scripts" / "hello.py").read_text() == "X = 2\n"
        page.wait_for_function("(h) => document.querySelector(\"#extensions_installed_html tr[data-name='sd-webui-hello']\")"
                               ".innerText.includes(h)", arg=new_head[:8], timeout=30000)

        # untick it and Apply: saved in config.json, then the restart is asked for
        page.locator("#extensions_installed_html input[data-name='sd-webui-hello']").uncheck()
        page.click("#extensions_apply")
        message(page, "#extensions_installed_status", "Restarting")
        saved = json.loads((s["data"] / "config.json").read_text())
        assert saved["disabled_extensions"] == ["sd-webui-hello"]
        deadline = time.monotonic() + 30
        while not restarts and time.monotonic() < deadline:  # asked for by the event that follows Apply's answer
            time.sleep(0.1)
        assert restarts == ["restart"]
        assert page.locator("#extensions_installed_html input[data-name='shipped']").is_checked()
        assert page.locator("#extensions_installed_status [data-restarting]").count() == 1  # the page reloads once the server is back
        screenshot(page, "extensions_tab.png")
        open_tab(page, url)  # a fresh page, as after the restart
        assert not page.locator("#extensions_installed_html input[data-name='sd-webui-hello']").is_checked()

        # Available: the file:// index, with Install for the one not installed yet
        page.get_by_role("tab", name="Available").click()
        page.click("#extensions_available_load")
        message(page, "#extensions_available_status", "1 extensions in the index")
        entry = page.locator("#extensions_available_html tr", has_text="Other <ext>")
        assert "An extension from the index." in entry.inner_text()
        screenshot(page, "extensions_available.png")
        entry.locator("button").click()
        assert "Installed sd-webui-other" in message(page, "#extensions_available_status", "Installed")
        assert (s["data"] / "extensions" / "sd-webui-other" / "scripts" / "other.py").exists()
        page.uncheck("#extensions_hide_tags input[name='installed']")
        page.wait_for_function("document.querySelector('#extensions_available_html').innerText.includes('installed')", timeout=30000)

        # an index that cannot be read: the reason, no traceback
        page.fill("#extensions_available_index textarea", f"http://127.0.0.1:{free_port()}/index.json")
        page.click("#extensions_available_load")
        page.wait_for_selector("#extensions_available_status .extensions-message-error", timeout=60000)
        assert "Traceback" not in page.inner_text("#extensions_available_status")

        # Uninstall (confirmed in the dialog): the folder is gone and so is its row
        page.get_by_role("tab", name="Installed").click()
        page.locator("#extensions_installed_html tr[data-name='sd-webui-hello'] button[data-action='uninstall']").click()
        message(page, "#extensions_installed_status", "Uninstalled sd-webui-hello")
        assert not target.exists()
        assert page.locator("#extensions_installed_html tr[data-name='sd-webui-hello']").count() == 0
        page.close()


def test_a_shared_server_says_so_and_refuses_every_action(browser, setup, tmp_path):
    s = setup
    access = ServerAccess(s["data"].resolve(), ("--listen",))
    manager = s["manager"](s["dirs"], s["settings"], access)
    restarts: list = []
    with served(manager, lambda: restarts.append("restart")) as (url, _, _):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_tab(page, url)
        notice = page.inner_text("#extensions_shared_notice")
        screenshot(page, "extensions_shared.png")
        assert "Extensions cannot be changed here." in notice and "--listen" in notice and "--enable-insecure-extension-access" in notice
        page.locator("#extensions_installed_html input[data-name='shipped']").uncheck()
        page.click("#extensions_apply")
        assert "--enable-insecure-extension-access" in message(page, "#extensions_installed_status", "turned off")
        assert restarts == [] and json.loads((s["data"] / "config.json").read_text()).get("disabled_extensions", []) == []
        open_tab(page, url)  # a fresh page: the next message is Check's own
        page.click("#extensions_check")
        assert "--listen" in message(page, "#extensions_installed_status", "turned off")
        page.get_by_role("tab", name="Install from URL").click()
        page.fill("#extensions_install_url textarea", s["url"])
        page.click("#extensions_install_button")
        assert "--listen" in message(page, "#extensions_install_result", "turned off")
        assert not (s["data"] / "extensions" / "sd-webui-hello").exists()
        # the configured index loads (to look at); another address would have the server fetch it, so it is refused
        page.get_by_role("tab", name="Available").click()
        page.click("#extensions_available_load")
        message(page, "#extensions_available_status", "1 extensions in the index")
        page.fill("#extensions_available_index textarea", (s["data"] / "config.json").as_uri())
        page.click("#extensions_available_load")
        refused = message(page, "#extensions_available_status", "turned off")
        assert "Loading an index from another address is turned off" in refused and "The configured index is file://" in refused
        page.close()


def test_apply_reloads_the_page_once_the_restarted_server_answers(browser, setup):
    """The restart stops the server and starts it again a little later (as launch.py does);
    the page notices it went away and came back, and reloads itself."""
    s = setup
    manager = s["manager"](s["dirs"], s["settings"], python=sys.executable)
    held: dict = {}

    def bounce():
        blocks, port = held["blocks"], held["port"]
        blocks.close()
        time.sleep(2)
        blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)

    def restart():
        threading.Thread(target=bounce, daemon=True).start()

    with served(manager, restart) as (url, blocks, port):
        held.update(blocks=blocks, port=port)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_tab(page, url)
        page.evaluate("window.beforeRestart = true")
        with page.expect_navigation(timeout=30000):
            page.click("#extensions_apply")
        page.wait_for_selector("#tabs_extensions, button[role='tab']", timeout=30000)
        assert page.evaluate("window.beforeRestart === undefined")  # a new page, not the old one
        page.close()


@pytest.mark.parametrize("flags, shared", [([], False), (["--listen"], True)])
def test_the_page_has_the_tab_after_settings_and_says_when_the_server_is_shared(tmp_path, flags, shared):
    from tests.servers import in_process_app

    with in_process_app(tmp_path / "data", *flags) as (_, client):
        components = client.get("/config").json()["components"]
    tabs = [c["props"].get("id") for c in components if c.get("type") == "tabitem"]
    assert tabs.index("settings") < tabs.index("extensions")
    notice = next(c["props"] for c in components if c["props"].get("elem_id") == "extensions_shared_notice")
    assert notice["visible"] is shared
    assert ("--listen" in notice["value"] and "--enable-insecure-extension-access" in notice["value"]) if shared else not notice["value"]
