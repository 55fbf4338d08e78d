"""Saved files land where A1111 users look for them, with the infotext inside, and are
never half-written or overwritten."""

from __future__ import annotations

import os
import threading
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from modules.outputs.infotext import read_infotext
from modules.outputs.naming import NameValues
from modules.outputs.saving import (
    OutputWriter,
    SaveSettings,
    make_grid,
    next_sequence_number,
    sanitize_filename_part,
)

DAY = datetime(2024, 7, 27, 23, 59)
INFOTEXT = "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 8x8"


def writer(directory: Path, clock=lambda: DAY, **settings) -> OutputWriter:
    return OutputWriter(SaveSettings(directory=directory, **settings), clock=clock)


def image(color="red", size=(8, 8), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def test_png_in_date_folder_with_parameters_chunk(tmp_path):
    path = writer(tmp_path).save_image(image(), seed=1234, prompt="a cat", infotext=INFOTEXT)
    assert path == tmp_path / "2024-07-27" / "00000-1234.png"
    with Image.open(path) as saved:
        assert saved.format == "PNG"
        assert saved.text["parameters"] == INFOTEXT
    assert read_infotext(path) == INFOTEXT


def test_non_latin1_infotext_goes_to_itxt(tmp_path):
    text = "猫\nSteps: 20, Seed: 1, CFG scale: 7"
    path = writer(tmp_path).save_image(image(), seed=1, infotext=text)
    assert b"iTXt" in path.read_bytes()
    with Image.open(path) as saved:
        assert saved.text["parameters"] == text


def test_counter_continues_and_survives_restart(tmp_path):
    first = writer(tmp_path)
    names = [first.save_image(image(), seed=s).name for s in (10, 11)]
    restarted = writer(tmp_path)  # a new process would build a new writer
    names.append(restarted.save_image(image(), seed=12).name)
    assert names == ["00000-10.png", "00001-11.png", "00002-12.png"]


def test_counter_uses_highest_leading_number_in_folder(tmp_path):
    folder = tmp_path / "2024-07-27"
    folder.mkdir()
    for name in ("00007-1.png", "00003-2.jpg", "notes.txt", "grid-0042.png", ".hidden-00099.png"):
        (folder / name).write_bytes(b"x")
    assert next_sequence_number(folder) == 8
    assert writer(tmp_path).save_image(image(), seed=5).name == "00008-5.png"


def test_new_day_starts_new_folder_at_zero(tmp_path):
    clock_value = [DAY]
    w = writer(tmp_path, clock=lambda: clock_value[0])
    w.save_image(image(), seed=1)
    w.save_image(image(), seed=2)
    clock_value[0] = datetime(2024, 7, 28, 0, 1)
    path = w.save_image(image(), seed=3)
    assert path == tmp_path / "2024-07-28" / "00000-3.png"


def test_without_date_folders_name_has_sanitised_prompt(tmp_path):
    w = writer(tmp_path, save_to_dirs=False)
    path = w.save_image(image(), seed=1234567, prompt=' a photo: of a "cat"/dog?.. ')
    assert path == tmp_path / '00000-1234567-a photo_ of a _cat__dog_.png'


def test_sanitize_rules():
    assert sanitize_filename_part("#<>:\"/\\|?*\n\r\t") == "_" * 13
    assert sanitize_filename_part("  lead and trail . . ") == "lead and trail"
    assert len(sanitize_filename_part("x" * 500)) == 128
    assert sanitize_filename_part("a b", replace_spaces=True) == "a_b"


def test_long_multibyte_prompt_fits_file_name_limit(tmp_path):
    path = writer(tmp_path, save_to_dirs=False).save_image(image(), seed=1, prompt="猫" * 300)
    assert path.exists()
    assert len(path.name.encode("utf-8")) <= 255


@pytest.mark.parametrize("fmt,pil_format", [("jpg", "JPEG"), ("webp", "WEBP")])
def test_jpeg_and_webp_carry_user_comment(tmp_path, fmt, pil_format):
    text = "猫 cat\nSteps: 20, Seed: 1, CFG scale: 7"
    path = writer(tmp_path, file_format=fmt).save_image(image(mode="RGBA"), seed=1, infotext=text)
    assert path.suffix == f".{fmt}"
    with Image.open(path) as saved:
        assert saved.format == pil_format
        raw = saved.getexif().get_ifd(0x8769)[0x9286]
    assert raw == b"UNICODE\0" + text.encode("utf-16-be")
    assert read_infotext(path) == text


def test_jpeg_with_too_long_infotext_still_saves(tmp_path):
    path = writer(tmp_path, file_format="jpg").save_image(image(), seed=1, infotext="x" * 40000)
    with Image.open(path) as saved:
        assert saved.format == "JPEG"


def test_infotext_embedding_can_be_turned_off(tmp_path):
    path = writer(tmp_path, embed_infotext=False).save_image(image(), seed=1, infotext=INFOTEXT)
    assert read_infotext(path) is None


def test_unknown_format_rejected(tmp_path):
    with pytest.raises(ValueError, match="Unsupported image format"):
        SaveSettings(directory=tmp_path, file_format="bmp")


def test_failed_save_leaves_no_file_and_no_temp(tmp_path, monkeypatch):
    w = writer(tmp_path)
    w.save_image(image(), seed=1)
    real_save = Image.Image.save

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        w.save_image(image(), seed=2)
    monkeypatch.setattr(Image.Image, "save", real_save)

    folder = tmp_path / "2024-07-27"
    assert sorted(os.listdir(folder)) == ["00000-1.png"]
    # and the number was not burnt: the next save takes 00001
    assert w.save_image(image(), seed=3).name == "00001-3.png"


def test_final_name_only_appears_complete(tmp_path, monkeypatch):
    """While the encoder is mid-way, nothing with a final-looking name exists."""
    w = writer(tmp_path)
    seen_during_write = []
    real_save = Image.Image.save

    def watching_save(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        seen_during_write.append(sorted(n for n in os.listdir(tmp_path / "2024-07-27") if not n.startswith(".")))

    monkeypatch.setattr(Image.Image, "save", watching_save)
    path = w.save_image(image(), seed=1, infotext=INFOTEXT)
    assert seen_during_write == [[]]
    assert read_infotext(path) == INFOTEXT


def test_saved_file_is_not_private(tmp_path):
    path = writer(tmp_path).save_image(image(), seed=1)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_two_threads_get_distinct_numbers(tmp_path):
    w = writer(tmp_path)
    paths: list[Path] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(target: OutputWriter, base: int):
        try:
            barrier.wait()
            for i in range(20):
                paths.append(target.save_image(image(), seed=base + i))
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(w, 0)), threading.Thread(target=work, args=(w, 100))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    numbers = sorted(int(p.name.split("-")[0]) for p in paths)
    assert numbers == list(range(40))
    files = [n for n in os.listdir(tmp_path / "2024-07-27")]
    assert len(files) == 40 and not any(n.startswith(".") for n in files)


def test_separate_writers_never_overwrite_each_other(tmp_path):
    """Two writers (or processes) on one folder: the same name is never clobbered, the
    loser of a race takes the next number."""
    a, b = writer(tmp_path), writer(tmp_path)
    barrier = threading.Barrier(2)
    paths: list[Path] = []

    def work(target: OutputWriter, color: str):
        barrier.wait()
        for _ in range(15):
            paths.append(target.save_image(image(color), seed=7))

    threads = [threading.Thread(target=work, args=(a, "red")), threading.Thread(target=work, args=(b, "blue"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 30
    assert len(os.listdir(tmp_path / "2024-07-27")) == 30


@pytest.mark.parametrize(
    "count,expected_rows_cols",
    [(1, (1, 1)), (2, (1, 2)), (3, (2, 2)), (4, (2, 2)), (5, (2, 3)), (6, (2, 3)), (8, (3, 3)), (9, (3, 3)), (10, (3, 4))],
)
def test_grid_shape(count, expected_rows_cols):
    rows, cols = expected_rows_cols
    grid = make_grid([image(size=(10, 6)) for _ in range(count)])
    assert grid.size == (cols * 10, rows * 6)


def test_grid_explicit_rows_and_placement():
    colors = ["red", "lime", "blue"]
    grid = make_grid([image(c, (4, 4)) for c in colors], rows=1)
    assert grid.size == (12, 4)
    assert [grid.getpixel((x, 0)) for x in (0, 4, 8)] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    assert make_grid([image() for _ in range(2)], rows=5).size == (8, 16)  # rows capped at n
    with pytest.raises(ValueError):
        make_grid([])


def test_grid_saved_as_grid_nnnn_only_when_multiple(tmp_path):
    grids = writer(tmp_path / "txt2img-grids")
    assert grids.save_grid([image()], infotext=INFOTEXT) is None
    first = grids.save_grid([image(), image()], infotext=INFOTEXT)
    second = writer(tmp_path / "txt2img-grids").save_grid([image()] * 4, infotext=INFOTEXT)
    assert first == tmp_path / "txt2img-grids" / "2024-07-27" / "grid-0000.png"
    assert second.name == "grid-0001.png"
    assert read_infotext(first) == INFOTEXT
    with Image.open(second) as saved:
        assert saved.size == (16, 16)


def test_falls_back_to_rename_without_hard_links(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    w = writer(tmp_path)
    paths = [w.save_image(image(), seed=s, infotext=INFOTEXT) for s in (1, 2)]
    assert [p.name for p in paths] == ["00000-1.png", "00001-2.png"]
    assert read_infotext(paths[1]) == INFOTEXT
    assert sorted(os.listdir(tmp_path / "2024-07-27")) == ["00000-1.png", "00001-2.png"]


def test_save_as_keeps_the_name_and_never_replaces_a_file(tmp_path):
    writer = OutputWriter(SaveSettings(tmp_path, "png", save_to_dirs=False))
    (tmp_path / "cat.png").write_bytes(b"the user's own file")
    first = writer.save_as(Image.new("RGB", (8, 8), (255, 0, 0)), "cat", infotext="a")
    second = writer.save_as(Image.new("RGB", (8, 8), (0, 255, 0)), "cat", infotext="b")
    assert (first.name, second.name) == ("cat-1.png", "cat-2.png")
    assert (tmp_path / "cat.png").read_bytes() == b"the user's own file"
    assert Image.open(second).info["parameters"] == "b" and Image.open(second).getpixel((0, 0)) == (0, 255, 0)
    assert writer.save_as(Image.new("RGB", (8, 8)), "dog").name == "dog.png"


def test_folder_and_name_use_the_same_moment(tmp_path):
    """A save that straddles midnight must not put a day-28 name into the day-27 folder."""
    ticks = iter([datetime(2024, 7, 27, 23, 59, 59), datetime(2024, 7, 28, 0, 0, 1)])
    w = OutputWriter(SaveSettings(tmp_path, filename_pattern="[datetime<%Y-%m-%d>]"), clock=lambda: next(ticks))
    path = w.save_image(image(), seed=1)
    assert path == tmp_path / "2024-07-27" / "00000-2024-07-27.png"


def test_grid_follows_directory_pattern_but_keeps_short_name(tmp_path):
    settings = SaveSettings(tmp_path, directory_pattern="[date]/[model_name]", filename_pattern="[seed]-[model_name]")
    grid = OutputWriter(settings, clock=lambda: DAY).save_grid([image(), image()], values=NameValues(seed=3, model_name="tiny"))
    assert grid == tmp_path / "2024-07-27" / "tiny" / "grid-0000.png"


def test_each_logged_in_user_gets_a_folder_when_log_ins_are_on(tmp_path):
    """Per-user outputs: <dir>/<user>/<date>/..., also without date folders, and a name that
    tries to climb out of the folder stays inside it."""
    dated = OutputWriter(SaveSettings(tmp_path, user_folders=True), clock=lambda: DAY)
    assert dated.save_image(image(), seed=1, values=NameValues(user="alice")) == tmp_path / "alice" / "2024-07-27" / "00000-1.png"
    assert dated.save_image(image(), seed=2, values=NameValues(user="../bob")) == tmp_path / "_bob" / "2024-07-27" / "00000-2.png"
    assert dated.save_image(image(), seed=3) == tmp_path / "2024-07-27" / "00000-3.png"  # no log-in: no user folder
    flat = OutputWriter(SaveSettings(tmp_path / "flat", save_to_dirs=False, user_folders=True), clock=lambda: DAY)
    assert flat.save_image(image(), seed=4, prompt="cat", values=NameValues(user="alice")).parent == tmp_path / "flat" / "alice"
    placed = OutputWriter(SaveSettings(tmp_path / "placed", directory_pattern="[date]/[user]", user_folders=True), clock=lambda: DAY)
    assert placed.save_image(image(), seed=5, values=NameValues(user="alice")).parent == tmp_path / "placed" / "2024-07-27" / "alice"
    off = OutputWriter(SaveSettings(tmp_path / "off"), clock=lambda: DAY)
    assert off.save_image(image(), seed=6, values=NameValues(user="alice")).parent == tmp_path / "off" / "2024-07-27"
