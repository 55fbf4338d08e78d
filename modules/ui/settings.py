"""The Settings tab: every config.json setting the app defines, by A1111's sections, with one
"Apply settings" button. Values are checked one by one: a bad one is named and left as it
was, the rest are applied and saved. The same store backs the API's /options, so the tab
reloads its values whenever it is opened."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr

from modules.jobs.model_switch import switch_checkpoint
from modules.jobs.queue import JobStatus, QueueStopped
from modules.settings import Setting, SettingsStore
from modules.ui.common import page_user

if TYPE_CHECKING:
    from modules.jobs.generation_task import GenerationService
    from modules.jobs.queue import JobQueue
    from modules.localization import Localizations
    from modules.models.manager import ModelManager


@dataclass(frozen=True)
class SettingsTab:
    components: dict[str, Any]  # setting key -> its control
    tab: gr.Tab


def _control(setting: Setting, choices: dict[str, Callable[[], list[str]]]) -> Any:
    common = dict(label=setting.label, info=setting.info or None, elem_id=f"settings_{setting.key}")
    if setting.key in choices:
        return gr.Dropdown(choices[setting.key](), value=None, allow_custom_value=False, **common)
    if setting.kind is bool:
        return gr.Checkbox(value=setting.default, **common)
    if isinstance(setting.choices, tuple):
        return gr.Dropdown(list(setting.choices), value=setting.default, multiselect=setting.kind is list, **common)
    if setting.kind is int and setting.minimum is not None and setting.maximum is not None and setting.maximum - setting.minimum > 10_000:
        return gr.Number(value=setting.default, minimum=setting.minimum, maximum=setting.maximum, precision=0, **common)
    if setting.minimum is not None and setting.maximum is not None:
        return gr.Slider(setting.minimum, setting.maximum, value=setting.default, step=setting.step or 1, **common)
    return gr.Textbox(value=setting.default or "", lines=1, **common)


def build_settings_tab(settings: SettingsStore, models: "ModelManager", queue: "JobQueue", service: "GenerationService",
                       vae_choices: Callable[[], list[str]], warnings: Callable[[], list[str]], tab: gr.Tab,
                       localizations: "Localizations | None" = None) -> SettingsTab:
    """`warnings` gives the problems found in config.json and ui-config.json at start, shown
    at the top until the files are fixed. `localizations` gives the localization setting's
    choices ("None" and the files found, listed afresh each time the tab opens)."""
    choices = {"sd_model_checkpoint": models.titles, "sd_vae": vae_choices}
    if localizations is not None:
        choices["localization"] = localizations.choices
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit", scale=1)
        gr.Markdown(f"Saved to `{settings.path}`. Control defaults (the values each tab starts with) are in `ui-config.json`.", elem_id="settings_path")
    result = gr.HTML(elem_id="settings_result")
    problems = gr.HTML(_warnings_html(warnings()), elem_id="settings_warnings")
    components: dict[str, Any] = {}
    with gr.Tabs(elem_id="settings_sections"):
        for section, items in settings.sections().items():
            items = [s for s in items if not s.hidden]  # hidden: kept in config.json, set by another tab
            if not items:
                continue
            with gr.Tab(section, elem_id=f"settings_section_{section.lower().replace(' ', '_').replace('/', '_')}"):
                for setting in items:
                    components[setting.key] = _control(setting, choices)
    keys = list(components)

    def current_values(shown: tuple | None = None) -> list:
        """Each control's update from the store (the API may have changed it since). Given the
        values the page `shown` when the tab was opened, a control whose value is unchanged is
        left alone, so an edit typed while this round trip is under way is not overwritten."""
        updates = []
        for i, key in enumerate(keys):
            value = settings[key]
            if key == "sd_model_checkpoint":
                current = models.current
                value = current.title if current else None
            same = shown is not None and shown[i] == value
            if key in choices:  # checkpoints, VAEs, localizations: listed afresh
                listed = choices[key]()
                updates.append(gr.update(choices=listed) if same else gr.update(choices=listed, value=value))
            else:
                updates.append(gr.update() if same else gr.update(value=value))
        return updates

    async def apply_settings(request: gr.Request, *values):
        wanted = dict(zip(keys, values))
        checkpoint = wanted.pop("sd_model_checkpoint", None)
        good, bad = {}, []
        for key, value in wanted.items():
            if key in settings.definitions and settings.definitions[key].kind is str and value is None:
                value = ""
            if key in settings.definitions and settings.definitions[key].kind is list and value is None:
                value = []
            try:
                good.update(settings.check({key: value}))
            except ValueError as exc:
                bad.append(str(exc))
        changed: dict = {}
        try:
            changed = settings.update(good)
        except ValueError as exc:  # refused by whoever applies it (a VAE file gone since the list was made)
            bad.append(str(exc))
        current = models.current
        if checkpoint and (current is None or checkpoint != current.title):
            try:
                job = await switch_checkpoint(models, queue, checkpoint, page_user(request), settings)
                if job.status is JobStatus.DONE:
                    changed["sd_model_checkpoint"] = checkpoint
                else:
                    bad.append(job.error or f"Could not load {checkpoint}")
            except (ValueError, QueueStopped) as exc:
                bad.append(str(exc))
        return [_result_html(changed, bad), gr.update(value=_warnings_html(warnings())), *current_values()]

    apply.click(apply_settings, list(components.values()), [result, problems, *components.values()], concurrency_limit=None, api_name=False)
    tab.select(lambda *shown: [gr.update(value=_warnings_html(warnings())), *current_values(shown)], list(components.values()),
               [problems, *components.values()], queue=False, api_name=False)
    return SettingsTab(components, tab)


def _result_html(changed: dict, bad: list[str]) -> str:
    parts = [f"{len(changed)} setting{'s' if len(changed) != 1 else ''} changed"
             + (": " + ", ".join(html.escape(k) for k in changed) if changed else "") + "."]
    parts += [f"<span class='settings-error'>Not applied: {html.escape(b)}</span>" for b in bad]
    return "<p>" + "<br>".join(parts) + "</p>"


def _warnings_html(warnings: list[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    return f"<div class='settings-warnings'><b>Problems found when the settings were read:</b><ul>{items}</ul></div>"
