"""The English strings a page shows, found two ways, so a localization can be checked for
completeness: the built page's components (labels, info lines, placeholders, buttons, tabs,
radio choices, static Markdown and HTML), and the messages the UI code pops up (`gr.Info`,
`gr.Warning`, `gr.Error` with a literal or an f-string).

An f-string message becomes a template: each `{expression}` turns into `{0}`, `{1}`, ... in
order, the form localization files use for text that carries values (see
modules/localization.py)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path

from modules.options import REPO_DIR

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


VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
SKIPPED_TAGS = {"script", "style", "code", "pre", "textarea"}


class _HtmlText(HTMLParser):
    """The text nodes and translated attributes of an HTML fragment, as the page's translator
    sees them: nothing inside code, scripts or an element of class `notranslate`."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._open: list[tuple[str, bool]] = []  # (tag, skipped)

    def _skipping(self) -> bool:
        return any(skipped for _tag, skipped in self._open)

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        skipped = tag in SKIPPED_TAGS or "notranslate" in classes
        if not skipped and not self._skipping():
            self.found += [value for name, value in attrs if name in ("title", "placeholder", "aria-label") and value and value.strip()]
        if tag not in VOID_TAGS:
            self._open.append((tag, skipped))

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                break

    def handle_data(self, data):
        if not self._skipping() and data.strip():
            self.found.append(data.strip())


def html_texts(fragment: str) -> list[str]:
    """The pieces of shown text in an HTML value (each text node, title/placeholder attributes)."""
    parser = _HtmlText()
    parser.feed(fragment)
    parser.close()
    return parser.found


def needs_translation(text: str) -> bool:
    """Whether a string has words at all (numbers, emoji, punctuation and placeholders alone do not)."""
    return bool(re.search(r"[^\W\d_]", re.sub(r"\{\d+\}", "", text)))


def component_strings(config: dict) -> dict[str, set[str]]:
    """Shown text in a built page's config (`Blocks.get_config_file()`): text -> where it shows."""
    found: dict[str, set[str]] = {}

    def add(text, where: str) -> None:
        if isinstance(text, str) and text.strip():
            found.setdefault(text.strip(), set()).add(where)

    for component in config.get("components", []):
        kind, props = component.get("type", ""), component.get("props", {})
        if "notranslate" in (props.get("elem_classes") or []):
            continue  # user data: the page's translator leaves all of it alone
        for prop in TEXT_PROPS:
            add(props.get(prop), f"{kind}.{prop}")
        value = props.get("value") if kind in VALUE_TYPES else None
        if kind == "html" or kind == "markdown" and isinstance(value, str) and value.lstrip().startswith("<"):
            for text in html_texts(value) if isinstance(value, str) else ():  # translated node by node in the page
                add(text, f"{kind}.value")
        elif value is not None:
            add(value, f"{kind}.value")  # Markdown: its whole source is the key (modules/ui/localization.py)
        if kind in CHOICE_TYPES:
            for choice in props.get("choices") or []:
                add(choice[0] if isinstance(choice, (list, tuple)) else choice, f"{kind}.choice")
    return found


def source_files(root: Path = REPO_DIR) -> list[Path]:
    """The code whose messages the page can show: modules/, webui.py, the built-in extensions."""
    return sorted([*(root / "modules").rglob("*.py"), root / "webui.py", *(root / "extensions-builtin").rglob("*.py")])


def messages(root: Path = REPO_DIR) -> dict[str, str]:
    """Each message template -> where it is first written (file:line)."""
    found: dict[str, str] = {}
    for text, path, line in message_templates(source_files(root)):
        found.setdefault(text, f"{Path(path).relative_to(root)}:{line}")
    return found


def page_strings(data_dir: Path, extra_args: Iterable[str] = ()) -> dict[str, set[str]]:
    """The shown strings of the page an app over `data_dir` builds (its built-in and enabled
    extensions included). Builds the app and the page: seconds."""
    import webui
    from modules.options import parse_args
    from modules.ui.page import build_page

    app = webui.App.create(parse_args(["--data-dir", str(data_dir), "--disable-console-progressbars", *extra_args]))
    try:
        return component_strings(build_page(app).get_config_file())
    finally:
        app.queue.shutdown()
