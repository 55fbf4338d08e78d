"""The buttons under an output act on the right picture: the chosen one, else the first that is
not a grid; Save honours save_selected_only, save_txt and per-user folders; the download is a
file gradio may hand out."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from PIL import Image

from modules.outputs.save_button import SaveFolders
from modules.ui.output_buttons import OutputActions, chosen_index, chosen_output, downloadable, save_outputs
from modules.ui.send_to import SendTargets


def infotext(seed: int) -> str:
    return f"a cat\nSteps: 4, Sampler: Euler a, CFG scale: 7, Seed: {seed}, Size: 8x8"


@pytest.fixture
def shown(tmp_path):
    """A txt2img result as the panel holds it: the grid, then two saved pictures."""
    folder = tmp_path / "outputs" / "txt2img-images" / "2026-12-07"
    folder.mkdir(parents=True)
    files = []
    for name, colour in (("grid-0000.png", "white"), ("00000-1.png", "red"), ("00001-2.png", "blue")):
        Image.new("RGB", (8, 8), colour).save(folder / name)
        files.append(str(folder / name))
    cache = [(f"/tmp/gradio/cache/{Path(f).name}", None) for f in files]  # what the gallery's value names
    return cache, [infotext(1), infotext(1), infotext(2)], files


def test_the_first_picture_not_the_grid_unless_one_is_chosen(shown):
    entries, texts, files = shown
    assert chosen_index(entries, files, -1) == 1
    assert chosen_index(entries, files, 0) == 0  # the grid, when the user picked it
    assert chosen_index(entries, files, 2) == 2
    assert chosen_index(entries[:1], [None], -1) == 0  # a picture never saved is no grid
    assert chosen_index([], [], -1) == -1
    assert chosen_output(entries, texts, files, 2) == (infotext(2), entries[2][0])


def test_nothing_to_send_is_a_sentence():
    with pytest.raises(gr.Error, match="generate a picture first"):
        chosen_output(None, [], [], -1)


class Settings(dict):
    pass


def actions(tmp_path, logins=False, **values) -> OutputActions:
    settings = Settings({"outdir_save": "log/images", "save_txt": False, "save_selected_only": True, **values})
    return OutputActions(settings, tmp_path, SaveFolders(), send=None, logins=logins)


def test_save_the_chosen_picture_only_or_all_but_the_grid(shown, tmp_path):
    entries, texts, files = shown
    [one] = save_outputs(actions(tmp_path), entries, texts, files, 2)
    assert one == tmp_path / "log" / "images" / "00001-2.png" and one.read_bytes() == Path(files[2]).read_bytes()
    saved = save_outputs(actions(tmp_path, save_selected_only=False, save_txt=True), entries, texts, files, -1)
    assert [p.name for p in saved] == ["00000-1.png", "00000-1.txt", "00001-2-1.png", "00001-2-1.txt"]
    with open(tmp_path / "log" / "images" / "log.csv", encoding="utf-8", newline="") as handle:
        assert [row[1] for row in csv.reader(handle)] == ["seed", "2", "1", "2"]


def test_save_without_a_file_uses_the_shown_picture_and_logged_in_users_get_their_folder(tmp_path):
    shown_picture = tmp_path / "cache" / "image.png"
    shown_picture.parent.mkdir()
    Image.new("RGB", (8, 8), "red").save(shown_picture)
    request = SimpleNamespace(username="Alice")
    [path] = save_outputs(actions(tmp_path, logins=True), [(str(shown_picture), None)], [infotext(7)], [None], -1, request)
    assert path.parent == tmp_path / "log" / "images" / "Alice"
    with Image.open(path) as copy:
        assert copy.info["parameters"] == infotext(7)
    with pytest.raises(ValueError, match="generate a picture first"):
        save_outputs(actions(tmp_path), [], [], [], -1)


def test_downloads_outside_gradios_folders_are_copied_into_its_upload_folder(tmp_path, monkeypatch):
    inside = tmp_path / "a.png"
    inside.write_bytes(b"x")
    assert downloadable([inside], ()) == [str(inside)]  # the temp folder is served as it is
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = elsewhere / "b.png"
    outside.write_bytes(b"y")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path / "nowhere"))
    monkeypatch.chdir(uploads)
    monkeypatch.setattr("gradio.utils.get_upload_folder", lambda: str(uploads))
    [copy] = downloadable([outside], ())
    assert Path(copy).read_bytes() == b"y" and Path(copy).is_relative_to(uploads)


def test_send_to_inpaint_fills_the_editor_and_opens_the_inpaint_mode():
    from modules.ui.img2img import MODE_IDS

    paste = SimpleNamespace(outputs=["prompt"], updates=lambda text: [gr.update(value=text.split("\n")[0])])
    img2img = SimpleNamespace(paste=paste, image="image", inpaint="editor", mode="mode", inpaint_controls="controls", mode_tabs="tabs")
    send = SendTargets("page_tabs", SimpleNamespace(outputs=[]), img2img)
    assert send.outputs("inpaint") == ["prompt", "editor", "mode", "controls", "tabs", "page_tabs"]
    prompt, editor, mode, controls, mode_tab, tab = send.updates("inpaint", infotext(3), "/tmp/x.png")
    assert prompt["value"] == "a cat" and editor == {"background": "/tmp/x.png", "layers": [], "composite": "/tmp/x.png"}
    assert (mode, controls["visible"], mode_tab.selected, tab.selected) == (2, True, MODE_IDS[2], "img2img")


def test_the_folder_button_finds_a_picture_past_the_galleries_first_page(tmp_path):
    """📂 on a picture with more newer pictures in its folder than one page holds: the Gallery
    opens on the page that has it, with it picked."""
    import os
    import time

    from modules.outputs.gallery import GalleryIndex
    from modules.ui.gallery import build_gallery_tab

    folder = tmp_path / "outputs" / "txt2img-images" / "2026-12-07"
    folder.mkdir(parents=True)
    for n in range(8):  # 00000 is the oldest: newest first, it is on the last of three pages
        path = folder / f"{n:05d}-{n}.png"
        Image.new("RGB", (8, 8), (n * 30, 0, 0)).save(path)
        os.utime(path, (time.time() - 100 + n, time.time() - 100 + n))
    index = GalleryIndex(tmp_path / "outputs", tmp_path / "gallery.sqlite3")
    send = SimpleNamespace(buttons=lambda prefix: {}, wire=lambda *a: None)
    try:
        with gr.Blocks():
            with gr.Tab("Gallery") as tab:
                gallery = build_gallery_tab(index, lambda: 3, send, tab)
        shown = gallery.reveal(str(folder / "00000-0.png"), None)
        images, rels, page = shown[0], shown[1], shown[2]
        assert page == 3 and "txt2img-images/2026-12-07/00000-0.png" in rels
        assert images.selected_index == rels.index("txt2img-images/2026-12-07/00000-0.png")
    finally:
        index.close()


def test_send_to_names_the_pictures_model_only_when_it_is_not_the_one_in_use(monkeypatch):
    from modules.ui.common import PasteTarget

    said = []
    monkeypatch.setattr(gr, "Info", lambda message, **kw: said.append(message))
    target = PasteTarget({"prompt": "prompt box", "steps": "steps slider"}, "overrides", active_model=lambda: "demo-shapes-64px.safetensors [4654ebe734]")
    made = "a cat\nSteps: 4, Sampler: Euler a, CFG scale: 7, Seed: 3, Size: 64x64, Model hash: {}, Model: {}"
    target.updates(made.format("4654ebe734", "demo-shapes-64px"))
    assert not any("made with model" in m for m in said), said
    target.updates(made.format("0123456789", "other-model"))
    assert any("made with model" in m for m in said), said
