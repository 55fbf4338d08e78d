"""The images this server saves, read by the tools people read A1111's images with: A1111's
own reader (piexif's UserComment), sd-parsers and SD Prompt Reader, in PNG, JPEG and WebP."""

from __future__ import annotations

import io
import struct

import piexif
import piexif.helper
import pytest
from PIL import Image

from modules.outputs.infotext import encode_user_comment, read_infotext
from tests.servers import data_dir_with_tiny_model, in_process_app

PROMPT = "a red cat, (masterpiece:1.2), 猫"


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_checkpoint):
    """One picture saved in each format by the app itself, through the API."""
    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("readers"), tiny_checkpoint)
    files = {}
    with in_process_app(data, "--api", "--nowebui", "--disable-console-progressbars",
                        checkpoint=data / "models" / "Stable-diffusion" / tiny_checkpoint.name) as (_, client):
        for fmt in ("png", "jpg", "webp"):
            assert client.post("/sdapi/v1/options", json={"samples_format": fmt}).status_code == 200
            before = set((data / "outputs").rglob(f"*.{fmt}"))
            body = {"prompt": PROMPT, "negative_prompt": "blurry", "seed": 77, "steps": 3, "width": 64, "height": 64, "save_images": True,
                    "sampler_name": "Euler a", "override_settings": {"eta_noise_seed_delta": 31337}}
            r = client.post("/sdapi/v1/txt2img", json=body)
            assert r.status_code == 200, r.text
            [files[fmt]] = sorted(set((data / "outputs").rglob(f"*.{fmt}")) - before)
            files[fmt + "-api"] = r.json()["images"][0]
    return files


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_user_comment_is_written_as_a1111_writes_it(saved, fmt):
    with Image.open(saved[fmt]) as image:
        raw = image.info["exif"]
    raw = raw[6:] if raw.startswith(b"Exif\0\0") else raw
    assert raw[:4] == b"MM\0*"  # big-endian TIFF, as piexif writes
    ifd0 = struct.unpack(">I", raw[4:8])[0]
    (tag, kind, _, exif_ifd), = [struct.unpack(">HHII", raw[ifd0 + 2 : ifd0 + 14])]
    assert (tag, kind) == (0x8769, 4)
    tag, kind, count, offset = struct.unpack(">HHII", raw[exif_ifd + 2 : exif_ifd + 14])
    assert (tag, kind) == (0x9286, 7)  # UserComment, UNDEFINED: what piexif-based readers need
    assert raw[offset : offset + count].startswith(b"UNICODE\0")


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_a1111s_own_reader_finds_the_parameters(saved, fmt):
    """A1111's read_info_from_image: piexif.load on the EXIF, then UserComment.load."""
    with Image.open(saved[fmt]) as image:
        exif = piexif.load(image.info["exif"])
    text = piexif.helper.UserComment.load(exif["Exif"][piexif.ExifIFD.UserComment])
    assert text.startswith(PROMPT + "\nNegative prompt: blurry\nSteps: 3, Sampler: Euler a, Schedule type: Automatic")
    assert "Seed: 77" in text and "ENSD: 31337" in text


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_sd_parsers_reads_prompt_sampler_and_settings(saved, fmt):
    from sd_parsers import ParserManager

    info = ParserManager().parse(saved[fmt])
    assert info is not None and info.generator.name == "AUTOMATIC1111"
    assert info.full_prompt == PROMPT and info.full_negative_prompt == "blurry"
    [sampler] = info.samplers
    assert sampler.name == "Euler a" and sampler.parameters["seed"] == "77" and sampler.parameters["steps"] == "3"
    assert sampler.model.name == "tiny-test-model-random"


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_sd_prompt_reader_reads_prompt_and_settings(saved, fmt):
    from sd_prompt_reader.image_data_reader import ImageDataReader

    reader = ImageDataReader(str(saved[fmt]))
    assert reader.status.name == "READ_SUCCESS" and reader.tool == "A1111 webUI"
    assert reader.positive == PROMPT and reader.negative == "blurry"
    assert reader.parameter["seed"] == "77" and reader.parameter["sampler"] == "Euler a" and reader.parameter["size"] == "64x64"


def test_api_images_carry_the_same_metadata(saved):
    import base64

    image = Image.open(io.BytesIO(base64.b64decode(saved["webp-api"])))
    assert image.format == "WEBP" and read_infotext(image) == read_infotext(saved["webp"])


def test_both_user_comment_forms_are_still_read(tmp_path):
    """Files an earlier version wrote (UserComment typed BYTE by Pillow) keep reading."""
    text = "猫 cat\nSteps: 20, Seed: 1, CFG scale: 7"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = encode_user_comment(text)
    old = tmp_path / "old.jpg"
    Image.new("RGB", (4, 4)).save(old, "JPEG", exif=exif)
    assert read_infotext(old) == text
