"""A1111 filename and folder patterns give the names an A1111 user expects for a concrete
image: `samples_filename_pattern`, `directories_filename_pattern`, `[none]`, unknown tags."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from PIL import Image

from modules.outputs.naming import NameValues, apply_directory_pattern, apply_pattern
from modules.outputs.saving import OutputWriter, SaveSettings

NOW = datetime(2024, 7, 27, 23, 59, 5)
CAT = NameValues(
    seed=1234,
    prompt="a photo of a cat, masterpiece",
    negative_prompt="blurry",
    model_name="tiny",
    model_hash="6ce0161689",
    steps=20,
    cfg_scale=7.0,
    width=512,
    height=768,
    sampler="DPM++ 2M",
    scheduler="Karras",
    styles=("None", "Warm", "Film"),
    clip_skip=2,
    denoising_strength=0.75,
    batch_number=2,
    batch_size=4,
    job_timestamp="20240727235800",
    all_seeds=(1233, 1234, 1235, 1236),
)


def save(tmp_path: Path, pattern: str, values: NameValues = CAT, **settings) -> Path:
    writer = OutputWriter(SaveSettings(tmp_path, filename_pattern=pattern, **settings), clock=lambda: NOW)
    return writer.save_image(Image.new("RGB", (8, 8), "red"), values=values)


def test_pattern_of_seed_model_and_steps(tmp_path):
    assert save(tmp_path, "[seed]-[model_name]-[steps]") == tmp_path / "2024-07-27" / "00000-1234-tiny-20.png"


@pytest.mark.parametrize(
    "pattern,expected",
    [
        ("[seed]", "1234"),
        ("[seed_first]-[seed_last]", "1233-1236"),
        ("[prompt]", "a_photo_of_a_cat,_masterpiece"),
        ("[prompt_spaces]", "a photo of a cat, masterpiece"),
        ("[prompt_words]", "a photo of a cat masterpiece"),
        ("[model_name] [model_hash]", "tiny 6ce0161689"),
        ("[steps] [cfg] [width]x[height]", "20 7 512x768"),
        ("[sampler] [scheduler]", "DPM++ 2M Karras"),
        ("[styles]", "Warm, Film"),
        ("[clip_skip]-[denoising]", "2-0.75"),
        ("[batch_number] of [batch_size]", "2 of 4"),
        ("[date]", "2024-07-27"),
        ("[datetime]", "20240727235905"),
        ("[datetime<%Y%m%d_%H%M%S>]", "20240727_235905"),
        ("[datetime<%Y>]", "2024"),
        ("[job_timestamp]", "20240727235800"),
        ("[prompt_hash<4>]", "5c29"),  # sha256 of the prompt, first 4 hex digits
        ("[hasprompt<cat><dog|nodog>]", "catnodog"),
        ("[Seed]-[STEPS]", "1234-20"),  # tag names are not case-sensitive
    ],
)
def test_each_tag(pattern, expected):
    assert apply_pattern(pattern, CAT, NOW) == expected


def test_prompt_spaces_with_reserved_characters_is_sanitized(tmp_path):
    values = NameValues(seed=7, prompt=' a photo: of a "cat"/dog?.. ')
    path = save(tmp_path, "[seed]-[prompt_spaces]", values)
    assert path.name == "00000-7-a photo_ of a _cat__dog_.png"
    assert apply_pattern("[prompt]", values, NOW) == "a_photo__of_a__cat__dog_"


def test_literal_reserved_characters_in_the_pattern_are_sanitized():
    assert apply_pattern("seed: [seed]?", CAT, NOW) == "seed_ 1234_"
    assert apply_pattern("[datetime<%Y/%m>]", CAT, NOW) == "2024_07"


def test_datetime_in_a_time_zone():
    aware = datetime(2024, 7, 27, 23, 30, tzinfo=timezone.utc)
    assert apply_pattern("[datetime<%H%M><Asia/Tokyo>]", CAT, aware) == "0830"
    assert apply_pattern("[datetime<><UTC>]", CAT, aware) == "20240727233000"


def test_unknown_tag_stays_as_written():
    assert apply_pattern("[seed]-[nosuchtag]", CAT, NOW) == "1234-[nosuchtag]"


def test_none_yields_nothing(tmp_path):
    assert save(tmp_path, "[none]").name == "00000.png"
    assert apply_pattern("[seed]-[none]-[steps]", CAT, NOW) == "1234-20"


def test_unknown_values_leave_no_dangling_separators():
    sparse = NameValues(seed=5, steps=20)
    assert apply_pattern("[seed]-[model_name]-[steps]", sparse, NOW) == "5-20"
    assert apply_pattern("[model_name]-[seed]", sparse, NOW) == "5"
    assert apply_pattern("[seed]-[model_hash]", sparse, NOW) == "5"
    assert apply_pattern("[seed]_[denoising]", sparse, NOW) == "5"  # txt2img has no denoising
    assert apply_pattern("[seed]-[batch_number]", NameValues(seed=5, batch_number=1, batch_size=1), NOW) == "5"


def test_empty_pattern_is_a1111_default(tmp_path):
    values = NameValues(seed=1234, prompt="a cat")
    dated = save(tmp_path / "dated", "", values)
    flat = save(tmp_path / "flat", "", values, save_to_dirs=False)
    assert dated == tmp_path / "dated" / "2024-07-27" / "00000-1234.png"
    assert flat == tmp_path / "flat" / "00000-1234-a cat.png"


def test_directory_pattern_model_name(tmp_path):
    writer = OutputWriter(SaveSettings(tmp_path, directory_pattern="[model_name]"), clock=lambda: NOW)
    path = writer.save_image(Image.new("RGB", (8, 8)), values=CAT)
    assert path == tmp_path / "tiny" / "00000-1234.png"
    # the sequence number counts per folder, as with date folders
    other = writer.save_image(Image.new("RGB", (8, 8)), values=NameValues(seed=9, model_name="big"))
    assert other == tmp_path / "big" / "00000-9.png"


def test_directory_pattern_nests_and_stays_inside_the_output_folder():
    assert apply_directory_pattern("[date]/[model_name]", CAT, NOW) == ("2024-07-27", "tiny")
    assert apply_directory_pattern("[date]/[model_name]", NameValues(), NOW) == ("2024-07-27",)
    assert apply_directory_pattern("../[prompt_spaces]/..", NameValues(prompt="../../etc/passwd"), NOW) == (".._.._etc_passwd",)
    assert apply_directory_pattern("", CAT, NOW) == ("a photo of a cat masterpiece",)  # A1111: empty = [prompt_words]


def test_prompt_words_limit(tmp_path):
    writer = OutputWriter(SaveSettings(tmp_path, directory_pattern="[prompt_words]", max_prompt_words=3), clock=lambda: NOW)
    path = writer.save_image(Image.new("RGB", (8, 8)), values=CAT)
    assert path.parent == tmp_path / "a photo of"
    assert apply_directory_pattern("[prompt_words]", NameValues(prompt=""), NOW) == ("empty",)


def test_very_long_prompt_pattern_still_saves(tmp_path):
    values = NameValues(seed=1, prompt="a very long prompt " * 100)
    path = save(tmp_path, "[prompt]-[prompt_spaces]-[prompt]-[seed]", values)
    assert path.exists()
    assert len(path.name.encode("utf-8")) <= 255
    assert path.name.startswith("00000-a_very_long_prompt_")


def test_seed_and_prompt_keywords_fill_in_values(tmp_path):
    writer = OutputWriter(SaveSettings(tmp_path, filename_pattern="[seed]-[model_name]-[width]"), clock=lambda: NOW)
    path = writer.save_image(Image.new("RGB", (16, 8)), seed=42, prompt="a cat", values=NameValues(model_name="tiny"))
    assert path.name == "00000-42-tiny-16.png"  # width defaults to the image's


def test_user_tag_and_user_folder_names():
    from modules.outputs.naming import user_folder

    now = datetime(2024, 7, 27, 12, 0)
    assert apply_pattern("[seed]-[user]", NameValues(seed=3, user="alice"), now) == "3-alice"
    assert apply_pattern("[seed]-[user]", NameValues(seed=3), now) == "3"  # no log-in: nothing, and its separator goes
    assert [user_folder(n) for n in ("alice", "../x", "..", "", "a/b", "we:ird*")] == ["alice", "_x", "_", "_", "a_b", "we_ird_"]
