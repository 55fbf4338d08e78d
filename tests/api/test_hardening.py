"""What a shared server must survive from one request: any picture format, work beyond the
limits, a garbage infotext, a lone surrogate, a full or broken output folder, a picture that
decodes to NaN. Each gets a clear answer, and nothing that was made is lost."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageCms

from tests.servers import data_dir_with_tiny_model, in_process_app

SMALL = {"width": 64, "height": 64, "steps": 2}


def b64(image: Image.Image, fmt: str = "PNG", **options) -> str:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("hardening"), tiny_checkpoint)
    with in_process_app(data, "--api", "--nowebui", "--disable-console-progressbars", checkpoint=data / "models" / "Stable-diffusion" / tiny_checkpoint.name,
                        raise_server_exceptions=False) as (app, client):
        yield client, data, app


def post(client, route: str, body: dict):
    """Sent as raw JSON text, as a client in another language would (escapes like \\ud800 included)."""
    return client.post(route, content=json.dumps(body), headers={"content-type": "application/json"})


def warnings_of(response) -> list[str]:
    return json.loads(response.json()["info"])["warnings"]


def lab(image):
    return ImageCms.applyTransform(image, ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"))


RED = Image.new("RGB", (64, 64), (200, 30, 30))
MASK = Image.new("L", (64, 64), 0)
MASK.paste(255, (16, 16, 48, 48))
PICTURES = {
    "CMYK JPEG": lambda: b64(MASK.convert("RGB").convert("CMYK"), "JPEG"),
    "LAB TIFF": lambda: b64(lab(MASK.convert("RGB")), "TIFF"),
    "float TIFF": lambda: b64(Image.fromarray(np.asarray(MASK, "float32") / 255, "F"), "TIFF"),
    "16-bit PNG": lambda: b64(Image.fromarray(np.asarray(MASK, "uint16") * 257)),
    "palette with transparency": lambda: b64(MASK.convert("RGB").convert("P"), "PNG", transparency=0),
    "animated GIF": lambda: b64(MASK.convert("RGB"), "GIF", save_all=True, append_images=[RED]),
    "animated WebP": lambda: b64(MASK.convert("RGB"), "WEBP", lossless=True, save_all=True, append_images=[RED]),
}


@pytest.mark.parametrize("route", ["/sdapi/v1/img2img", "/sdapi/v1/queue/img2img"])
@pytest.mark.parametrize("kind", list(PICTURES))
def test_every_picture_format_works_as_init_image_and_mask(server, route, kind):
    client, _, app = server
    picture = PICTURES[kind]()
    r = post(client, route, {"prompt": "x", "init_images": [picture], "mask": picture, **SMALL})
    assert r.status_code == 200, r.text
    if route.endswith("queue/img2img"):
        job = app.queue.get(r.json()["id"])
        assert job.wait(60) and job.status.value == "done", job.error


def test_a_picture_over_the_pixel_limit_is_a_400_naming_the_limit(server):
    client, _, _ = server
    bomb = b64(Image.new("1", (9000, 9000)))  # 81 MP in a few kB
    r = post(client, "/sdapi/v1/img2img", {"init_images": [bomb], **SMALL})
    assert r.status_code == 400
    assert "81.0 megapixels, over this server's limit of 50 megapixels" in r.json()["detail"]
    r = post(client, "/sdapi/v1/extra-single-image", {"image": bomb, "upscaling_resize": 1})
    assert r.status_code == 400 and "megapixels" in r.json()["detail"]


@pytest.mark.parametrize("body, limit, value", [
    ({"prompt": " AND ".join(["x"] * 4000)}, "limit_and_parts", "4,000 parts"),
    ({"prompt": "x" * 1_000_000}, "limit_prompt_characters", "1,000,000 characters"),
    ({"negative_prompt": "y " * 20_000}, "limit_prompt_characters", "40,000 characters"),
    ({"prompt": " ".join(f"<lora:x{i}:0.5>" for i in range(25))}, "limit_loras_per_prompt", "25 LoRA tags"),
    ({"prompt": " AND ".join(["[cat|dog] on a [red|blue] mat"] * 4), "steps": 150}, "limit_schedule_entries", "600 schedule entries"),
    ({"prompt": ", ".join(f"word{i}" for i in range(3000))}, "limit_prompt_tokens", "tokens"),
    ({"batch_size": 8, "n_iter": 100, "steps": 150, "width": 2048, "height": 2048}, "limit_megapixel_steps", "503,317 megapixel-steps"),
])
def test_work_over_a_limit_is_refused_with_the_limit_and_the_value(server, body, limit, value):
    client, _, _ = server
    r = post(client, "/sdapi/v1/txt2img", {"prompt": "x", **SMALL, **body})
    assert r.status_code == 400, r.text
    assert limit in r.json()["detail"] and value in r.json()["detail"]
    assert client.get("/sdapi/v1/progress").status_code == 200


def test_limits_are_settings(server):
    client, _, _ = server
    body = {"prompt": " AND ".join(["x"] * 5), **SMALL}
    assert post(client, "/sdapi/v1/options", {"limit_and_parts": 4}).status_code == 200
    try:
        r = post(client, "/sdapi/v1/txt2img", body)
        assert r.status_code == 400 and "5 parts, over this server's limit of 4" in r.json()["detail"]
    finally:
        assert post(client, "/sdapi/v1/options", {"limit_and_parts": 32}).status_code == 200
    assert post(client, "/sdapi/v1/txt2img", body).status_code == 200


def test_infotext_values_that_do_not_parse_are_named_in_the_warnings(server):
    client, _, _ = server
    r = post(client, "/sdapi/v1/txt2img", {"prompt": "x", "infotext": "p\nSteps: abc, Size: axb, CFG scale: 4, Seed: 1", "width": 64, "height": 64})
    assert r.status_code == 200, r.text
    warned = warnings_of(r)
    assert any("'Steps' was not applied: 'abc' is not a valid value" in w for w in warned), warned
    assert any("'Size' was not applied: 'axb' is not a size like 512x512" in w for w in warned), warned
    info = json.loads(r.json()["info"])
    assert info["cfg_scale"] == 4 and info["steps"] == 50  # the good value applied, the bad one left at the API's default


def test_an_infotext_cannot_set_what_the_request_could_not(server):
    client, _, _ = server
    r = post(client, "/sdapi/v1/txt2img", {"prompt": "x", "steps": 2, "infotext": "p\nSteps: 2, Size: 100000x3, Seed: 1"})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["width"] == 512
    assert any("Size (width)" in w and "100000" in w for w in warnings_of(r))


def test_a_lone_surrogate_is_a_readable_400(server):
    client, _, _ = server
    r = client.post("/sdapi/v1/txt2img", content='{"prompt": "a \\ud800 cat", "steps": 2, "width": 64, "height": 64}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "prompt holds a lone surrogate" in r.json()["detail"]
    r = client.post("/sdapi/v1/options", content='{"samples_filename_pattern": "\\udfff"}', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "lone surrogate" in r.json()["detail"]


def test_a_picture_that_decodes_to_nan_fails_with_a_message_instead_of_a_black_image(server):
    client, _, _ = server
    r = post(client, "/sdapi/v1/txt2img", {"prompt": "(" * 10_000 + "cat" + ")" * 10_000, **SMALL})
    assert r.status_code == 400
    assert "A tensor with NaNs was produced in the UNet" in r.json()["detail"]
    assert post(client, "/sdapi/v1/txt2img", {"prompt": "cat", **SMALL}).status_code == 200


def test_when_saving_fails_the_picture_is_returned_with_a_warning(server):
    client, data, _ = server
    blocked = data / "not-a-folder"
    blocked.write_text("a file where the output folder should be")
    assert post(client, "/sdapi/v1/options", {"outdir_txt2img_samples": "not-a-folder/images"}).status_code == 200
    try:
        r = post(client, "/sdapi/v1/txt2img", {"prompt": "x", "save_images": True, **SMALL})
    finally:
        post(client, "/sdapi/v1/options", {"outdir_txt2img_samples": "outputs/txt2img-images"})
    assert r.status_code == 200, r.text
    assert len(r.json()["images"]) == 1
    assert Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).size == (64, 64)
    assert any(f"Could not save to {blocked / 'images'}: Not a directory" in w for w in warnings_of(r)), warnings_of(r)


def test_options_that_cannot_be_saved_are_a_507_and_change_nothing(server):
    client, data, app = server
    config = app.settings.path
    before = config.read_bytes() if config.exists() else None
    # The temp file config.json is written through cannot be created: a directory holds its name.
    blocker = config.with_name(f".{config.name}.{__import__('os').getpid()}.tmp")
    blocker.mkdir()
    try:
        r = post(client, "/sdapi/v1/options", {"jpeg_quality": 55})
    finally:
        blocker.rmdir()
    assert r.status_code == 507, r.text
    assert "Could not save the settings" in r.json()["detail"] and "Nothing was changed" in r.json()["detail"]
    assert (config.read_bytes() if config.exists() else None) == before
    assert client.get("/sdapi/v1/options").json()["jpeg_quality"] != 55


def test_a_vae_file_that_cannot_be_read_is_named_in_the_warnings(server):
    client, data, _ = server
    folder = data / "models" / "VAE"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.safetensors").write_bytes(b"\0" * 64)
    assert client.post("/sdapi/v1/refresh-vae").status_code == 200
    r = post(client, "/sdapi/v1/txt2img", {"prompt": "x", "override_settings": {"sd_vae": "broken.safetensors"}, **SMALL})
    assert r.status_code == 200, r.text
    assert any("broken.safetensors is truncated or not a safetensors file" in w and "the checkpoint's own VAE was used" in w
               for w in warnings_of(r)), warnings_of(r)
    assert json.loads(r.json()["info"])["infotexts"][0].count("VAE:") == 0  # the picture does not claim the broken VAE
