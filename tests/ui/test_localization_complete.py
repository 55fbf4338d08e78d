"""The shipped Korean localization covers the whole page: every label, info line, placeholder,
button, tab, radio choice and static text of the built page, every gr.Info/Warning/Error
message the code writes (as its `{n}` template), and the demo model's guide. A failure lists
what is missing (scripts/localization_missing.py ko_KR prints it as a skeleton to fill)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from modules.localization import PLACEHOLDER, lookup, placeholders, read_file
from modules.ui.ui_strings import needs_translation

REPO = Path(__file__).resolve().parents[2]
KOREAN = REPO / "configs" / "localizations" / "ko_KR.json"


@pytest.fixture(scope="module")
def korean() -> dict[str, str]:
    return read_file(KOREAN)  # ValueError (a failure) when it is not a JSON object of strings


@pytest.fixture(scope="module")
def page_strings(tmp_path_factory) -> dict[str, set[str]]:
    from modules.ui.ui_strings import page_strings

    return page_strings(tmp_path_factory.mktemp("l10n-page"))


def missing(table: dict[str, str], texts) -> list[str]:
    return sorted(t for t in texts if needs_translation(t) and lookup(table, t) is None)


def test_every_string_of_the_page_has_a_korean_entry(korean, page_strings):
    absent = missing(korean, page_strings)
    assert not absent, f"{len(absent)} strings of the page have no entry in {KOREAN.name}:\n" + "\n".join(
        f"  {text!r}  ({', '.join(sorted(page_strings[text]))})" for text in absent)


def test_every_message_has_a_korean_entry(korean):
    from modules.ui.ui_strings import messages

    found = messages()
    absent = sorted(t for t in found if needs_translation(t) and not korean.get(t))
    assert not absent, f"{len(absent)} gr.Info/Warning/Error messages have no entry in {KOREAN.name}:\n" + "\n".join(
        f"  {text!r}  ({found[text]})" for text in absent)


def test_the_demo_guide_has_a_korean_entry(korean):
    guide = json.loads((REPO / "configs" / "demo-shapes" / "webui.json").read_text(encoding="utf-8"))["guide"]
    assert korean.get(guide.strip()), "the demo model's guide (configs/demo-shapes/webui.json) has no entry"


def test_every_translation_keeps_the_places_of_its_values(korean):
    wrong = {k: v for k, v in korean.items() if v and placeholders(k) != placeholders(v)}
    assert not wrong, "entries whose {n} places differ from their translation's:\n" + "\n".join(f"  {k!r}: {v!r}" for k, v in wrong.items())
    assert all(PLACEHOLDER.sub("", k).strip() or not k for k in korean), "an entry that is only placeholders would match any text"


def _blocks(markdown: str) -> int:
    """How many paragraphs and list items a Markdown text shows (the page's translator pairs them)."""
    count = 0
    for para in (p.strip() for p in re.split(r"\n\s*\n", markdown) if p.strip()):
        lines = para.split("\n")
        count += len(lines) if all(re.match(r"\s*(?:[-*+]|\d+\.)\s", line) for line in lines) else 1
    return count


def test_markdown_entries_keep_their_paragraphs(korean):
    """A Markdown entry is translated in the page paragraph by paragraph (and list item by item):
    the translation must have as many, or the page shows the English."""
    guide = json.loads((REPO / "configs" / "demo-shapes" / "webui.json").read_text(encoding="utf-8"))["guide"].strip()
    markup = re.compile(r"\*\*|__|`|\]\(|(^|\s)[*_][^\s*_]|^#{1,6}\s|^\s*(?:[-*+]|\d+\.)\s|\n\s*\n", re.M)
    wrong = {k: v for k, v in korean.items() if v and k != guide and markup.search(k) and _blocks(k) != _blocks(v)}
    assert not wrong, "Markdown entries whose translation has another number of paragraphs or list items:\n" + "\n".join(
        f"  {k!r}: {v!r}" for k, v in wrong.items())
