"""The Models tab: fetch a checkpoint from the catalog (configs/checkpoints.json) or any URL the
user pastes into the right models/ folder, and watch the downloads run.

The downloads themselves belong to the app (modules/models/downloads.py): they run in their
own threads, resume after an interruption and are checked against their SHA-256 before the
file appears, so this tab only starts them and shows their progress, polling once a second
while one runs. On a server shared on the network, only catalog entries (pinned by hash) may
be fetched: a pasted URL would let any visitor make the server fetch any address.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Callable

import gradio as gr

from modules.models.downloadable import MODEL_FOLDERS

if TYPE_CHECKING:
    from modules.models.downloads import Downloads
    from modules.models.fetch import FetchStatus
    from modules.network import ServerAccess

STATE_LABELS = {"waiting": "waiting", "connecting": "connecting", "downloading": "downloading", "verifying": "checking SHA-256",
                "done": "done", "failed": "failed", "cancelled": "cancelled"}


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _row(status: "FetchStatus") -> str:
    fraction = status.fraction
    percent = f"{fraction * 100:.0f}%" if fraction is not None else ""
    bar = (f"<div class='models-bar'><div style='width:{(fraction or 0) * 100:.1f}%'></div></div>" if not status.finished else "")
    name = html.escape(status.filename or status.name)
    where = html.escape(str(status.path or status.folder))
    state = STATE_LABELS.get(status.state, status.state) + (" (already there)" if status.skipped else "")
    detail = (f"<span class='models-error'>{html.escape(status.error)}</span>" if status.error
              else f"{_size(status.done_bytes)} of {_size(status.total_bytes)} {percent}")
    return f"<tr data-state='{status.state}'><td>{name}</td><td>{html.escape(state)}{bar}</td><td>{detail}</td><td>{where}</td></tr>"


def downloads_html(statuses: list["FetchStatus"]) -> str:
    if not statuses:
        return "<p>No downloads yet.</p>"
    rows = "".join(_row(s) for s in reversed(statuses))  # newest first
    return f"<table class='models-downloads'><tr><th>File</th><th>State</th><th>Progress</th><th>Where</th></tr>{rows}</table>"


def build_models_tab(downloads: "Downloads", access: "ServerAccess | None", checkpoint_menu: gr.Dropdown | None = None,
                     titles: Callable[[], list[str]] = list) -> None:
    """`checkpoint_menu` (the page's checkpoint dropdown) gets the new list, `titles()`, when
    a download ends."""
    catalog = downloads.catalog
    choices = [(f"{e.title} ({_size(e.size or None)}, {e.filename})", e.name) for e in catalog.entries]
    gr.Markdown("Fetch a checkpoint into `models/`. Downloads resume if interrupted and are checked against their SHA-256 "
                "before the file appears in the checkpoint list.")
    with gr.Row():
        entry = gr.Dropdown(choices, value=catalog.default_name if choices else None, label="Checkpoint", elem_id="models_catalog", scale=4)
        fetch_entry = gr.Button("Download", variant="primary", elem_id="models_download_catalog", scale=1)
    with gr.Row():
        url = gr.Textbox(label="Or a URL", placeholder="https://…/model.safetensors", elem_id="models_url", scale=4)
        folder = gr.Dropdown(list(MODEL_FOLDERS), value=MODEL_FOLDERS[0], label="Into models/", elem_id="models_folder", scale=1)
        fetch_url = gr.Button("Download URL", elem_id="models_download_url", scale=1)
    table = gr.HTML(downloads_html(downloads.statuses()), elem_id="models_downloads")
    timer = gr.Timer(1.0, active=False)
    seen_running = gr.State(False)

    menu = [checkpoint_menu] if checkpoint_menu is not None else []

    def start(query: str, into: str | None, pasted: bool):
        if pasted and access is not None:
            refusal = access.refusal("Downloading from a pasted URL")
            if refusal:
                raise gr.Error(refusal)
        if not (query or "").strip():
            raise gr.Error("Paste the URL of a .safetensors file first." if pasted else "Pick a checkpoint first.")
        try:
            progress = downloads.start(query, into)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        gr.Info(f"Downloading {progress.status().name}.")
        return downloads_html(downloads.statuses()), gr.Timer(active=True), True

    def tick(was_running: bool):
        """Redraw the table; stop polling once nothing runs, and refresh the checkpoint menu."""
        running = bool(downloads.running())
        ended = [gr.update(choices=titles())] if was_running and not running else [gr.update()]
        return downloads_html(downloads.statuses()), gr.Timer(active=running), running, *ended[: len(menu)]

    fetch_entry.click(lambda q: start(q, None, False), entry, [table, timer, seen_running], api_name=False)
    fetch_url.click(lambda q, f: start(q, f, True), [url, folder], [table, timer, seen_running], api_name=False)
    timer.tick(tick, seen_running, [table, timer, seen_running, *menu], api_name=False, show_progress="hidden")
