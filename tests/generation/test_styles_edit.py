"""Editing styles from the page: rename in place, and a read-only file left as it was."""

import os
import stat

import pytest

from modules.generation.styles import PromptStyle, ReadOnlyStylesFile, StyleStore
from tests.generation.test_styles import rows


@pytest.fixture
def styles_csv(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text("name,prompt,negative_prompt,note\na,pa,na,first\nb,\"pb, {prompt}\",nb,second\nc,pc,,third\n", encoding="utf-8")
    return path


def test_rename_keeps_prompts_position_and_extra_columns(styles_csv):
    store = StyleStore([styles_csv])
    store.rename("b", "  bee ")
    assert store.names == ["a", "bee", "c"]
    assert store.get("bee") == PromptStyle("bee", "pb, {prompt}", "nb") and store.get("b") is None
    assert rows(styles_csv)[1] == {"name": "bee", "prompt": "pb, {prompt}", "negative_prompt": "nb", "note": "second"}
    assert StyleStore([styles_csv]).names == ["a", "bee", "c"]  # on disk, not only in memory


def test_rename_refusals_change_nothing(styles_csv):
    before = styles_csv.read_bytes()
    store = StyleStore([styles_csv])
    with pytest.raises(ValueError, match="'c' exists already"):
        store.rename("a", "c")
    with pytest.raises(ValueError, match="'gone'"):
        store.rename("gone", "z")
    with pytest.raises(ValueError, match="needs a name"):
        store.rename("a", "  ")
    store.rename("a", "a")  # same name: nothing to do
    assert styles_csv.read_bytes() == before


def test_rename_in_the_file_the_style_lives_in_and_no_copy_left(tmp_path):
    first, second = tmp_path / "styles.csv", tmp_path / "more.csv"
    first.write_text("name,prompt,negative_prompt\nshared,from first,\nonly1,p1,\n", encoding="utf-8")
    second.write_text("name,prompt,negative_prompt\nonly2,p2,n2\nshared,from second,\n", encoding="utf-8")
    store = StyleStore([first, second])
    store.rename("only2", "two")
    assert [r["name"] for r in rows(first)] == ["shared", "only1"]
    assert rows(second)[0] == {"name": "two", "prompt": "p2", "negative_prompt": "n2"}

    store.rename("shared", "common")  # the second file's (effective) text, and no "shared" left in the first
    assert [r["name"] for r in rows(first)] == ["only1"]
    assert [(r["name"], r["prompt"]) for r in rows(second)] == [("two", "p2"), ("common", "from second")]
    assert store.names == ["only1", "two", "common"] and store.get("common").prompt == "from second"


def test_rename_sees_a_hand_edit_first(styles_csv):
    store = StyleStore([styles_csv])
    assert store.names == ["a", "b", "c"]
    styles_csv.write_text("name,prompt,negative_prompt\nhand,by hand,\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'a'"):
        store.rename("a", "x")
    store.rename("hand", "x")
    assert rows(styles_csv) == [{"name": "x", "prompt": "by hand", "negative_prompt": ""}]


def test_failed_rename_write_leaves_the_old_file(styles_csv, monkeypatch):
    before = styles_csv.read_bytes()
    store = StyleStore([styles_csv])
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        store.rename("a", "x")
    monkeypatch.undo()
    assert styles_csv.read_bytes() == before
    assert sorted(p.name for p in styles_csv.parent.iterdir()) == ["styles.csv"]
    assert store.names == ["a", "b", "c"]


def test_read_only_file_is_refused_with_a_sentence_and_left_alone(styles_csv):
    before = styles_csv.read_bytes()
    styles_csv.chmod(stat.S_IRUSR | stat.S_IRGRP)
    try:
        store = StyleStore([styles_csv])
        for change in (lambda: store.save(PromptStyle("new", "p", "")), lambda: store.save(PromptStyle("a", "edited", "")),
                       lambda: store.rename("a", "x"), lambda: store.delete("a")):
            with pytest.raises(ReadOnlyStylesFile, match="is read-only. Nothing was changed."):
                change()
        assert styles_csv.read_bytes() == before
        assert store.names == ["a", "b", "c"]
    finally:
        styles_csv.chmod(0o644)


def test_delete_checks_every_file_before_writing_any(tmp_path):
    first, second = tmp_path / "styles.csv", tmp_path / "more.csv"
    first.write_text("name,prompt,negative_prompt\nshared,one,\n", encoding="utf-8")
    second.write_text("name,prompt,negative_prompt\nshared,two,\n", encoding="utf-8")
    second.chmod(0o444)
    try:
        with pytest.raises(ReadOnlyStylesFile, match="more.csv"):
            StyleStore([first, second]).delete("shared")
        assert rows(first) == [{"name": "shared", "prompt": "one", "negative_prompt": ""}]
    finally:
        second.chmod(0o644)
