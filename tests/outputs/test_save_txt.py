"""A1111's save_txt: every saved picture (txt2img, grids, extras) gets `<same name>.txt` holding
its infotext, and the Gallery's trash keeps the two together. Also the Save button's copies
and log.csv (modules/outputs/save_button.py)."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from modules.generation.params import GenerationParams
from modules.jobs.extras_task import ExtrasService
from modules.jobs.queue import Job
from modules.outputs.gallery import GalleryIndex
from modules.outputs.save_button import LOG_FIELDS, Output, SaveFolder
from modules.outputs.saving import OutputWriter, SaveSettings
from tests.jobs.test_generation_task import cpu_service

DAY = datetime(2026, 12, 7, 12, 0)
INFOTEXT = "한국어 고양이, a cat ✨\nNegative prompt: blurry\nSteps: 4, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 8x8, Model hash: abc123, Model: demo"


def text_of(picture: Path) -> str:
    return picture.with_suffix(".txt").read_text(encoding="utf-8")


def test_writer_puts_the_infotext_beside_each_picture_and_grid(tmp_path):
    writer = OutputWriter(SaveSettings(tmp_path, save_txt=True), clock=lambda: DAY)
    picture = writer.save_image(Image.new("RGB", (8, 8), "red"), seed=1234, infotext=INFOTEXT)
    grid = writer.save_grid([Image.new("RGB", (8, 8))] * 2, infotext=INFOTEXT)
    assert text_of(picture) == INFOTEXT and text_of(grid) == INFOTEXT
    assert sorted(p.name for p in picture.parent.iterdir()) == ["00000-1234.png", "00000-1234.txt", "grid-0000.png", "grid-0000.txt"]


def test_no_text_file_when_off_or_without_an_infotext(tmp_path):
    off = OutputWriter(SaveSettings(tmp_path / "off"), clock=lambda: DAY).save_image(Image.new("RGB", (8, 8)), seed=1, infotext=INFOTEXT)
    bare = OutputWriter(SaveSettings(tmp_path / "bare", save_txt=True), clock=lambda: DAY).save_image(Image.new("RGB", (8, 8)), seed=2)
    assert not off.with_suffix(".txt").exists() and not bare.with_suffix(".txt").exists()


def test_the_text_file_is_written_even_when_the_picture_carries_no_infotext(tmp_path):
    writer = OutputWriter(SaveSettings(tmp_path, file_format="jpg", embed_infotext=False, save_txt=True), clock=lambda: DAY)
    picture = writer.save_image(Image.new("RGB", (8, 8)), seed=3, infotext=INFOTEXT)
    assert picture.suffix == ".jpg" and text_of(picture) == INFOTEXT


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_checkpoint, configs_dir):
    return cpu_service(tmp_path_factory.mktemp("data"), tiny_checkpoint, configs_dir, DAY)


def test_the_setting_reaches_txt2img_pictures_and_grids(service):
    params = GenerationParams.create(prompt="a red circle", width=64, height=64, steps=2, seed=21, batch_size=2)
    service.use_settings({"save_txt": True})
    try:
        result = service.run_txt2img(Job(id="task(t)", kind="test", task=lambda j: None), params)
    finally:
        service.use_settings({"save_txt": False})
    assert len(result.paths) == 2 and result.grid_path is not None
    for path, infotext in zip(result.paths, result.infotexts):
        assert text_of(path) == infotext and "Seed: " in infotext
    assert text_of(result.grid_path) == result.infotexts[0]
    later = service.run_txt2img(Job(id="task(u)", kind="test", task=lambda j: None), params.model_copy(update={"batch_size": 1}))
    assert not later.paths[0].with_suffix(".txt").exists()  # off again


def test_extras_pictures_get_their_text_file(tmp_path):
    extras = ExtrasService(tmp_path / "extras-images")
    extras.configure(save_txt=True)
    source = Image.new("RGB", (8, 8), "blue")
    source.info["parameters"] = INFOTEXT
    result = extras.run(None, [(source, None)], extras.params(upscaling_resize=1))
    assert text_of(result.paths[0]) == INFOTEXT


def test_trash_moves_the_text_file_with_its_picture(tmp_path):
    root = tmp_path / "outputs"
    writer = OutputWriter(SaveSettings(root / "txt2img-images", save_txt=True), clock=lambda: DAY)
    picture = writer.save_image(Image.new("RGB", (8, 8)), seed=5, infotext=INFOTEXT)
    index = GalleryIndex(root, tmp_path / "gallery.sqlite3")
    try:
        rel = picture.relative_to(root).as_posix()
        index.delete(rel)
        assert not picture.exists() and not picture.with_suffix(".txt").exists()
        assert [item.rel for item in index.trash()] == [rel]  # the picture, not its text, is what the trash lists
        assert index.undo_delete() == rel
        assert picture.exists() and text_of(picture) == INFOTEXT
    finally:
        index.close()


def read_log(folder: Path) -> list[list[str]]:
    with open(folder / "log.csv", encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def test_save_copies_the_file_as_it_is_and_logs_a1111_columns(tmp_path):
    source = tmp_path / "outputs" / "00007-1234.png"
    source.parent.mkdir()
    Image.new("RGB", (8, 6), "green").save(source, pnginfo=None)
    folder = SaveFolder(tmp_path / "log" / "images")
    first = folder.save([Output(INFOTEXT, source)], save_txt=True)
    second = folder.save([Output(INFOTEXT, source)])
    assert [p.name for p in first] == ["00007-1234.png", "00007-1234.txt"] and [p.name for p in second] == ["00007-1234-1.png"]
    assert first[0].read_bytes() == source.read_bytes() and text_of(first[0]) == INFOTEXT
    rows = read_log(folder.directory)
    assert rows[0] == list(LOG_FIELDS)  # the header once, then a row per copy
    assert rows[1] == ["한국어 고양이, a cat ✨", "1234", "8", "6", "Euler a", "7", "4", "00007-1234.png", "blurry", "demo", "abc123"]
    assert rows[2][7] == "00007-1234-1.png" and len(rows) == 3


def test_save_writes_a_picture_without_a_file_with_its_infotext(tmp_path):
    folder = SaveFolder(tmp_path / "saved")
    [path] = folder.save([Output(INFOTEXT, None, Image.new("RGB", (8, 8), "red"))])
    with Image.open(path) as saved:
        assert saved.info["parameters"] == INFOTEXT and saved.getpixel((0, 0)) == (255, 0, 0)
    assert path.name == "1234.png"


def test_save_refuses_nothing_and_a_vanished_picture(tmp_path):
    folder = SaveFolder(tmp_path / "saved")
    with pytest.raises(ValueError, match="generate a picture first"):
        folder.save([])
    with pytest.raises(ValueError, match="file is gone"):
        folder.save([Output(INFOTEXT, tmp_path / "missing.png")])
    assert not (folder.directory / "log.csv").exists()


def test_save_rewrites_an_older_a1111_log_to_todays_columns_and_never_joins_a_row_to_its_last_line(tmp_path):
    folder = SaveFolder(tmp_path / "log" / "images")
    folder.directory.mkdir(parents=True)
    old_header = ["prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename", "negative_prompt"]
    (folder.directory / "log.csv").write_text(",".join(old_header) + "\nold cat,1,512,512,Euler,7,20,00001-1.png,ugly", encoding="utf-8")
    folder.save([Output(INFOTEXT, None, Image.new("RGB", (8, 8), "red"))])
    rows = read_log(folder.directory)
    assert rows[0] == list(LOG_FIELDS)
    assert rows[1] == ["old cat", "1", "512", "512", "Euler", "7", "20", "00001-1.png", "ugly", "", ""]  # kept, under its names
    assert rows[2][:2] == ["한국어 고양이, a cat ✨", "1234"] and len(rows) == 3


def test_a_saved_copy_never_takes_another_pictures_text_file(tmp_path):
    folder = SaveFolder(tmp_path / "saved")
    png, jpg = tmp_path / "00007-1234.png", tmp_path / "00007-1234.jpg"
    Image.new("RGB", (8, 8), "red").save(png)
    Image.new("RGB", (8, 8), "blue").save(jpg)
    first = folder.save([Output("png's parameters\nSteps: 4, Seed: 1", png)], save_txt=True)
    second = folder.save([Output("jpg's parameters\nSteps: 4, Seed: 2", jpg)], save_txt=True)
    assert [p.name for p in second] == ["00007-1234-1.jpg", "00007-1234-1.txt"]
    assert first[1].read_text(encoding="utf-8").startswith("png's parameters")
