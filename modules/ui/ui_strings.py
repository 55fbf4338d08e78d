"""The English strings a page shows, found two ways, so a localization can be checked for
completeness: the built page's components (labels, info lines, placeholders, buttons, tabs,
radio choices, static Markdown and HTML), and the messages the UI code pops up (`gr.Info`,
`gr.Warning`, `gr.Error` with a literal or an f-string).

An f-string message becomes a template: each `{expression}` turns into `{0}`, `{1}`, ... in
order, the form localization files use for text that carries values (see
modules/localization.py)."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

MESSAGE_CALLS = ("Info", "Warning", "Error")  # gr.Info(...), gr.Warning(...), gr.Error(...)
TEXT_PROPS = ("label", "info", "placeholder")  # on every component
VALUE_TYPES = ("button", "markdown", "html", "downloadbutton", "uploadbutton")  # whose value is shown text
CHOICE_TYPES = ("radio", "checkboxgroup")  # whose choices are shown as text (a dropdown's are values: not translated)


def template_of(node: ast.expr) -> str | None:
    """The message an expression makes: a literal as it is, an f-string with `{0}`, `{1}`, ...
    for its values; None for anything else (`str(exc)`: text that comes from elsewhere)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts, n = [], 0
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                parts.append("{%d}" % n)
                n += 1
        return "".join(parts)
    return None


def message_templates(files: Iterable[Path]) -> Iterator[tuple[str, Path, int]]:
    """(template, file, line) for each gr.Info/Warning/Error message written in these files."""
    for path in files:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MESSAGE_CALLS):
                continue
            if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "gr") or not node.args:
                continue
            text = template_of(node.args[0])
            if text and text.strip():
                yield text.strip(), Path(path), node.lineno


def component_strings(config: dict) -> dict[str, set[str]]:
    """Shown text in a built page's config (`Blocks.get_config_file()`): text -> where it shows."""
    found: dict[str, set[str]] = {}

    def add(text, where: str) -> None:
        if isinstance(text, str) and text.strip():
            found.setdefault(text.strip(), set()).add(where)

    for component in config.get("components", []):
        kind, props = component.get("type", ""), component.get("props", {})
        if props.get("visible") is False and kind not in ("tabitem", "accordion", "group", "column", "row"):
            pass  # hidden now, shown later: still counts
        for prop in TEXT_PROPS:
            add(props.get(prop), f"{kind}.{prop}")
        if kind in VALUE_TYPES or kind in ("tabitem", "accordion"):
            add(props.get("value") if kind in VALUE_TYPES else None, f"{kind}.value")
        if kind in CHOICE_TYPES:
            for choice in props.get("choices") or []:
                add(choice[0] if isinstance(choice, (list, tuple)) else choice, f"{kind}.choice")
    return found
