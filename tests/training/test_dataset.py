"""The training folder as a user fills it: captions, templates, repeats folders, the errors
they see, the shared-server refusal, buckets, the pictures the trainer gets, caption
processing and the epoch plan."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.network import INSECURE_FLAG, AccessRefused
from modules.training.dataset import (DatasetError, Sample, bucket_for, check_folder_allowed, load_picture, make_buckets,
                                      plan_epoch, process_caption, read_templates, render_template, scan_folder)

REPO = Path(__file__).resolve().parents[2]


def picture(path: Path, size=(32, 32), colour=(0, 128, 128), caption: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- captions

def test_captions_come_from_the_txt_beside_each_picture_in_natural_order(tmp_path):
    picture(tmp_path / "img10.png", caption="a teal circle\nsecond line ignored\n")
    picture(tmp_path / "img2.jpg", size=(48, 24), caption="\n  a teal square  \n")
    picture(tmp_path / "sub" / "img1.webp", caption="a teal star")
    samples = scan_folder(tmp_path)
    assert [(s.path.relative_to(tmp_path).as_posix(), s.caption, s.size) for s in samples] == [
        ("img2.jpg", "a teal square", (48, 24)),
        ("img10.png", "a teal circle", (32, 32)),
        ("sub/img1.webp", "a teal star", (32, 32)),
    ]


def test_other_caption_extension(tmp_path):
    picture(tmp_path / "a.png")
    (tmp_path / "a.caption").write_text("teal", encoding="utf-8")
    assert scan_folder(tmp_path, caption_extension=".caption")[0].caption == "teal"
    assert scan_folder(tmp_path, caption_extension="caption")[0].caption == "teal"


def test_template_with_trigger_and_filewords(tmp_path):
    picture(tmp_path / "a.png", caption="a circle")
    picture(tmp_path / "00012-big_red-square.png")  # no caption file: the name is the filewords
    samples = scan_folder(tmp_path, caption_template="a photo of [trigger], [filewords]", trigger_word="tealish")
    assert [s.caption for s in samples] == ["a photo of tealish, big red square", "a photo of tealish, a circle"]
    styled = scan_folder(tmp_path, caption_template="[name] style", trigger_word="tealish")
    assert [s.caption for s in styled] == ["tealish style", "tealish style"]


def test_template_with_trigger_but_no_trigger_word_is_refused(tmp_path):
    picture(tmp_path / "a.png", caption="x")
    with pytest.raises(DatasetError, match=r"\[trigger\].*no trigger word"):
        scan_folder(tmp_path, caption_template="[trigger] style")


def test_trigger_word_without_template(tmp_path):
    picture(tmp_path / "a.png", caption="a circle")
    picture(tmp_path / "b.png", caption="a Teal square")
    picture(tmp_path / "c.png")
    samples = scan_folder(tmp_path, trigger_word="teal")
    assert [s.caption for s in samples] == ["teal, a circle", "a Teal square", "teal"]
    # a word that only contains the trigger word does not count as the trigger word
    (tmp_path / "b.txt").write_text("tealish square", encoding="utf-8")
    assert scan_folder(tmp_path, trigger_word="teal")[1].caption == "teal, tealish square"


def test_repeats_folders(tmp_path):
    picture(tmp_path / "10_teal" / "a.png", caption="a teal circle")
    picture(tmp_path / "10_teal" / "b.png")  # kohya: the folder's class tokens are the caption
    picture(tmp_path / "2_red_thing" / "c.png")
    picture(tmp_path / "plain.png", caption="plain")
    counts = Counter((s.path.name, s.caption) for s in scan_folder(tmp_path))
    assert counts == {("a.png", "a teal circle"): 10, ("b.png", "teal"): 10, ("c.png", "red thing"): 2, ("plain.png", "plain"): 1}
    once = Counter(s.path.name for s in scan_folder(tmp_path, repeats_from_names=False, trigger_word="x"))
    assert set(once.values()) == {1} and len(once) == 4


# --------------------------------------------------------------------------- errors

def test_missing_folder_and_file_instead_of_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as caught:
        scan_folder(tmp_path / "nothing")
    assert "nothing" in str(caught.value)
    file = picture(tmp_path / "a.png", caption="x")
    with pytest.raises(DatasetError, match="not a folder"):
        scan_folder(file)


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no pictures here", encoding="utf-8")
    with pytest.raises(DatasetError, match="no pictures") as caught:
        scan_folder(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_pictures_without_captions_are_named(tmp_path):
    for i in range(7):
        picture(tmp_path / f"pic{i}.png", caption="ok" if i == 0 else None)
    with pytest.raises(DatasetError) as caught:
        scan_folder(tmp_path)
    message = str(caught.value)
    assert "no caption" in message and ".txt" in message and "caption template" in message
    assert all(f"pic{i}.png" in message for i in range(1, 6)) and "pic6.png" not in message and "1 more" in message
    assert "pic0.png" not in message


def test_unreadable_and_truncated_pictures_are_named(tmp_path):
    picture(tmp_path / "good.png", caption="x")
    (tmp_path / "fake.png").write_bytes(b"this is not a picture")
    (tmp_path / "fake.txt").write_text("x", encoding="utf-8")
    whole = picture(tmp_path / "whole.jpg", size=(256, 256), caption="x")
    noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(whole, quality=95)
    data = whole.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "cut.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DatasetError, match="cannot be read") as caught:
        scan_folder(tmp_path)
    message = str(caught.value)
    assert "fake.png" in message and "cut.jpg" in message
    assert "good.png" not in message and "whole.jpg" not in message


# --------------------------------------------------------------------------- shared server

def test_shared_server_allows_only_the_data_folder(tmp_path):
    data = tmp_path / "data"
    inside = data / "train-data" / "teal"
    inside.mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert check_folder_allowed(inside, data, restricted=True) == inside.resolve()
    assert check_folder_allowed(Path("train-data/teal"), data, restricted=True) == inside.resolve()
    for refused in (outside, Path("train-data/../../elsewhere"), data / "train-data" / ".." / ".." / "elsewhere"):
        with pytest.raises(AccessRefused) as caught:
            check_folder_allowed(refused, data, restricted=True)
        assert "inside the data folder" in str(caught.value) and INSECURE_FLAG in str(caught.value)
    link = data / "link"
    os.symlink(outside, link)
    with pytest.raises(AccessRefused):
        check_folder_allowed(link, data, restricted=True)
    with pytest.raises(AccessRefused):
        check_folder_allowed(Path("link"), data, restricted=True)
    # a local server: any folder, resolved
    assert check_folder_allowed(outside, data, restricted=False) == outside.resolve()
    assert check_folder_allowed(Path("link"), data, restricted=False) == outside.resolve()


# --------------------------------------------------------------------------- buckets and pictures

def test_buckets_are_multiples_of_the_step_within_the_area():
    buckets = make_buckets(512, 256, 1024, 64)
    assert (512, 512) in buckets and (256, 1024) in buckets and (1024, 256) in buckets and (768, 320) in buckets
    assert all(w % 64 == 0 and h % 64 == 0 and 256 <= w <= 1024 and 256 <= h <= 1024 for w, h in buckets)
    assert all(w * h <= 512 * 512 for w, h in buckets)
    assert all((h, w) in buckets for w, h in buckets)
    assert len({w / h for w, h in buckets}) == len(buckets) == 17  # one bucket per aspect ratio, as kohya makes
    # no bucket wastes the area: one of its sides cannot grow by a step without leaving it
    assert all(1024 in (w, h) or (w + 64) * h > 512 * 512 or w * (h + 64) > 512 * 512 for w, h in buckets)
    sdxl = make_buckets(1024, 256, 2048, 64)
    assert (1024, 1024) in sdxl and (832, 1216) in sdxl and (1216, 832) in sdxl
    with pytest.raises(DatasetError, match="largest bucket side"):
        make_buckets(2048, 256, 1024)
    # a 64 px demo run with the 256 px default smallest side: sides from 32
    demo = make_buckets(64, 256, 1024, 16)
    assert (64, 64) in demo and (32, 128) in demo and (128, 32) in demo and min(min(b) for b in demo) == 32
    assert make_buckets(64, 256, 1024, 64) == [(64, 64)]


def test_bucket_for_picks_the_closest_aspect_ratio():
    buckets = make_buckets(512)
    assert bucket_for((1000, 1000), buckets) == (512, 512)
    assert bucket_for((1920, 1080), buckets) == (640, 384)  # 1.78 -> 1.67
    assert bucket_for((1080, 1920), buckets) == (384, 640)
    assert bucket_for((3000, 100), buckets) == (1024, 256)
    assert bucket_for((1920, 1080), [(512, 512)]) == (512, 512)  # buckets turned off
    assert bucket_for((200, 100), [(64, 32), (128, 64), (64, 64)]) == (128, 64)  # ties go to the larger


def test_a_wide_picture_is_cut_to_its_wide_bucket(tmp_path):
    # 200×100: left half red, right half blue, a green stripe at the far left that the crop removes
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 100))
    image.paste((0, 255, 0), (0, 0, 8, 100))
    path = tmp_path / "wide.png"
    image.save(path)
    sample = scan_folder(tmp_path, trigger_word="x")[0]
    bucket = bucket_for(sample.size, make_buckets(64, 32, 128, 16))
    assert bucket[0] > bucket[1]
    tensor = load_picture(sample, (96, 64))
    assert tensor.shape == (3, 64, 96) and tensor.dtype.is_floating_point
    assert float(tensor.min()) >= -1 and float(tensor.max()) <= 1
    # scaled to 128×64 and cropped 16 px each side: the green stripe (8 px -> 5 px) is gone
    assert tensor[:, 32, 5].tolist() == pytest.approx([1, -1, -1], abs=0.02)
    assert tensor[:, 32, 90].tolist() == pytest.approx([-1, -1, 1], abs=0.02)
    assert tensor[1].max() < 0.5  # no green left


def test_transparency_is_laid_on_white(tmp_path):
    image = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, 8, 16))
    image.save(tmp_path / "clear.png")
    tensor = load_picture(Sample(tmp_path / "clear.png", "x", (16, 16)), (16, 16))
    assert tensor[:, 8, 2].tolist() == pytest.approx([1, -1, -1], abs=0.02)
    assert tensor[:, 8, 13].tolist() == pytest.approx([1, 1, 1], abs=0.02)


# --------------------------------------------------------------------------- captions at train time

def test_caption_dropout_rate():
    rng = np.random.default_rng(1)
    dropped = sum(process_caption("a, b, c", rng, dropout_rate=0.25) == "" for _ in range(4000))
    assert 850 < dropped < 1150
    rng = np.random.default_rng(1)
    assert all(process_caption("a, b, c", rng) == "a, b, c" for _ in range(50))


def test_shuffle_keeps_the_first_tokens_in_place_and_repeats_for_a_seed():
    caption = "teal, square, big, shiny, flat, round, old"
    draws = [process_caption(caption, np.random.default_rng(seed), shuffle=True, keep_tokens=2) for seed in range(30)]
    assert all(d.startswith("teal, square, ") for d in draws)
    assert all(sorted(d.split(", ")) == sorted(caption.split(", ")) for d in draws)
    assert len(set(draws)) > 10
    again = [process_caption(caption, np.random.default_rng(seed), shuffle=True, keep_tokens=2) for seed in range(30)]
    assert again == draws


def test_tag_dropout_spares_the_kept_tokens():
    caption = ", ".join(f"t{i}" for i in range(101))
    out = process_caption(caption, np.random.default_rng(3), keep_tokens=1, tag_dropout=0.5).split(", ")
    assert out[0] == "t0" and 30 < len(out) < 71 and out == sorted(out, key=lambda t: int(t[1:]))


# --------------------------------------------------------------------------- epoch plan

def test_plan_epoch(tmp_path):
    samples = [Sample(tmp_path / f"{i}.png", "x", size) for i, size in
               enumerate([(512, 512)] * 7 + [(900, 500)] * 5 + [(500, 900)] * 2)]
    buckets = make_buckets(512)
    plan = plan_epoch(samples, buckets, batch_size=3, seed=42, epoch=0)
    assert sorted(i for batch in plan for i in batch) == list(range(14))
    assert sorted(len(b) for b in plan) == [1, 2, 2, 3, 3, 3]  # 7 = 3+3+1, 5 = 3+2, 2 = 2
    assert all(len({bucket_for(samples[i].size, buckets) for i in batch}) == 1 for batch in plan)
    assert plan_epoch(samples, buckets, 3, 42, 0) == plan
    assert plan_epoch(samples, buckets, 3, 42, 1) != plan
    assert plan_epoch(samples, buckets, 3, 7, 0) != plan
    with pytest.raises(DatasetError):
        plan_epoch(samples, buckets, 0, 42, 0)


# --------------------------------------------------------------------------- TI templates

def test_textual_inversion_templates():
    templates = read_templates(REPO / "configs" / "textual_inversion_templates")
    assert {"none.txt", "subject.txt", "subject_filewords.txt", "style.txt", "style_filewords.txt"} <= set(templates)
    assert templates["none.txt"].read_text(encoding="utf-8").strip() == "picture"
    for name in ("subject.txt", "style.txt"):
        lines = templates[name].read_text(encoding="utf-8").splitlines()
        assert len(lines) >= 10 and all("[name]" in line for line in lines)
    for name in ("subject_filewords.txt", "style_filewords.txt"):
        lines = templates[name].read_text(encoding="utf-8").splitlines()
        assert len(lines) >= 10 and all("[name]" in line and "[filewords]" in line for line in lines)
    assert read_templates(REPO / "no-such-folder") == {}


def test_render_template():
    assert render_template("a rendering of a [name], [filewords]", "tealy", "square, big") == "a rendering of a tealy, square, big"
    assert render_template("a rendering of a [name], [filewords]", "tealy", "") == "a rendering of a tealy"
    assert render_template("[filewords], art by [name]\n", "tealy", "") == "art by tealy"
    assert render_template("picture", "tealy", "x") == "picture"


def test_a_picture_turned_by_exif_is_read_upright(tmp_path):
    # stored 40×20 with the top half red, EXIF orientation 6 (turn 90° clockwise to view): 20×40, red on the right
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 40, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "turned.jpg", exif=exif, quality=100)
    sample = scan_folder(tmp_path, trigger_word="x")[0]
    assert sample.size == (20, 40)
    tensor = load_picture(sample, (20, 40))
    assert tensor[:, 20, 16].tolist() == pytest.approx([1, -1, -1], abs=0.1)
    assert tensor[:, 20, 3].tolist() == pytest.approx([-1, -1, 1], abs=0.1)
