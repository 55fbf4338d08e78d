"""The Extensions tab (A1111's, after Settings): Installed / Available / Install from URL.

Everything that changes the server (install, update, uninstall, enable/disable) goes through
the app's extension manager (modules/extensions/manage.py), which refuses with a sentence when
the server is shared; the tab shows that sentence instead of acting. The tables are plain HTML
built here (every value escaped); their row buttons reach Python through gr.HTML's custom
events, and "Apply" reads the checkboxes from the page, as A1111's does.
"""

from __future__ import annotations

import html
import json
import logging
import re
from datetime import datetime
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from modules.extensions.layout import DISABLE_ALL_MODES
from modules.extensions.manage import name_from_url, normalize_url

if TYPE_CHECKING:
    from modules.extensions.manage import ExtensionManager

log = logging.getLogger(__name__)

HIDE_TAG_DEFAULT = ("ads", "localization", "installed")

# Scoped to each gr.HTML by gradio (css_template), so the page's CSS needs nothing for this tab.
TABLE_CSS = """
table { width: 100%; border-collapse: collapse; border: none !important; }  /* gradio's prose tables are boxed */
tr { border: none; }
th, td { padding: 0.3em 0.6em; text-align: left; vertical-align: top; border: none; border-bottom: 1px solid var(--border-color-primary); }
th { font-weight: 600; }
button { padding: 0.1em 0.7em; border-radius: 0.4em; font-size: 0.9em; font-weight: normal; border: 1px solid var(--button-secondary-border-color);
  background: var(--button-secondary-background-fill); color: var(--button-secondary-text-color); cursor: pointer; }
button:disabled { opacity: 0.5; cursor: default; }
.extensions-builtin-mark { font-size: 0.8em; opacity: 0.7; margin-left: 0.4em; }
.extensions-version { font-family: monospace; }
.extensions-date { font-size: 0.85em; opacity: 0.75; }
.extensions-tag { display: inline-block; font-size: 0.75em; padding: 0 0.4em; margin: 0.1em; border-radius: 0.4em;
  background: var(--neutral-200); color: var(--neutral-800); }
.extensions-error summary, .extensions-message-error { color: var(--error-text-color); cursor: pointer; }
.extensions-error pre { white-space: pre-wrap; font-size: 0.8em; max-height: 24em; overflow: auto; }
.extensions-new { color: var(--color-accent); font-weight: 600; }
"""
MESSAGE_CSS = ".extensions-message-error { color: var(--error-text-color); }"
NOTICE_CSS = "border-left: 4px solid #d97706; padding: 0.2em 0.8em;"

# Row buttons: one delegated listener on the table; uninstall asks first (the folder is deleted).
INSTALLED_JS = """
element.addEventListener('click', (e) => {
  const button = e.target.closest('button[data-action]');
  if (!button) return;
  const name = button.dataset.name, action = button.dataset.action;
  if (action === 'uninstall' && !confirm('Uninstall ' + name + '? Its folder is deleted.')) return;
  trigger('row_action', {action: action, name: name});
});
"""
AVAILABLE_JS = """
element.addEventListener('click', (e) => {
  const button = e.target.closest('button[data-url]');
  if (!button) return;
  button.disabled = true;
  trigger('install_entry', {url: button.dataset.url, name: button.dataset.name});
});
"""
# Apply: the names whose box is unticked (A1111's extensions_apply); an extension installed
# since this table was drawn is not in it and so stays as it was.
# Before the table is drawn there are no boxes to read: null, and nothing is changed.
COLLECT_UNCHECKED_JS = """
(_unused, mode) => [document.querySelector('#extensions_installed_html table') ? JSON.stringify(Array.from(
  document.querySelectorAll('#extensions_installed_html input[data-name]')).filter((box) => !box.checked).map((box) => box.dataset.name))
  : 'null', mode]
"""

# Runs in the page as the restart is asked for (before the server may go away): wait for the
# server to go away and answer again (or 20 s, for a restart that keeps the port), then reload,
# as A1111's restart_reload does. A refused restart replaces the marked message: polling stops.
RELOAD_WHEN_BACK_JS = """
(pending) => {
  const marked = () => document.querySelector('#extensions_installed_status [data-restarting]');
  if (!marked()) return pending;  // (a gr.State's value stays on the server: the page sees the marker, not `pending`)
  const started = Date.now();
  let wentDown = false;
  const poll = () => {
    if (!wentDown && !marked()) return;
    fetch(location.href, {cache: 'no-store'}).then(
      (r) => { if (r.ok && (wentDown || Date.now() - started > 20000)) location.reload(); else setTimeout(poll, 1000); },
      () => { wentDown = true; setTimeout(poll, 1000); });
  };
  setTimeout(poll, 1000);
  return pending;
}
"""


@dataclass(frozen=True)
class ExtensionsTab:
    installed: gr.HTML
    status: gr.HTML
    apply: gr.Button
    check: gr.Button
    available: gr.HTML
    install_result: gr.HTML


def _get(row: Any, key: str, default: Any = None) -> Any:
    """A field of an installed() row or an index entry, whether a dict or an object."""
    if isinstance(row, Mapping):
        return row.get(key, default)
    return getattr(row, key, default)


def message_html(text: str, error: bool = False, restarting: bool = False) -> str:
    """A status line; `restarting` marks it for the page's reload-when-back script."""
    if not text:
        return ""
    mark = " data-restarting='1'" if restarting else ""
    return f"<p class='extensions-message{'-error' if error else ''}'{mark}>{html.escape(text)}</p>"


def _link(url: str) -> str:
    """A clickable link for web addresses only; a file:// or other URL is shown as text."""
    if not url:
        return ""
    text = html.escape(url)
    if url.startswith(("https://", "http://")):
        return f"<a href='{text}' target='_blank' rel='noopener noreferrer'>{text}</a>"
    return text


def _update_cell(name: str, state: Any, builtin: bool) -> str:
    """The Update column: unknown until checked; new commits come with an Update button."""
    if state is True:
        return (f"<span class='extensions-new'>new commits</span> "
                f"<button data-action='update' data-name='{html.escape(name)}' title='git pull'>Update</button>")
    if state is False:
        return "latest"
    if isinstance(state, str) and state:
        return f"<span class='extensions-message-error'>{html.escape(state)}</span>"
    return "" if builtin and state is None else "unknown"


def installed_html(rows: Iterable[Any], updates: Mapping[str, Any] | None = None, errors: Mapping[str, str] | None = None) -> str:
    """The Installed table: a checkbox per extension (ticked = enabled), where it came from,
    its version, the update state, and the traceback of any that failed to import."""
    updates, errors = updates or {}, dict(errors or {})
    body = []
    for row in rows:
        name = str(_get(row, "name", ""))
        builtin = bool(_get(row, "builtin", False))
        enabled = bool(_get(row, "enabled", True))
        ticked = bool(_get(row, "ticked", enabled))  # not in disabled_extensions (the mode or a flag may still keep it off)
        esc = html.escape(name)
        mark = "<span class='extensions-builtin-mark'>built-in</span>" if builtin else ""
        if ticked and not enabled:
            mark += "<span class='extensions-builtin-mark'>off by the disable-all switch</span>"
        about = str(_get(row, "description", "") or "")  # metadata.ini's Description
        if about:
            mark += f"<div class='extensions-date notranslate'>{html.escape(about)}</div>"  # the extension's words, not the page's
        commit = str(_get(row, "commit", "") or "")
        version = str(_get(row, "version", "") or "") or commit[:8]
        date = _date(_get(row, "date"))
        state = updates.get(name, _get(row, "update"))
        remove = "" if builtin else f"<button data-action='uninstall' data-name='{esc}'>Uninstall</button>"
        body.append(
            f"<tr data-name='{esc}' class='{'extensions-builtin' if builtin else 'extensions-user'}'>"
            f"<td><label><input type='checkbox' data-name='{esc}'{' checked' if ticked else ''}> <span class='notranslate'>{esc}</span></label>{mark}</td>"
            f"<td>{_link(str(_get(row, 'remote', '') or ''))}</td><td>{html.escape(str(_get(row, 'branch', '') or ''))}</td>"
            f"<td class='extensions-version' title='{html.escape(commit)}'>{html.escape(version)}</td>"
            f"<td class='extensions-date'>{html.escape(date)}</td>"
            f"<td class='extensions-update'>{_update_cell(name, state, builtin)}</td><td>{remove}</td></tr>")
        trace = errors.pop(name, None)
        if trace:
            body.append(_error_row(name, trace))
    for name, trace in errors.items():  # failed to import and no longer listed (its folder gone since)
        body.append(_error_row(name, trace))
    if not body:
        return "<p>No extensions installed. Add some from the Available tab or by URL.</p>"
    head = ("<tr><th>Extension</th><th>URL</th><th>Branch</th><th>Version</th><th>Date</th><th>Update</th><th></th></tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _date(value: Any) -> str:
    """A commit date (unix seconds) as A1111 shows it, in the server's time zone."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    return str(value or "")


def _error_row(name: str, trace: str) -> str:
    last = next((line for line in reversed(trace.strip().splitlines()) if line.strip()), "error")
    return (f"<tr class='extensions-error' data-error='{html.escape(name)}'><td colspan='7'><details>"
            f"<summary>{html.escape(name)} failed to load and is off: {html.escape(last)}</summary>"
            f"<pre>{html.escape(trace)}</pre></details></td></tr>")


def available_html(entries: Iterable[Any], installed: Iterable[Any], hide_tags: Iterable[str] = (), search: str = "") -> str:
    """The Available table: name (linked), description, tags, and Install or "installed"."""
    have_urls = {normalize_url(str(_get(r, "remote", "") or "")) for r in installed}
    have_names = {str(_get(r, "name", "")) for r in installed}
    hide, needle = set(hide_tags), (search or "").strip().lower()
    body, hidden = [], 0
    for entry in entries:
        name, url = str(_get(entry, "name", "") or ""), str(_get(entry, "url", "") or "")
        description = _plain(str(_get(entry, "description", "") or ""))
        tags = [str(t) for t in (_get(entry, "tags") or [])]
        have = bool(_get(entry, "installed", False)) or normalize_url(url) in have_urls or name_from_url(url) in have_names
        shown_tags = tags + (["installed"] if have else [])
        if hide & set(shown_tags) or (needle and needle not in f"{name} {description} {' '.join(tags)}".lower()):
            hidden += 1
            continue
        action = ("installed" if have else
                  f"<button data-url='{html.escape(url)}' data-name='{html.escape(name)}'>Install</button>")
        tag_html = "".join(f"<span class='extensions-tag'>{html.escape(t)}</span>" for t in tags)
        added = _get(entry, "added")
        info = f"<div class='extensions-date'>Added: {html.escape(str(added))}</div>" if added else ""
        body.append(f"<tr data-url='{html.escape(url)}'><td>{_named_link(url, name)}<br>{tag_html}</td>"
                    f"<td><span class='notranslate'>{html.escape(description)}</span>{info}</td><td>{action}</td></tr>")
    note = f"<p>Hidden by the tag and search filters: {hidden}.</p>" if hidden else ""
    if not body:
        return "<p>No extensions to show.</p>" + note
    head = "<tr><th>Extension</th><th>Description</th><th>Action</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>{note}"


def _plain(text: str) -> str:
    """A description as text: A1111's index holds HTML (links, <br>); shown escaped, its tags would read as noise."""
    return html.unescape(re.sub(r"<[^>]*>", "", re.sub(r"(?i)<br\s*/?>", " ", text))).strip()


def _named_link(url: str, name: str) -> str:
    if url.startswith(("https://", "http://")):
        return f"<a href='{html.escape(url)}' target='_blank' rel='noopener noreferrer'>{html.escape(name or url)}</a>"
    return html.escape(name or url)


def _attempt(what: str, action: Callable[[], Any]) -> tuple[Any, str | None]:
    """(result, None), or (None, the sentence to show): a refusal or bad input is a ValueError;
    anything else is logged with its traceback and named in one line."""
    try:
        return action(), None
    except ValueError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - the page shows one line; the log has the traceback
        log.exception("%s failed", what)
        return None, f"{what} failed: {type(exc).__name__}: {exc}"


def build_extensions_tab(manager: "ExtensionManager", *, load_index: Callable[[str], Any] | None = None,
                         restart: Callable[[], Any] | None = None, errors: Callable[[], Mapping[str, str]] = dict,
                         tab: gr.Tab | None = None) -> ExtensionsTab:
    """`load_index(url)` reads an A1111 index.json (modules/extensions/index.py's by default;
    ValueError with a sentence when it cannot, offline included); `restart()` restarts the app
    after Apply (None: the tab says to restart the server by hand); `errors()` gives the
    extensions that failed to import, with their tracebacks; `tab` refreshes the Installed
    table whenever it is opened. The index URL and the switches are the manager's settings."""
    load_index = load_index or _load_index
    settings = manager.settings
    refusal = manager.refusal()  # None on a local server (or when its owner allows changes)
    gr.HTML(f"<p><b>Extensions cannot be changed here.</b> {html.escape(refusal)}</p>" if refusal else "", visible=bool(refusal),
            elem_id="extensions_shared_notice", css_template=NOTICE_CSS, js_on_load=None)
    updates_state = gr.State({})  # this visitor's last "Check for updates": name -> True/False/message
    with gr.Tabs(elem_id="tabs_extensions"):
        with gr.Tab("Installed", id="installed"):
            with gr.Row(elem_id="extensions_installed_top"):
                apply = gr.Button("Apply and restart UI", variant="primary", elem_id="extensions_apply", scale=1)
                check = gr.Button("Check for updates", elem_id="extensions_check", scale=1)
                mode = gr.Radio(list(DISABLE_ALL_MODES), value=_safe_mode(settings["disable_all_extensions"]), label="Disable all extensions",
                                elem_id="extensions_disable_all", scale=2)
                unchecked = gr.Textbox(visible=False, elem_id="extensions_disabled_list")
            status = gr.HTML(elem_id="extensions_installed_status", css_template=MESSAGE_CSS, js_on_load=None)
            installed = gr.HTML("<p>Loading…</p>", elem_id="extensions_installed_html", js_on_load=INSTALLED_JS,
                                css_template=TABLE_CSS)
        with gr.Tab("Available", id="available"):
            with gr.Row():
                load = gr.Button("Load from:", variant="primary", elem_id="extensions_available_load", scale=1)
                url = gr.Textbox(settings["extensions_index_url"], show_label=False, container=False, elem_id="extensions_available_index", scale=4)
            with gr.Row():
                hide_tags = gr.CheckboxGroup(list(HIDE_TAG_DEFAULT), value=list(HIDE_TAG_DEFAULT), label="Hide extensions with tags",
                                             elem_id="extensions_hide_tags", scale=2)
                search = gr.Textbox(label="Search", elem_id="extensions_search", scale=1)
            index_state = gr.State(None)  # (entries, tags) of the last loaded index
            available_status = gr.HTML(elem_id="extensions_available_status", css_template=MESSAGE_CSS, js_on_load=None)
            available = gr.HTML("<p>Press “Load from:” to read the extension index.</p>", elem_id="extensions_available_html",
                                js_on_load=AVAILABLE_JS, css_template=TABLE_CSS)
        with gr.Tab("Install from URL", id="install_from_url"):
            install_url = gr.Textbox(label="URL for extension's git repository", placeholder="https://github.com/… or file:///…",
                                     elem_id="extensions_install_url")
            install_branch = gr.Textbox(label="Specific branch name", placeholder="Leave empty for the default branch",
                                        elem_id="extensions_install_branch")
            install_dirname = gr.Textbox(label="Local directory name", placeholder="Leave empty for auto", elem_id="extensions_install_dirname")
            install_button = gr.Button("Install", variant="primary", elem_id="extensions_install_button")
            install_result = gr.HTML(elem_id="extensions_install_result", css_template=MESSAGE_CSS, js_on_load=None)

    def rows() -> tuple[list, str | None]:
        """installed(), each row `ticked` unless config.json's disabled_extensions names it:
        the boxes show the user's own choice, not what "Disable all extensions" overrides."""
        found, problem = _attempt("Listing extensions", manager.installed)
        off = set(settings["disabled_extensions"] or [])
        return [{**row, "ticked": row["name"] not in off} for row in found or []], problem

    def table(updates: Mapping[str, Any]) -> tuple[str, str | None]:
        found, problem = rows()
        return installed_html(found, updates, errors()), problem

    def refresh(updates):
        """The table and the switch as they are now (the API or another visitor may have changed them)."""
        text, problem = table(updates)
        return text, message_html(problem or "", error=True), _safe_mode(settings["disable_all_extensions"])

    def do_apply(unticked: str, chosen_mode: str, updates):
        try:
            off = json.loads(unticked or "null")
        except ValueError:
            off = None
        found, problem = rows()
        if problem:
            return table(updates)[0], message_html(problem, error=True), False
        if not isinstance(off, list) and found:
            return (table(updates)[0], message_html("The list of extensions was not shown yet; nothing was changed. Try again.", error=True),
                    False)
        off = {str(n) for n in off or []}
        enabled = [str(_get(r, "name")) for r in found if str(_get(r, "name")) not in off]
        _, problem = _attempt("Saving the enabled extensions", lambda: manager.apply(enabled, _safe_mode(chosen_mode)))
        if problem:
            return table(updates)[0], message_html(problem, error=True), False
        if restart is None:
            return table(updates)[0], message_html("Saved. Restart the server to load the change."), False
        return table(updates)[0], message_html("Saved. Restarting… the page reloads when the server is up again.", restarting=True), True

    def do_restart(pending: bool):
        """The restart, as an event of its own after Apply's answer reached the page (the server
        may go away before this one's does)."""
        if not pending or restart is None:
            return gr.update()
        _, problem = _attempt("Restarting", restart)
        return message_html(f"Saved, but the server did not restart: {problem}", error=True) if problem else gr.update()

    def do_check(updates):
        found, problem = _attempt("Checking for updates", manager.check_updates)
        updates = {**(updates or {}), **(found or {})}
        if problem:
            return table(updates)[0], message_html(problem, error=True), updates
        newer = sorted(n for n, v in updates.items() if v is True)
        note = f"Updates available: {', '.join(newer)}." if newer else "Every extension is up to date."
        failed = sorted(n for n, v in (found or {}).items() if isinstance(v, str) and v)
        if failed:
            note += f" Could not check: {', '.join(failed)}."
        return table(updates)[0], message_html(note), updates

    def row_action(updates, evt: gr.EventData):
        data = getattr(evt, "_data", None) or {}
        action, name = data.get("action"), str(data.get("name") or "")
        updates = dict(updates or {})
        if action == "update":
            result, problem = _attempt(f"Updating {name}", lambda: manager.update(name))
            if not problem:
                updates[name] = False
                note = result if isinstance(result, str) and result else f"Updated {name}. Apply and restart to load the new code."
        elif action == "uninstall":
            result, problem = _attempt(f"Uninstalling {name}", lambda: manager.uninstall(name))
            if not problem:
                updates.pop(name, None)
                note = result if isinstance(result, str) and result else f"Uninstalled {name}. Restart to unload its code."
        else:
            problem = f"Unknown action {action!r}."
        return table(updates)[0], message_html(problem or note, error=bool(problem)), updates

    def do_install(address: str, branch: str, dirname: str, updates):
        if not (address or "").strip():
            return gr.update(), message_html("Paste the URL of the extension's git repository first.", error=True), table(updates)[0]
        result, problem = _attempt("Installing", lambda: manager.install(address.strip(), branch=(branch or "").strip() or None,
                                                                          name=(dirname or "").strip() or None))
        if problem:
            return gr.update(), message_html(problem, error=True), table(updates)[0]
        return "", message_html(_installed_note(result, address)), table(updates)[0]

    def do_load(address: str, hidden: list[str], text: str):
        address = (address or "").strip()
        configured = settings["extensions_index_url"]
        if address != configured and manager.refusal("Loading an index from another address"):
            # A visitor's address would make the shared server fetch any URL (or read a file:// path).
            problem = manager.refusal("Loading an index from another address") + f" The configured index is {configured}."
            return None, message_html(problem, error=True), "<p>No index loaded.</p>", gr.update()
        index, problem = _attempt("Loading the extension index", lambda: load_index(address))
        if problem:
            return None, message_html(problem, error=True), "<p>No index loaded.</p>", gr.update()
        entries, tags = list(index.entries), dict(index.tags)  # modules/extensions/index.py's ExtensionIndex
        found, _ = rows()
        choices = sorted({*HIDE_TAG_DEFAULT, *tags, *(t for e in entries for t in (_get(e, "tags") or []))})
        note = f"{len(entries)} extensions in the index."
        return ((entries, tags), message_html(note), available_html(entries, found, hidden, text),
                gr.update(choices=choices, value=[t for t in hidden if t in choices]))

    def redraw_available(index, hidden: list[str], text: str):
        if not index:
            return gr.update()
        return available_html(index[0], rows()[0], hidden, text)

    def install_entry(index, hidden: list[str], text: str, updates, evt: gr.EventData):
        data = getattr(evt, "_data", None) or {}
        address = str(data.get("url") or "")
        result, problem = _attempt("Installing", lambda: manager.install(address))
        note = message_html(problem, error=True) if problem else message_html(_installed_note(result, address))
        listing = available_html(index[0], rows()[0], hidden, text) if index else gr.update()
        return note, listing, table(updates)[0]

    pending = gr.State(False)  # Apply saved the set and a restart is to follow
    apply.click(do_apply, [unchecked, mode, updates_state], [installed, status, pending], js=COLLECT_UNCHECKED_JS, api_name=False).then(
        do_restart, pending, status, js=RELOAD_WHEN_BACK_JS, api_name=False)
    check.click(do_check, updates_state, [installed, status, updates_state], api_name=False)
    installed.row_action(row_action, updates_state, [installed, status, updates_state], api_name=False)
    install_button.click(do_install, [install_url, install_branch, install_dirname, updates_state], [install_url, install_result, installed],
                         api_name=False)
    load.click(do_load, [url, hide_tags, search], [index_state, available_status, available, hide_tags], api_name=False)
    hide_tags.input(redraw_available, [index_state, hide_tags, search], available, api_name=False)
    search.submit(redraw_available, [index_state, hide_tags, search], available, api_name=False)
    available.install_entry(install_entry, [index_state, hide_tags, search, updates_state], [available_status, available, installed],
                            api_name=False)
    if tab is not None:
        tab.select(refresh, updates_state, [installed, status, mode], api_name=False)
    return ExtensionsTab(installed, status, apply, check, available, install_result)


def _safe_mode(value: Any) -> str:
    return value if value in DISABLE_ALL_MODES else "none"


def _installed_note(result: Any, address: str) -> str:
    if isinstance(result, str) and result:
        return result
    name = _get(result, "name") if result is not None else None
    where = _get(result, "path") if result is not None else None
    target = name or name_from_url(address)
    return f"Installed {target}{f' into {where}' if where else ''}. Apply and restart to load it."


def build_app_extensions_tab(app: Any, tab: gr.Tab | None = None) -> ExtensionsTab:
    """The tab over the app's extension manager, the extensions that failed to load, and its restart."""
    loaded = app.extensions
    return build_extensions_tab(app.extension_manager, restart=app.request_restart,
                                errors=lambda: dict(loaded.errors if loaded is not None else {}), tab=tab)


def _load_index(url: str) -> Any:
    from modules.extensions.index import load_index

    return load_index(url)
