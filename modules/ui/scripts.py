"""A1111's Script menu on txt2img and img2img: a "Script" dropdown (None and the tab's scripts)
and, for each script, a group of controls built from its argument specs; only the chosen
script's group shows.

The controls come from the same ScriptArg list that reads the API's script_args, so the page
and the API cannot disagree on a script's arguments. X/Y/Z's value pickers follow the chosen
axis: a dropdown of its choices (samplers, checkpoints, ...) where the axis has them, the text
box otherwise, as in A1111.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import gradio as gr

if TYPE_CHECKING:
    from modules.scripts.args import ScriptArg
    from modules.scripts.base import Script, ScriptEnv
    from modules.scripts.runner import ScriptRunner

NONE = "None"
AXES = ("x", "y", "z")
CHECKBOXES_PER_ROW = 4  # X/Y/Z plot's axis controls: <axis>_type, <axis>_values, <axis>_values_dropdown


def _slug(title: str) -> str:
    """A1111's elem_id piece for a script title: "X/Y/Z plot" -> "xyz_plot"."""
    return re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", title.lower()))


def build_control(arg: "ScriptArg", elem_id: str, visible: bool = True, choices: Sequence[str] | None = None) -> gr.components.Component:
    """The gradio control for one argument, showing its default; `choices` replaces the spec's
    (an X/Y/Z picker gets its axis's)."""
    common: dict[str, Any] = {"label": arg.label, "elem_id": elem_id, "visible": visible}
    info = {"info": arg.info} if arg.info else {}
    choices = [str(c) for c in (arg.choices if choices is None else choices)]
    if arg.kind == "index":
        value = choices[arg.default] if isinstance(arg.default, int) and 0 <= arg.default < len(choices) else arg.default
        if _is_short(choices):
            return gr.Radio(choices, value=value, type="index", **common, **info)
        return gr.Dropdown(choices, value=value, type="index", **common, **info)
    if arg.kind == "choice":
        if _is_short(choices):
            return gr.Radio(choices, value=arg.default, **common, **info)
        return gr.Dropdown(choices, value=arg.default, allow_custom_value=not choices, **common, **info)
    if arg.kind == "multiselect":
        return gr.Dropdown(choices, value=list(arg.default or []), multiselect=True, allow_custom_value=not choices, **common, **info)
    if arg.kind in ("text", "textarea"):
        return gr.Textbox(value=arg.default or "", lines=4 if arg.kind == "textarea" else 1, **common, **info)
    if arg.kind in ("number", "int"):
        return gr.Number(value=arg.default, minimum=arg.minimum, maximum=arg.maximum, precision=0 if arg.kind == "int" else None,
                         **common, **info)
    if arg.kind == "slider":
        return gr.Slider(minimum=arg.minimum if arg.minimum is not None else 0, maximum=arg.maximum if arg.maximum is not None else 100,
                         step=arg.step or 1, value=arg.default, **common, **info)
    if arg.kind == "checkbox":
        return gr.Checkbox(value=bool(arg.default), **common, **info)
    if arg.kind == "file":
        return gr.File(type="binary", file_count="single", **common)
    raise ValueError(f"Unknown argument kind '{arg.kind}' for {arg.name}")


def _is_short(choices: Sequence[str]) -> bool:
    """A few short choices read better as a radio row (A1111's prompt matrix options)."""
    return 0 < len(choices) <= 4 and sum(len(c) for c in choices) <= 48


def page_value(arg: "ScriptArg", value: Any) -> Any:
    """A control's value as the script's argument: a file's text (the single-file, binary
    upload's bytes; A1111 reads uploads as UTF-8, dropping what does not decode); everything
    else as the control gives it (the runner checks and coerces each value with the spec)."""
    if arg.kind == "file":
        return None if value is None else bytes(value).decode("utf-8", errors="ignore")
    if arg.kind == "multiselect" and value is None:
        return []
    return value


@dataclass
class ScriptPanel:
    """The Script dropdown and every script's controls. `inputs` is what the Generate handler
    takes, in this fixed order: the dropdown, then each script's visible controls."""

    dropdown: gr.Dropdown
    titles: list[str]
    specs: dict[str, list["ScriptArg"]]  # title -> the arguments that have a control
    controls: dict[str, list[Any]]  # title -> those controls, in the same order
    groups: dict[str, gr.Group] = field(default_factory=dict)

    @property
    def inputs(self) -> list:
        return [self.dropdown, *(c for title in self.titles for c in self.controls[title])]

    def args_from(self, values: Sequence[Any]) -> tuple[str | None, dict[str, Any]]:
        """The chosen script's title (None when "None") and its arguments by name, from the
        values of `inputs` in order. Arguments without a control keep their defaults."""
        values = list(values)
        if len(values) != len(self.inputs):
            raise ValueError(f"The script panel takes {len(self.inputs)} values, got {len(values)}")
        chosen = values[0]
        at = 1
        for title in self.titles:
            count = len(self.controls[title])
            if title == chosen:
                return title, {arg.name: page_value(arg, v) for arg, v in zip(self.specs[title], values[at : at + count])}
            at += count
        return None, {}


def build_script_panel(prefix: str, scripts: Sequence["Script"], env: "ScriptEnv", img2img: bool,
                       axis_choices: Callable[[str, int], list[str] | None] | None = None) -> ScriptPanel:
    """The Script dropdown and a hidden group of controls per script (`scripts` in menu order).
    `axis_choices(title, type_index)`: the value choices an X/Y/Z-like axis offers (None: typed
    values), which makes <axis>_values_dropdown follow <axis>_type."""
    titles = [s.title for s in scripts]
    specs: dict[str, list] = {}
    controls: dict[str, list] = {}
    groups: dict[str, gr.Group] = {}
    with gr.Column(elem_id=f"{prefix}_script_container"):
        dropdown = gr.Dropdown([NONE, *titles], value=NONE, label="Script", elem_id=f"{prefix}_script_list", elem_classes="script_list")
        for script in scripts:
            args = [a for a in script.args(env, img2img) if a.visible or (axis_choices is not None and _is_picker(a.name))]
            shown = _initial_axes(script.title, args, axis_choices) if axis_choices is not None else {}
            with gr.Group(visible=False, elem_id=f"script_{prefix}_{_slug(script.title)}") as group:
                built = _build_rows(args, f"script_{prefix}_{_slug(script.title)}", shown)
                if axis_choices is not None:
                    _wire_axes(script.title, args, built, axis_choices, f"script_{prefix}_{_slug(script.title)}")
            specs[script.title], controls[script.title], groups[script.title] = args, built, group

    def select(chosen: str):
        return [gr.update(visible=title == chosen) for title in titles]

    dropdown.change(select, dropdown, [groups[t] for t in titles], queue=False, api_name=False, show_progress="hidden")
    return ScriptPanel(dropdown, titles, specs, controls, groups)


def _is_picker(name: str) -> bool:
    """An X/Y/Z axis's value picker: hidden in the spec (A1111 creates it hidden), shown by the
    page when the chosen axis has choices."""
    return name in {f"{axis}_values_dropdown" for axis in AXES}


def _initial_axes(title: str, args: list["ScriptArg"], axis_choices: Callable[[str, int], list[str] | None]) -> dict[str, dict]:
    """build_control options for each axis's text box and picker at the axis's default type."""
    by_name = {a.name: a for a in args}
    shown: dict[str, dict] = {}
    for axis in AXES:
        kind, text, picker = (by_name.get(f"{axis}_{part}") for part in ("type", "values", "values_dropdown"))
        if kind is None or text is None or picker is None or not isinstance(kind.default, int):
            continue
        choices = axis_choices(title, kind.default)
        shown[text.name] = {"visible": choices is None}
        shown[picker.name] = {"visible": choices is not None, "choices": choices or []}
    return shown


def _build_rows(args: list["ScriptArg"], id_prefix: str, shown: dict[str, dict]) -> list:
    """Each argument's control, in order; an axis's type, values and picker share a row, and
    consecutive checkboxes share rows of up to four, as A1111 lays them out."""
    built: list = []
    index = 0
    while index < len(args):
        run = _row_run(args, index)
        if len(run) > 1:
            with gr.Row():
                built.extend(build_control(a, f"{id_prefix}_{a.name}", **shown.get(a.name, {})) for a in run)
        else:
            built.append(build_control(run[0], f"{id_prefix}_{run[0].name}", **shown.get(run[0].name, {})))
        index += len(run)
    return built


def _row_run(args: list["ScriptArg"], start: int) -> list["ScriptArg"]:
    arg = args[start]
    if arg.kind == "checkbox":
        run = [arg]
        for other in args[start + 1 :]:
            if other.kind != "checkbox" or len(run) == CHECKBOXES_PER_ROW:
                break
            run.append(other)
        return run
    if arg.name.endswith("_type"):
        stem = arg.name[: -len("_type")]
        names = [f"{stem}_values", f"{stem}_values_dropdown"]
        run = [arg]
        for other, wanted in zip(args[start + 1 :], names):
            if other.name != wanted:
                break
            run.append(other)
        return run
    return [arg]


def _wire_axes(title: str, args: list["ScriptArg"], built: list, axis_choices: Callable[[str, int], list[str] | None], id_prefix: str) -> None:
    """X/Y/Z's pickers, as A1111: an axis with choices shows a multiselect dropdown of them
    (values already typed that are among the choices carry over), other axes the text box;
    "Use text inputs instead of dropdowns" shows the text box for every axis. A1111's "Swap
    X/Y axes" buttons (and Y/Z, X/Z) exchange two axes' types and values."""
    by_name = dict(zip((a.name for a in args), built))
    labels = {a.name: [str(c) for c in a.choices] for a in args if a.kind == "index"}
    csv = by_name.get("csv_mode")
    axes = [(by_name[f"{a}_type"], by_name[f"{a}_values"], by_name[f"{a}_values_dropdown"]) for a in AXES
            if all(f"{a}_{part}" in by_name for part in ("type", "values", "values_dropdown"))]
    if not axes:
        return

    def select_axis(type_index, text, picked, text_mode):
        choices = axis_choices(title, type_index) if isinstance(type_index, int) else None
        if choices is None:
            return gr.update(visible=True, value=text or ""), gr.update(visible=False, value=[])
        text_mode = bool(text_mode)
        if text_mode:
            if picked:
                text = ", ".join(p for p in picked if p in choices)
            return gr.update(visible=True, value=text), gr.update(visible=False, choices=choices, value=[])
        typed = [t.strip() for t in (text or "").split(",") if t.strip()]
        keep = [p for p in (picked or []) if p in choices] or [t for t in typed if t in choices]
        return gr.update(visible=False, value=""), gr.update(visible=True, choices=choices, value=keep)

    csv_inputs = [csv] if csv is not None else []
    for type_box, text, picker in axes:
        handler = select_axis if csv is not None else (lambda t, x, p: select_axis(t, x, p, False))
        type_box.change(handler, [type_box, text, picker, *csv_inputs], [text, picker], queue=False, api_name=False, show_progress="hidden")
    if csv is not None:
        def all_axes(text_mode, *values):
            out = []
            for i in range(len(axes)):
                out.extend(select_axis(*values[3 * i : 3 * i + 3], text_mode))
            return out

        csv.change(all_axes, [csv, *(c for axis in axes for c in axis)], [c for _t, text, picker in axes for c in (text, picker)],
                   queue=False, api_name=False, show_progress="hidden")

    names = [a for a in AXES if all(f"{a}_{part}" in by_name for part in ("type", "values", "values_dropdown"))]
    if len(names) < 2:
        return

    def swap(text_mode, first_type, first_text, first_picked, second_type, second_text, second_picked, first: str, second: str):
        """Each axis takes the other's type and values, its picker showing the new type's choices."""
        out = []
        for name, (kind, text, picked) in ((first, (second_type, second_text, second_picked)), (second, (first_type, first_text, first_picked))):
            choices = labels.get(f"{name}_type", [])
            label = choices[kind] if isinstance(kind, int) and 0 <= kind < len(choices) else gr.update()
            out.extend([label, *select_axis(kind, text, picked, text_mode)])
        return out

    with gr.Row(elem_id=f"{id_prefix}_swap_axes"):
        for first, second in (("x", "y"), ("y", "z"), ("x", "z")):
            if first not in names or second not in names:
                continue
            button = gr.Button(f"Swap {first.upper()}/{second.upper()} axes", size="sm", elem_id=f"{id_prefix}_swap_{first}{second}")
            pair = [by_name[f"{a}_{part}"] for a in (first, second) for part in ("type", "values", "values_dropdown")]
            handler = (lambda text_mode, *values, first=first, second=second: swap(text_mode, *values, first, second))
            button.click(handler, [csv if csv is not None else gr.State(False), *pair], pair, queue=False, api_name=False,
                         show_progress="hidden")


def build_script_menu(prefix: str, scripts: "ScriptRunner | None") -> ScriptPanel | None:
    """The Script menu of the txt2img or img2img tab (`prefix`) over the app's scripts; None
    when there are none. An axis's picker offers what its script's `axis_choices` gives (X/Y/Z
    plot's: the chosen axis type's choices)."""
    if scripts is None or not scripts.titles(prefix):
        return None
    env, img2img = scripts.env, prefix == "img2img"

    listed = scripts.registry.for_kind(prefix)
    by_title = {s.title: s for s in listed}

    def axis_choices(title: str, index: int) -> list[str] | None:
        return by_title[title].axis_choices(env, prefix, index) if title in by_title else None

    return build_script_panel(prefix, listed, env, img2img, axis_choices=axis_choices)
