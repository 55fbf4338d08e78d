"""ui-config.json: the user's defaults for the page's controls, keyed as A1111 keys them.

Keys are "<tab>/<label>/<field>", e.g. "txt2img/Sampling steps/value": 20. The tab is the id of
the outermost gr.Tab around the control ("webui" outside any tab). A label that repeats inside a
tab keeps the plain key for its first control; later ones are "<label>@<elem_id>" (or
"<label>#<n>" without an elem_id), so no two controls share a key.

Fields: "visible" and "value" for every Textbox, Number, Checkbox, Radio, Dropdown and Slider,
plus "minimum", "maximum" and "step" for sliders. Controls without a label, and settings
controls (elem_id "setting_…" or "settings_…", or `do_not_save_to_config = True`, A1111's mark;
their home is config.json), are left out.

`UiConfig.apply(blocks)` sets the controls from the file before the page is served (it works
after the `with gr.Blocks()` block has closed: mounting re-reads the components), then adds
the keys the file lacks with the controls' current values. A value that cannot apply (wrong
type, outside the slider's range, not among the choices) is skipped with a warning each start
and left in the file for the user to fix, as A1111 does.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr

log = logging.getLogger(__name__)

OUTSIDE_TABS = "webui"
SLIDER_RANGE = ("minimum", "maximum", "step")
SETTINGS_PREFIXES = ("setting_", "settings_")  # A1111's quicksettings, and our Settings tab
KINDS = (gr.Slider, gr.Dropdown, gr.Radio, gr.Checkbox, gr.Number, gr.Textbox)

TabOf = Callable[[gr.components.Component], "str | None"]


@dataclass(frozen=True)
class Control:
    """One keyed control: `base` is "<tab>/<label>", the key without its field."""

    base: str
    component: gr.components.Component

    def fields(self) -> tuple[str, ...]:
        return ("visible", "value", *SLIDER_RANGE) if isinstance(self.component, gr.Slider) else ("visible", "value")


def _walk(block: Any, tab: str | None, tab_of: TabOf | None) -> Iterator[tuple[str, gr.components.Component]]:
    for child in getattr(block, "children", None) or []:
        if isinstance(child, gr.Tab) and tab is None:
            name = child.id if child.id is not None else (child.elem_id or child.label)
            yield from _walk(child, str(name), tab_of)
        elif isinstance(child, KINDS):
            where = (tab_of(child) if tab_of else None) or tab or OUTSIDE_TABS
            yield where, child
        else:
            yield from _walk(child, tab, tab_of)


def _saved(component: gr.components.Component) -> bool:
    if not component.label or getattr(component, "do_not_save_to_config", False):
        return False
    return not str(component.elem_id or "").startswith(SETTINGS_PREFIXES)


def controls(blocks: gr.Blocks, tab_of: TabOf | None = None) -> list[Control]:
    """The page's keyed controls in page order; `tab_of` may name a control's prefix itself
    (e.g. "customscript/<file>"), None leaving it to the enclosing tab."""
    found: list[Control] = []
    taken: set[str] = set()
    for tab, component in _walk(blocks, None, tab_of):
        if not _saved(component):
            continue
        label = str(component.label)
        base = f"{tab}/{label}"
        if base in taken:
            base = f"{tab}/{label}@{component.elem_id}" if component.elem_id else base
            count = 2
            while base in taken:
                base, count = f"{tab}/{label}#{count}", count + 1
        taken.add(base)
        found.append(Control(base, component))
    return found


def _json_value(value: Any) -> bool:
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    return isinstance(value, list) and all(_json_value(v) for v in value)


def describe(blocks: gr.Blocks, tab_of: TabOf | None = None) -> dict[str, Any]:
    """Every key with the control's current value, in page order (what a Settings → Defaults
    view shows, and what apply adds to the file)."""
    current: dict[str, Any] = {}
    for control in controls(blocks, tab_of):
        for field in control.fields():
            value = getattr(control.component, field, None)
            if field == "value" and value is None and isinstance(control.component, gr.Textbox):
                value = ""  # gradio's empty box; a string for the user to edit
            if not callable(value) and _json_value(value):
                current[f"{control.base}/{field}"] = value
    return current


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _choices(component: gr.components.Component) -> list[Any]:
    return [c[1] if isinstance(c, (tuple, list)) else c for c in (component.choices or [])]


def _value_problem(component: gr.components.Component, value: Any, low: Any = None, high: Any = None) -> str | None:
    """Why `value` cannot be the control's value, or None when it can."""
    default = component.value
    if not isinstance(component, gr.Slider) and type(value) is type(default) and value == default:
        return None  # what the control holds already
    if isinstance(component, gr.Slider):
        if not _number(value):
            return "not a number"
        if value < low:
            return f"below the minimum {low}"
        if value > high:
            return f"above the maximum {high}"
        return None
    if isinstance(component, gr.Checkbox):
        return None if isinstance(value, bool) else "not true or false"
    if isinstance(component, gr.Number):
        if value is None and default is None:
            return None
        if not _number(value):
            return "not a number"
        if component.minimum is not None and value < component.minimum:
            return f"below the minimum {component.minimum}"
        if component.maximum is not None and value > component.maximum:
            return f"above the maximum {component.maximum}"
        if component.precision == 0 and value != int(value):
            return "not a whole number"
        return None
    if isinstance(component, gr.Dropdown) and component.multiselect:
        if not isinstance(value, list):
            return "not a list of choices"
        if not getattr(component, "allow_custom_value", False):
            strangers = [v for v in value if v not in _choices(component)]
            if strangers:
                return f"{strangers!r} not among the choices {_choices(component)!r}"
        limit = getattr(component, "max_choices", None)
        return f"more than {limit} choices" if limit is not None and len(value) > limit else None
    if isinstance(component, (gr.Dropdown, gr.Radio)):
        if value is None and default is None:
            return None
        if isinstance(component, gr.Dropdown) and getattr(component, "allow_custom_value", False):
            return None if isinstance(value, (str, int, float)) and not isinstance(value, bool) else "not a single choice"
        return None if value in _choices(component) and not isinstance(value, (list, bool)) else f"not among the choices {_choices(component)!r}"
    if isinstance(component, gr.Textbox):
        return None if isinstance(value, str) else "not text"
    return "not a field this control has"


class UiConfig:
    """The ui-config.json file at `path`; see the module docstring for what it holds."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.data: dict[str, Any] = {}
        self._writable = True

    def load(self) -> list[str]:
        """Read the file into `data`. Missing: empty. Unreadable JSON: a copy is kept as
        <name>.bad, defaults are used and the file is rewritten from them. Returns warnings."""
        self.data, self._writable = {}, True
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._writable = False  # leave a file we cannot read alone
            return [self._warn(f"{self.path.name}: could not read {self.path} ({exc}); using the built-in defaults.")]
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if isinstance(data, dict):
            self.data = data
            return []
        backup = self.path.with_name(self.path.name + ".bad")
        try:
            backup.write_bytes(raw)
            kept = f"it was kept as {backup}"
        except OSError as exc:
            self._writable = False
            kept = f"it could not be backed up ({exc}) and is left as it is"
        return [self._warn(f"{self.path.name}: {self.path} is not a JSON object of control defaults; {kept}. Using the built-in defaults.")]

    def apply(self, blocks: gr.Blocks, tab_of: TabOf | None = None) -> list[str]:
        """Set the page's controls from the file (re-read now), then add the keys it lacks.
        Returns the warnings, one sentence per value that was not applied."""
        warnings = self.load()
        found = controls(blocks, tab_of)
        for control in found:
            warnings += self._apply_control(control)
        added = {k: v for k, v in describe(blocks, tab_of).items() if k not in self.data}
        if added and self._writable:
            self.data.update(added)
            warnings += self._save()
        if getattr(blocks, "exited", False):
            blocks.config = blocks.get_config_file()  # the snapshot taken when the block closed
        return warnings

    def _apply_control(self, control: Control) -> list[str]:
        component, warnings = control.component, []
        key = lambda field: f"{control.base}/{field}"  # noqa: E731
        visible = key("visible")
        if visible in self.data:
            if isinstance(self.data[visible], bool) or self.data[visible] == "hidden":
                component.visible = self.data[visible]
            else:
                warnings.append(self._bad(visible, self.data[visible], "not true or false", component.visible))
        if isinstance(component, gr.Slider):
            return warnings + self._apply_slider(control.base, component)
        if key("value") in self.data:
            value = self.data[key("value")]
            problem = _value_problem(component, value)
            if problem:
                warnings.append(self._bad(key("value"), value, problem, component.value))
            else:
                component.value = component.postprocess(value) if isinstance(component, gr.Number) else value
        return warnings

    def _apply_slider(self, base: str, slider: gr.Slider) -> list[str]:
        """Range first, then the value within it. A range that would leave the kept value
        outside it is refused too, so the slider never shows a value it cannot hold."""
        warnings: list[str] = []
        default = {f: getattr(slider, f) for f in SLIDER_RANGE}
        wanted = dict(default)
        for field in SLIDER_RANGE:
            k = f"{base}/{field}"
            if k not in self.data:
                continue
            v = self.data[k]
            if not _number(v) or (field == "step" and v <= 0):
                warnings.append(self._bad(k, v, "not a positive number" if field == "step" else "not a number", default[field]))
            else:
                wanted[field] = v

        def value_for(low, high) -> tuple[Any, str | None]:
            k = f"{base}/value"
            if k not in self.data:
                return slider.value, None
            problem = _value_problem(slider, self.data[k], low, high)
            return (slider.value, problem) if problem else (self.data[k], None)

        if wanted["minimum"] >= wanted["maximum"]:
            warnings.append(self._bad_range(base, wanted, default, f"the minimum {wanted['minimum']} is not below the maximum {wanted['maximum']}"))
            wanted.update(minimum=default["minimum"], maximum=default["maximum"])
        value, problem = value_for(wanted["minimum"], wanted["maximum"])
        if _number(value) and not wanted["minimum"] <= value <= wanted["maximum"]:
            warnings.append(self._bad_range(base, wanted, default, f"the value {value} would lie outside it"))
            wanted.update(minimum=default["minimum"], maximum=default["maximum"])
            value, problem = value_for(wanted["minimum"], wanted["maximum"])
        if problem:
            warnings.append(self._bad(f"{base}/value", self.data[f"{base}/value"], problem, slider.value))
        for field, v in wanted.items():
            setattr(slider, field, v)
        slider.value = value
        return warnings

    def _bad(self, key: str, value: Any, problem: str, default: Any) -> str:
        return self._warn(f"{self.path.name}: {key!r} = {json.dumps(value)} is not used ({problem}); kept the default {json.dumps(default)}.")

    def _bad_range(self, base: str, wanted: dict, default: dict, why: str) -> str:
        return self._warn(f"{self.path.name}: the range {wanted['minimum']}..{wanted['maximum']} from '{base}/minimum' and '{base}/maximum' is not used "
                          f"({why}); kept the default {default['minimum']}..{default['maximum']}.")

    def _warn(self, sentence: str) -> str:
        log.warning(sentence)
        return sentence

    def _save(self) -> list[str]:
        """Write atomically (a temporary file beside it, then a rename), so a crash mid-write
        never leaves half a file."""
        tmp: Path | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            tmp = Path(name)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(self.data, out, indent=4, ensure_ascii=False)
                out.write("\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            return [self._warn(f"{self.path.name}: could not write {self.path} ({exc}); the defaults apply but are not saved.")]
        return []
