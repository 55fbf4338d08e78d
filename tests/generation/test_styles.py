import csv
import os
import threading

import pytest

import modules.generation.styles as styles_module
from modules.generation.styles import PromptStyle, StyleStore, apply_style_text


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))


def rows(path):
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def styles_csv(tmp_path):
    path = tmp_path / "styles.csv"
    write(path, 'name,prompt,negative_prompt\nphoto,"photo of {prompt}, 35mm",blurry\nsharp,"sharp, detailed",\n')
    return path


@pytest.mark.parametrize(
    "style, prompt, expected",
    [
        ("photo of {prompt}, 35mm", "a cat", "photo of a cat, 35mm"),
        ("{prompt} and {prompt}", "dog", "dog and dog"),
        ("{prompt}, art", "", ", art"),
        ("masterpiece", "a cat", "a cat, masterpiece"),
        ("masterpiece", "", "masterpiece"),
        ("masterpiece", "   ", "masterpiece"),
        ("", "a cat", "a cat"),
        ("", "", ""),
    ],
)
def test_apply_style_text(style, prompt, expected):
    assert apply_style_text(style, prompt) == expected


def test_apply_several_styles_in_order(styles_csv):
    store = StyleStore([styles_csv])
    assert store.apply("a cat", "ugly", ["photo", "sharp"]) == ("photo of a cat, 35mm, sharp, detailed", "ugly, blurry")
    assert store.apply("a cat", "ugly", ["sharp", "photo"]) == ("photo of a cat, sharp, detailed, 35mm", "ugly, blurry")
    assert store.apply("", "", ["sharp"]) == ("sharp, detailed", "")
    assert store.apply("a cat", "ugly", []) == ("a cat", "ugly")


def test_unknown_style_names_it_and_lists_known(styles_csv):
    with pytest.raises(ValueError) as err:
        StyleStore([styles_csv]).apply("a cat", "", ["photo", "nope"])
    assert "'nope'" in str(err.value) and "'photo'" in str(err.value) and "'sharp'" in str(err.value)


def test_listing_and_describe(styles_csv):
    store = StyleStore([styles_csv])
    assert store.names == ["photo", "sharp"]
    assert store.get("sharp") == PromptStyle("sharp", "sharp, detailed", "")
    assert store.get("nope") is None
    assert store.describe() == [
        {"name": "photo", "prompt": "photo of {prompt}, 35mm", "negative_prompt": "blurry"},
        {"name": "sharp", "prompt": "sharp, detailed", "negative_prompt": ""},
    ]


def test_missing_file_is_no_styles_and_save_creates_it(tmp_path):
    path = tmp_path / "sub" / "styles.csv"
    store = StyleStore([path])
    assert store.styles == [] and store.describe() == []
    store.save(PromptStyle("new", "a, b", 'say "hi"'))
    assert path.read_text(encoding="utf-8").splitlines()[0] == "name,prompt,negative_prompt"
    assert rows(path) == [{"name": "new", "prompt": "a, b", "negative_prompt": 'say "hi"'}]
    assert StyleStore([path]).styles == [PromptStyle("new", "a, b", 'say "hi"')]


def test_bom_and_crlf_file_reads(tmp_path):
    path = tmp_path / "styles.csv"
    write(path, 'name,prompt,negative_prompt\r\nwin,"x, {prompt}",nsfw\r\nmulti,"line one\r\nline two",\r\n', encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    store = StyleStore([path])
    assert store.styles == [PromptStyle("win", "x, {prompt}", "nsfw"), PromptStyle("multi", "line one\r\nline two", "")]
    store.save(PromptStyle("added", "y", ""))
    assert StyleStore([path]).names == ["win", "multi", "added"]


def test_legacy_text_column_and_short_rows(tmp_path):
    path = tmp_path / "styles.csv"
    write(path, "name,text\nold,vintage\n,nameless\nshort\n")
    store = StyleStore([path])
    assert store.styles == [PromptStyle("old", "vintage", ""), PromptStyle("short", "", "")]
    store.save(PromptStyle("old", "sepia", "modern"))
    assert rows(path) == [
        {"name": "old", "text": "sepia", "negative_prompt": "modern"},
        {"name": "", "text": "nameless", "negative_prompt": ""},
        {"name": "short", "text": "", "negative_prompt": ""},
    ]
    assert StyleStore([path]).get("old") == PromptStyle("old", "sepia", "modern")


def test_save_new_and_replace_keep_other_rows_order_and_extra_columns(tmp_path):
    path = tmp_path / "styles.csv"
    write(path, "name,prompt,negative_prompt,note\na,pa,na,first\nb,pb,nb,second\nc,pc,nc,third\n")
    store = StyleStore([path])
    store.save(PromptStyle("b", "new b", ""))
    store.save(PromptStyle("d", "pd", "nd"))
    assert rows(path) == [
        {"name": "a", "prompt": "pa", "negative_prompt": "na", "note": "first"},
        {"name": "b", "prompt": "new b", "negative_prompt": "", "note": "second"},
        {"name": "c", "prompt": "pc", "negative_prompt": "nc", "note": "third"},
        {"name": "d", "prompt": "pd", "negative_prompt": "nd", "note": ""},
    ]
    assert store.names == ["a", "b", "c", "d"] and store.get("b").prompt == "new b"


def test_save_replaces_duplicate_rows_once(tmp_path):
    path = tmp_path / "styles.csv"
    write(path, "name,prompt,negative_prompt\na,one,\nb,pb,\na,two,\n")
    store = StyleStore([path])
    assert store.names == ["a", "b"] and store.get("a").prompt == "two"
    store.save(PromptStyle("a", "three", ""))
    assert [(r["name"], r["prompt"]) for r in rows(path)] == [("a", "three"), ("b", "pb")]


def test_delete(styles_csv):
    store = StyleStore([styles_csv])
    store.delete("photo")
    assert store.names == ["sharp"]
    assert rows(styles_csv) == [{"name": "sharp", "prompt": "sharp, detailed", "negative_prompt": ""}]
    with pytest.raises(ValueError, match="'photo'"):
        store.delete("photo")


def test_hand_edit_is_seen_without_reload(styles_csv):
    store = StyleStore([styles_csv])
    assert store.names == ["photo", "sharp"]
    write(styles_csv, "name,prompt,negative_prompt\nhand,edited by hand,\n")
    assert store.names == ["hand"]
    styles_csv.unlink()
    assert store.styles == []


def test_unchanged_files_are_not_read_again(styles_csv, monkeypatch):
    store = StyleStore([styles_csv])
    store.styles
    monkeypatch.setattr(styles_module, "_read_table", lambda path: pytest.fail("re-read an unchanged file"))
    assert store.names == ["photo", "sharp"]


def test_two_files_later_overrides_and_saves_go_where_style_lives(tmp_path):
    first, second = tmp_path / "styles.csv", tmp_path / "more.csv"
    write(first, "name,prompt,negative_prompt\nshared,from first,\nonly1,p1,\n")
    write(second, "name,prompt,negative_prompt,extra\nonly2,p2,,x\nshared,from second,,y\n")
    store = StyleStore([first, second])
    assert store.names == ["shared", "only1", "only2"]
    assert store.apply("cat", "", ["shared"]) == ("cat, from second", "")

    store.save(PromptStyle("only2", "p2 edited", ""))
    store.save(PromptStyle("brand new", "bn", ""))
    assert [r["name"] for r in rows(first)] == ["shared", "only1", "brand new"]
    assert rows(second)[0] == {"name": "only2", "prompt": "p2 edited", "negative_prompt": "", "extra": "x"}

    store.save(PromptStyle("shared", "edited", ""))
    assert rows(first)[0]["prompt"] == "from first" and rows(second)[1]["prompt"] == "edited"

    store.delete("shared")  # from both files, so the first file's copy does not come back
    assert "shared" not in store.names
    assert [r["name"] for r in rows(first)] == ["only1", "brand new"]
    assert [r["name"] for r in rows(second)] == ["only2"]


def test_write_leaves_no_temp_file(styles_csv):
    store = StyleStore([styles_csv])
    store.save(PromptStyle("x", "y", "z"))
    store.delete("x")
    assert sorted(p.name for p in styles_csv.parent.iterdir()) == ["styles.csv"]


def test_failed_write_leaves_old_file_intact(styles_csv, monkeypatch):
    before = styles_csv.read_bytes()
    store = StyleStore([styles_csv])

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.save(PromptStyle("x", "y", "z"))
    with pytest.raises(OSError, match="disk full"):
        store.delete("photo")
    monkeypatch.undo()
    assert styles_csv.read_bytes() == before
    assert sorted(p.name for p in styles_csv.parent.iterdir()) == ["styles.csv"]
    assert store.names == ["photo", "sharp"]


def test_concurrent_saves_lose_nothing(tmp_path):
    path = tmp_path / "styles.csv"
    store = StyleStore([path])
    threads = [threading.Thread(target=store.save, args=(PromptStyle(f"s{i}", f"p{i}", ""),)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["name"] for r in rows(path)) == sorted(f"s{i}" for i in range(16))


def test_save_needs_a_name_and_a_file(tmp_path):
    with pytest.raises(ValueError):
        StyleStore([tmp_path / "s.csv"]).save(PromptStyle("", "p", ""))
    with pytest.raises(ValueError, match="No styles file"):
        StyleStore([]).save(PromptStyle("a", "p", ""))


def test_a_styles_file_from_a_windows_spreadsheet_still_reads(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_bytes("name,prompt,negative_prompt\ncafé,\"{prompt}, crème\",\r\n".encode("cp1252"))
    store = StyleStore([path])
    assert store.get("café").prompt == "{prompt}, crème"
    path.write_bytes(b"\x00\x01 not a csv \xff\xfe")
    store.reload()  # garbage: no styles, no exception
    assert isinstance(store.names, list)
