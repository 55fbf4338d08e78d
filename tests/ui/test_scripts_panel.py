"""The Script menu's controls: one per argument kind, and the values the Generate handler gets
back as the chosen script's {name: value}."""

from __future__ import annotations

import gradio as gr
import pytest

from modules.scripts.args import ScriptArg, parse_args
from modules.scripts.base import Script, ScriptEnv
from modules.ui.scripts import NONE, build_script_panel

AXIS_TYPES = ("Nothing", "Seed", "Sampler")


class EveryKind(Script):
    title = "Every kind"

    def args(self, env, img2img):
        return [
            ScriptArg("mode", "Mode", "index", 1, choices=("first", "second", "third")),
            ScriptArg("joiner", "Joining char", "choice", "comma", choices=("comma", "space")),
            ScriptArg("picked", "Picked", "multiselect", [], choices=("a", "b", "c")),
            ScriptArg("line", "Line", "text", ""),
            ScriptArg("lines", "Lines", "textarea", ""),
            ScriptArg("strength", "Strength", "number", 0.5),
            ScriptArg("count", "Count", "int", 4),
            ScriptArg("margin", "Margin", "slider", 0, minimum=0, maximum=500, step=2),
            ScriptArg("fine", "Fine", "slider", 0.5, minimum=0, maximum=1, step=0.05),
            ScriptArg("legend", "Draw legend", "checkbox", True),
            ScriptArg("upload", "File", "file", None),
            ScriptArg("secret", "API only", "text", "kept", visible=False),
        ]


class Plot(Script):
    title = "X/Y/Z plot"

    def args(self, env, img2img):
        return [
            ScriptArg("x_type", "X type", "index", 1, choices=AXIS_TYPES),
            ScriptArg("x_values", "X values", "text", ""),
            ScriptArg("x_values_dropdown", "X values", "multiselect", [], visible=False),  # as A1111: made hidden
            ScriptArg("y_type", "Y type", "index", 0, choices=AXIS_TYPES),
            ScriptArg("y_values", "Y values", "text", ""),
            ScriptArg("y_values_dropdown", "Y values", "multiselect", [], visible=False),
            ScriptArg("csv_mode", "Use text inputs instead of dropdowns", "checkbox", False),
        ]


def axis_choices(title, index):
    return ["Euler", "DPM++ 2M"] if AXIS_TYPES[index] == "Sampler" else None


@pytest.fixture
def built():
    with gr.Blocks() as blocks:
        panel = build_script_panel("txt2img", [Plot(), EveryKind()], ScriptEnv(), img2img=False, axis_choices=axis_choices)
    return blocks, panel


@pytest.fixture
def panel(built):
    return built[1]


def values_for(panel, title, by_name):
    """The handler's values: the dropdown, then every control, with `by_name` for `title`'s."""
    values = [title]
    for t in panel.titles:
        for arg, control in zip(panel.specs[t], panel.controls[t]):
            values.append(by_name[arg.name] if t == title else control.value)
    return values


def test_each_kind_gets_its_control_and_the_hidden_one_none(panel):
    kinds = {arg.name: type(c).__name__ for arg, c in zip(panel.specs["Every kind"], panel.controls["Every kind"])}
    assert kinds == {
        "mode": "Radio", "joiner": "Radio", "picked": "Dropdown", "line": "Textbox", "lines": "Textbox", "strength": "Number",
        "count": "Number", "margin": "Slider", "fine": "Slider", "legend": "Checkbox", "upload": "File",
    }
    assert panel.controls["Every kind"][0].type == "index" and panel.controls["Every kind"][2].multiselect
    assert panel.dropdown.choices[0][0] == NONE and [c[0] for c in panel.dropdown.choices[1:]] == ["X/Y/Z plot", "Every kind"]
    assert len(panel.inputs) == 1 + 7 + 11


def test_args_from_maps_the_chosen_scripts_values_by_name(panel):
    given = {"mode": 2, "joiner": "space", "picked": ["b", "c"], "line": "one", "lines": "a\nb", "strength": 0.25, "count": 3,
             "margin": 10, "fine": 0.35, "legend": False, "upload": "--prompt \"cat\"\nplain\n".encode()}
    title, args = panel.args_from(values_for(panel, "Every kind", given))
    assert title == "Every kind"
    assert args == {**given, "upload": "--prompt \"cat\"\nplain\n"}  # the file's text
    # What the runner then reads: the hidden argument keeps its default, numbers take their kind.
    parsed = parse_args("Every kind", EveryKind().args(ScriptEnv(), False), args)
    assert parsed["secret"] == "kept" and parsed["count"] == 3 and parsed["margin"] == 10 and isinstance(parsed["margin"], int)
    assert parsed["mode"] == 2 and parsed["picked"] == ["b", "c"] and parsed["fine"] == 0.35


def test_none_and_empty_controls(panel):
    defaults = values_for(panel, NONE, {})
    assert panel.args_from(defaults) == (None, {})
    title, args = panel.args_from(values_for(panel, "Every kind", {
        "mode": 0, "joiner": "comma", "picked": None, "line": "", "lines": "", "strength": 0, "count": 0, "margin": 0, "fine": 0,
        "legend": True, "upload": None}))
    assert args["upload"] is None and args["picked"] == []
    with pytest.raises(ValueError, match="takes 19 values"):
        panel.args_from(defaults[:-1])


def change_handler(blocks, component):
    for fn in blocks.fns.values():
        if any(target == (component._id, "change") for target in fn.targets):
            return fn.fn
    raise AssertionError("no change handler")


def test_an_axis_with_choices_shows_its_picker_and_others_the_text_box(built):
    blocks, panel = built
    x_type, x_values, picker, *_y, _csv = panel.controls["X/Y/Z plot"]
    assert x_type.value == "Seed" and x_values.visible and not picker.visible  # A1111's default X axis: Seed
    handler = change_handler(blocks, x_type)
    text, pick = handler(2, "Euler, Heun", [], False)
    assert text["visible"] is False and pick["visible"] is True
    assert pick["choices"] == ["Euler", "DPM++ 2M"] and pick["value"] == ["Euler"]  # typed values among the choices carry over
    text, pick = handler(2, "", ["DPM++ 2M"], True)  # "Use text inputs instead of dropdowns"
    assert text["visible"] is True and text["value"] == "DPM++ 2M" and pick["visible"] is False
    text, pick = handler(1, "1,2", [], False)
    assert text["visible"] is True and pick["visible"] is False


def test_choosing_a_script_shows_only_its_group(built):
    blocks, panel = built
    updates = change_handler(blocks, panel.dropdown)("Every kind")
    assert [u["visible"] for u in updates] == [False, True]
    assert [u["visible"] for u in change_handler(blocks, panel.dropdown)(NONE)] == [False, False]


def test_swap_exchanges_two_axes_types_and_values(built):
    blocks, panel = built
    button = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "script_txt2img_xyz_plot_swap_xy")
    handler = next(fn.fn for fn in blocks.fns.values() if (button._id, "click") in fn.targets)
    # X: Seed "1,2"; Y: Sampler picking DPM++ 2M.
    x_type, x_text, x_pick, y_type, y_text, y_pick = handler(False, 1, "1,2", [], 2, "", ["DPM++ 2M"])
    assert x_type == "Sampler" and x_pick["value"] == ["DPM++ 2M"] and x_pick["visible"] and not x_text["visible"]
    assert y_type == "Seed" and y_text["value"] == "1,2" and y_text["visible"] and not y_pick["visible"]
