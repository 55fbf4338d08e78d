"""The styles editor's handlers over a real styles.csv, without a browser; the editor's wiring
between the tabs' Styles menus; the notification routes."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import gradio as gr
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modules.generation.styles import StyleStore
from modules.ui.notifications import build_notifications_router
from modules.ui.styles import build_styles, delete_style, kept_choices, rename_style, save_style


def rows(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return [(r["name"], r["prompt"], r["negative_prompt"]) for r in csv.DictReader(handle)]


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text("name,prompt,negative_prompt\nphoto,\"photo of {prompt}\",blurry\nsharp,sharp,\n", encoding="utf-8")
    return StyleStore([path])


def test_save_creates_then_overwrites(store):
    path = store.paths[0]
    assert save_style(store, "  new one ", "a, b", "c") == "new one"
    assert save_style(store, "photo", "photo, {prompt}", "") == "photo"
    assert rows(path) == [("photo", "photo, {prompt}", ""), ("sharp", "sharp", ""), ("new one", "a, b", "c")]


def test_rename_keeps_the_text_and_leaves_no_copy(store):
    assert rename_style(store, "photo", "picture") == "picture"
    assert rows(store.paths[0]) == [("picture", "photo of {prompt}", "blurry"), ("sharp", "sharp", "")]


def test_delete_and_a_declined_confirmation(store):
    assert delete_style(store, "") is False  # the browser's confirm said no
    assert delete_style(store, "sharp") is True
    assert rows(store.paths[0]) == [("photo", "photo of {prompt}", "blurry")]


@pytest.mark.parametrize("action, message", [
    (lambda s: save_style(s, "  ", "p", ""), "Give the style a name first."),
    (lambda s: rename_style(s, "", "x"), "Pick the style to rename first."),
    (lambda s: rename_style(s, "photo", " "), "Type the style's new name first."),
    (lambda s: rename_style(s, "photo", "sharp"), "A style named 'sharp' exists already: pick another name, or delete that style first."),
    (lambda s: rename_style(s, "gone", "x"), "The style 'gone' is no longer in the styles file: it was deleted or renamed meanwhile."),
    (lambda s: delete_style(s, "gone"), "The style 'gone' is no longer in the styles file: it was deleted or renamed meanwhile."),
    (lambda s: save_style(None, "a", "p", ""), "No styles file is configured."),
])
def test_mistakes_are_sentences_and_change_nothing(store, action, message):
    before = store.paths[0].read_bytes()
    with pytest.raises(gr.Error) as err:
        action(store)
    assert err.value.message == message
    assert store.paths[0].read_bytes() == before


def test_a_read_only_file_is_named_and_left_alone(store):
    path = store.paths[0]
    before = path.read_bytes()
    path.chmod(0o444)
    try:
        for action in (lambda: save_style(store, "photo", "x", ""), lambda: rename_style(store, "photo", "x"), lambda: delete_style(store, "photo")):
            with pytest.raises(gr.Error) as err:
                action()
            assert err.value.message == f"The styles file {path} is read-only. Nothing was changed."
    finally:
        path.chmod(0o644)
    assert path.read_bytes() == before


def test_a_style_deleted_on_disk_meanwhile_is_reported(store):
    path = store.paths[0]
    assert store.names == ["photo", "sharp"]
    path.write_text("name,prompt,negative_prompt\nsharp,sharp,\n", encoding="utf-8")  # another program removed "photo"
    with pytest.raises(gr.Error, match="no longer in the styles file"):
        rename_style(store, "photo", "x")
    assert rows(path) == [("sharp", "sharp", "")]


def test_the_menus_picks_follow_a_rename_and_a_delete():
    assert kept_choices(["a", "b"], ["a2", "b"], ("a", "a2")) == ["a2", "b"]
    assert kept_choices(["a", "b", "c"], ["a", "c"]) == ["a", "c"]
    assert kept_choices(None, ["a"]) == []


def test_each_tabs_editor_refreshes_the_other_tabs_menu(store):
    service = SimpleNamespace(libraries=SimpleNamespace(styles=store))
    with gr.Blocks() as page:
        for prefix in ("txt2img", "img2img"):
            build_styles(prefix, service, gr.Textbox(), gr.Textbox())
    config = page.get_config_file()
    ids = {c.get("props", {}).get("elem_id"): c["id"] for c in config["components"]}
    links = {(t[0], d["outputs"][0]) for d in config["dependencies"] for t in d["targets"] if t[1] == "change" and len(d["outputs"]) == 1}
    assert (ids["txt2img_styles_edit_version"], ids["img2img_styles"]) in links
    assert (ids["img2img_styles_edit_version"], ids["txt2img_styles"]) in links
    assert config["components"][[c["id"] for c in config["components"]].index(ids["txt2img_styles"])]["props"]["choices"]


def test_notification_settings_and_sound_routes(tmp_path):
    settings = {"notification_audio": True, "notification_volume": 40}
    api = FastAPI()
    api.include_router(build_notifications_router(SimpleNamespace(settings=settings, paths=SimpleNamespace(data_dir=tmp_path))))
    client = TestClient(api)
    assert client.get("/internal/notification").json() == {"audio": True, "volume": 40, "sound": None}
    missing = client.get("/internal/notification.mp3")
    assert missing.status_code == 404 and missing.json()["detail"] == "There is no notification.mp3 in the data folder."

    (tmp_path / "notification.mp3").write_bytes(b"ID3 fake mp3")
    settings.update(notification_audio=False, notification_volume=100)  # read at each request: no restart
    assert client.get("/internal/notification").json() == {"audio": False, "volume": 100, "sound": "internal/notification.mp3"}
    sound = client.get("/internal/notification.mp3")
    assert sound.status_code == 200 and sound.content == b"ID3 fake mp3" and sound.headers["content-type"] == "audio/mpeg"
