"""The extensions' always-on scripts on the txt2img and img2img tabs (A1111's scripts area).

Each script's ui(is_img2img) is called inside the tab, so its components (accordions too)
render where they are made; their values go with every Generate as the job's AlwaysOnArgs, in
ui() order. A ui() that raises is named in the log and the Extensions tab, its half-made
controls are hidden, and a note says so in the page: the other scripts and the tab still work.
A script's A1111 `infotext_fields` ([(component, "Infotext key" or function of the pasted
fields)]) are filled when an infotext is pasted (↙, PNG Info's Send to).
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import gradio as gr
from gradio.context import set_render_context

from modules.extensions.hook_scripts import script_title
from modules.extensions.job_scripts import AlwaysOnArgs

if TYPE_CHECKING:
    from modules.extensions.loaded import LoadedExtensions

log = logging.getLogger(__name__)


@dataclass
class AlwaysOnPanel:
    """The always-on scripts' controls of one tab. `inputs` is what Generate takes, in order:
    each script's components as its ui() returned them."""

    titles: list[str] = field(default_factory=list)
    controls: dict[str, list] = field(default_factory=dict)  # title -> the components ui() returned
    paste_fields: list[tuple[Any, Any]] = field(default_factory=list)  # (component, infotext key or fn(fields))
    failed: dict[str, str] = field(default_factory=dict)  # title -> why its controls are not shown

    @property
    def inputs(self) -> list:
        return [c for title in self.titles for c in self.controls[title]]

    def args_from(self, values: Sequence[Any]) -> tuple[AlwaysOnArgs, ...]:
        """Each script's arguments from the values of `inputs`, in order."""
        values = list(values)
        if len(values) != len(self.inputs):
            raise ValueError(f"The always-on scripts take {len(self.inputs)} values, got {len(values)}")
        out, at = [], 0
        for title in self.titles:
            count = len(self.controls[title])
            out.append(AlwaysOnArgs(title, tuple(values[at : at + count])))
            at += count
        return tuple(out)

    # ------------------------------------------------------------------ paste

    @property
    def outputs(self) -> list:
        return [component for component, _key in self.paste_fields]

    @property
    def keys(self) -> set[str]:
        """The infotext keys some script's control takes (not "unknown" when pasted)."""
        return {key for _component, key in self.paste_fields if isinstance(key, str)}

    def updates(self, fields: dict) -> list:
        """An update per paste field from the pasted infotext's fields (after the extensions'
        on_infotext_pasted): a key's value converted to the control's type, or a function's
        answer; missing keys and values that do not fit leave the control as it is."""
        out = []
        for component, key in self.paste_fields:
            try:
                if callable(key):
                    value = key(fields)
                elif key in fields:
                    value = _as_control_value(component, fields[key])
                else:
                    out.append(gr.update())
                    continue
            except Exception:
                log.exception("An always-on script's infotext field %r failed; the control was left as it was", key)
                out.append(gr.update())
                continue
            out.append(value if isinstance(value, dict) else gr.update(value=value))
        return out


def _as_control_value(component: Any, raw: Any) -> Any:
    """An infotext value (text) as the control holds it, as A1111's paste converts by the
    control's current value's type."""
    current = getattr(component, "value", None)
    if isinstance(current, bool) or isinstance(component, gr.Checkbox):
        text = str(raw).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"'{raw}' is not True or False")
    if isinstance(component, (gr.Slider, gr.Number)) or isinstance(current, (int, float)):
        number = float(str(raw).strip())
        return int(number) if isinstance(current, int) or getattr(component, "precision", None) == 0 else number
    return raw


def build_alwayson(prefix: str, extensions: "LoadedExtensions | None") -> AlwaysOnPanel:
    """Render the tab's always-on scripts (`prefix` "txt2img" or "img2img") where this is called."""
    panel = AlwaysOnPanel()
    scripts = extensions.alwayson(prefix) if extensions is not None else []
    if not scripts:
        return panel
    img2img = prefix == "img2img"
    with gr.Column(elem_id=f"{prefix}_alwayson_scripts"):
        for script in scripts:
            title = script_title(script)  # title() was checked at start (LoadedExtensions.describe_scripts)
            if title in panel.controls:
                log.error("Extension '%s': a second always-on script titled '%s' on %s is left out", script.extension, title, prefix)
                continue
            with gr.Column() as box:
                try:
                    made = script.ui(img2img)
                    components = _components(made)
                    fields = _paste_fields(script, components)
                except Exception as exc:
                    set_render_context(box)  # in case ui() raised inside a layout block it entered by hand
                    extensions.callbacks.failed(script.extension, f"{type(script).__name__}.ui")
                    why = f"{type(exc).__name__}: {exc}"
                    box.visible = False  # whatever it made before raising
                    panel.failed[title] = why
                    continue
            panel.titles.append(title)
            panel.controls[title] = components
            panel.paste_fields.extend(fields)
        if panel.failed:
            notes = "".join(f"<li>Extension script '{html.escape(t)}' could not build its controls ({html.escape(w)}); "
                            f"it is left out of this tab's jobs. The server log has the traceback.</li>" for t, w in panel.failed.items())
            gr.HTML(f"<ul class='alwayson-errors'>{notes}</ul>", elem_id=f"{prefix}_alwayson_errors")
    return panel


def _components(made: Any) -> list:
    """ui()'s answer as a list of components; anything else is the script's error."""
    if made is None:
        return []
    if isinstance(made, gr.components.Component):
        made = [made]
    items = list(made)
    for item in items:
        if not isinstance(item, gr.components.Component):
            raise TypeError(f"ui() must return gradio components, got {type(item).__name__}")
    return items


def _paste_fields(script: Any, components: list) -> list[tuple[Any, Any]]:
    """A1111's `infotext_fields` that ui() set, for controls it returned (read at once: the
    next ui() call, for the other tab or the API's argument list, sets it anew)."""
    declared = getattr(script, "infotext_fields", None) or []
    ours = {id(c) for c in components}
    fields: list[tuple[Any, Callable | str]] = []
    for entry in declared:
        try:
            component, key = entry
        except (TypeError, ValueError):
            continue
        if id(component) in ours and (isinstance(key, str) or callable(key)):
            fields.append((component, key))
    return fields
