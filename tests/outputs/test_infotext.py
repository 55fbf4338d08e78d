"""The infotext must match A1111 byte for byte and parse back what it wrote."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from modules.outputs.infotext import (
    decode_user_comment,
    encode_user_comment,
    format_infotext,
    parse_infotext,
    read_infotext,
)

UI_DEFAULTS = [
    ("Steps", 20),
    ("Sampler", "DPM++ 2M"),
    ("Schedule type", "Karras"),
    ("CFG scale", 7),
    ("Seed", 1234),
    ("Size", "512x512"),
    ("Model hash", "6ce0161689"),
    ("Model", "v1-5-pruned-emaonly"),
    ("Version", "v0.1.0"),
]
UI_DEFAULTS_TEXT = (
    "a cat\n"
    "Negative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, "
    "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v0.1.0"
)


def test_ui_defaults_exact_string():
    assert format_infotext("a cat", "blurry", UI_DEFAULTS) == UI_DEFAULTS_TEXT


def test_no_negative_line_when_negative_empty():
    text = format_infotext("a cat", "", [("Steps", 20), ("Seed", 1)])
    assert text == "a cat\nSteps: 20, Seed: 1"


def test_none_dropped_float_printed_with_str_and_bare_key():
    fields = [("Steps", 20), ("Face restoration", None), ("CFG scale", 7.0), ("Tiling", "Tiling"), ("Seed", 5)]
    assert format_infotext("p", "", fields) == "p\nSteps: 20, CFG scale: 7.0, Tiling, Seed: 5"


def test_values_with_separators_are_json_quoted():
    fields = [
        ("Steps", 20),
        ("Lora hashes", "detail: 0123456789, style: abcdef0123"),
        ("Hires prompt", "two\nlines"),
        ("Note", 'say "hi", ünïcode'),
        ("Plain", 'quote " only'),
    ]
    expected = (
        'p\nSteps: 20, Lora hashes: "detail: 0123456789, style: abcdef0123", '
        'Hires prompt: "two\\nlines", Note: "say \\"hi\\", ünïcode", Plain: quote " only'
    )
    assert format_infotext("p", "", fields) == expected


def test_multiline_prompt_and_negative_round_trip():
    text = format_infotext("line one\nline two", "neg one\nneg two", UI_DEFAULTS)
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == "line one\nline two"
    assert parsed["Negative prompt"] == "neg one\nneg two"
    assert parsed["Steps"] == "20"


def test_parse_ui_defaults():
    parsed = parse_infotext(UI_DEFAULTS_TEXT)
    assert parsed["Prompt"] == "a cat"
    assert parsed["Negative prompt"] == "blurry"
    assert parsed["Sampler"] == "DPM++ 2M"
    assert parsed["CFG scale"] == "7"
    assert parsed["Size"] == "512x512"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("512", "512")
    assert parsed["Model"] == "v1-5-pruned-emaonly"


def test_quoted_values_round_trip():
    fields = [
        ("Steps", 20),
        ("Lora hashes", "detail: 0123456789, style: abcdef0123"),
        ("Hires prompt", "two\nlines, \"quoted\""),
        ("Hires resize", "1024x768"),
    ]
    parsed = parse_infotext(format_infotext("p", "", fields))
    assert parsed["Lora hashes"] == "detail: 0123456789, style: abcdef0123"
    assert parsed["Hires prompt"] == 'two\nlines, "quoted"'
    assert (parsed["Hires resize-1"], parsed["Hires resize-2"]) == ("1024", "768")


def test_last_line_with_fewer_than_three_params_is_prompt():
    parsed = parse_infotext("a cat\nstyle: anime, mood: calm")
    assert parsed["Prompt"] == "a cat\nstyle: anime, mood: calm"
    assert "style" not in parsed


def test_prompt_only_and_empty_prompt():
    assert parse_infotext("just a prompt") == {"Prompt": "just a prompt", "Negative prompt": ""}
    text = format_infotext("", "ugly", [("Steps", 20), ("Seed", 1), ("CFG scale", 7)])
    assert text == "Negative prompt: ugly\nSteps: 20, Seed: 1, CFG scale: 7"
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == "" and parsed["Negative prompt"] == "ugly"


@pytest.mark.parametrize(
    "garbage",
    ["", "\n\n", ":::,,,", 'Steps: "unterminated, Seed: , x: ,', "a: , b: , c: ", "\x00\xff" * 50, None, 42],
)
def test_parse_never_raises(garbage):
    parsed = parse_infotext(garbage)
    assert "Prompt" in parsed


def _png_with_parameters(text: str) -> io.BytesIO:
    info = PngInfo()
    info.add_text("parameters", text)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG", pnginfo=info)
    buffer.seek(0)
    return buffer


def test_read_png_parameters_latin1_and_unicode(tmp_path):
    for text in (UI_DEFAULTS_TEXT, "猫, 🐱\nSteps: 20, Seed: 1, CFG scale: 7"):
        path = tmp_path / "x.png"
        path.write_bytes(_png_with_parameters(text).getvalue())
        assert read_infotext(path) == text
        assert read_infotext(str(path)) == text
        with Image.open(path) as image:
            assert read_infotext(image) == text


@pytest.mark.parametrize("fmt,suffix", [("JPEG", "jpg"), ("WEBP", "webp")])
def test_read_exif_user_comment(tmp_path, fmt, suffix):
    text = "猫 cat\nSteps: 20, Seed: 1, CFG scale: 7"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = encode_user_comment(text)
    path = tmp_path / f"x.{suffix}"
    Image.new("RGB", (4, 4)).save(path, fmt, exif=exif)
    assert read_infotext(path) == text


def test_user_comment_encodings():
    assert encode_user_comment("ab") == b"UNICODE\0\0a\0b"
    assert decode_user_comment(b"UNICODE\0\0a\0b") == "ab"
    assert decode_user_comment(b"UNICODE\0a\0b\0") == "ab"  # little-endian writers
    assert decode_user_comment(b"ASCII\0\0\0hello") == "hello"


def test_read_infotext_none_cases(tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    assert read_infotext(plain) is None
    not_image = tmp_path / "x.png"
    not_image.write_text("nope")
    assert read_infotext(not_image) is None
