"""Restore faces through the A1111 API: /face-restorers lists the models present, txt2img with
restore_faces records "Face restoration: <model>" in the saved PNG, and the Extras routes run
CodeFormer on a drawn face with A1111's postprocessing keys."""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.postprocessing.face_models import drawn_face, write_codeformer, write_gfpgan
from tests.servers import data_dir_with_tiny_model, in_process_app

SMALL = {"width": 64, "height": 64, "steps": 2}


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def unb64(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("faces-api"), tiny_checkpoint)
    write_gfpgan(data / "models" / "GFPGAN" / "GFPGANv1.4.pth")
    write_codeformer(data / "models" / "Codeformer" / "codeformer-v0.1.0.pth")
    ckpt = data / "models" / "Stable-diffusion" / tiny_checkpoint.name
    with in_process_app(data, "--api", "--nowebui", "--disable-console-progressbars", checkpoint=ckpt) as (app, client):
        client.app_object = app
        yield client, data


def test_face_restorers_lists_the_models_present(server):
    client, _ = server
    r = client.get("/sdapi/v1/face-restorers")
    assert r.status_code == 200 and r.json() == [{"name": "CodeFormer", "cmd_dir": None}, {"name": "GFPGAN", "cmd_dir": None}]


def test_txt2img_with_restore_faces_records_the_model_in_the_saved_png(server):
    client, data = server
    before = set((data / "outputs").rglob("*.png"))
    body = {"prompt": "a portrait", "seed": 3, "restore_faces": True, "save_images": True, "override_settings": {"face_restoration_model": "GFPGAN"},
            **SMALL}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["restore_faces"] is True and info["face_restoration_model"] == "GFPGAN"
    saved = sorted(set((data / "outputs").rglob("*.png")) - before)
    assert len(saved) == 1
    parameters = Image.open(saved[0]).info["parameters"]
    assert "Seed: 3, Face restoration: GFPGAN, Size: 64x64" in parameters  # A1111's place for the key
    plain = client.post("/sdapi/v1/txt2img", json={"prompt": "a portrait", "seed": 3, **SMALL})
    assert "Face restoration" not in unb64(plain.json()["images"][0]).info["parameters"]
    # the infotext pasted back through the API's `infotext` field turns Restore faces on again
    again = client.post("/sdapi/v1/txt2img", json={"infotext": parameters, **SMALL})
    assert again.status_code == 200 and json.loads(again.json()["info"])["restore_faces"] is True


def test_extras_codeformer_changes_the_face_only(server):
    client, _ = server
    image = drawn_face()
    r = client.post("/sdapi/v1/extra-single-image", json={
        "image": b64(image), "upscaling_resize": 1, "upscaler_1": "None", "codeformer_visibility": 1, "codeformer_weight": 0.5,
    })
    assert r.status_code == 200, r.text
    assert "CodeFormer visibility: 1, CodeFormer weight: 0.5" in r.json()["html_info"]
    out = unb64(r.json()["image"]).convert("RGB")
    assert out.size == image.size
    moved = np.abs(np.asarray(out, np.int16) - np.asarray(image, np.int16)).max(axis=2) > 0
    assert moved[150:230, 150:230].mean() > 0.9  # the face
    assert not moved[:48].any() and not moved[-48:].any() and not moved[:, :48].any() and not moved[:, -48:].any()


def test_extras_with_a_broken_gfpgan_file_is_a_400_and_the_server_goes_on(server, tmp_path):
    client, data = server
    folder = data / "models" / "GFPGAN"
    good = folder / "GFPGANv1.4.pth"
    broken = folder / "GFPGANv1.5-broken.pth"  # sorts after v1.4: the one used
    broken.write_bytes(b"not a model")
    try:
        r = client.post("/sdapi/v1/extra-single-image", json={"image": b64(drawn_face(128, 20)), "gfpgan_visibility": 1})
        assert r.status_code == 400 and "GFPGAN model GFPGANv1.5-broken.pth cannot be read" in r.text and "gfpgan-v1.4" in r.text
    finally:
        os.remove(broken)
    assert good.exists() and client.get("/sdapi/v1/face-restorers").status_code == 200
    r = client.post("/sdapi/v1/extra-single-image", json={"image": b64(drawn_face(128, 20)), "upscaler_1": "Lanczos", "upscaling_resize": 2})
    assert r.status_code == 200


def test_face_settings_are_a1111_options_and_reach_the_restorers(server):
    client, _ = server
    options = client.get("/sdapi/v1/options").json()
    assert (options["face_restoration_model"], options["code_former_weight"], options["face_restoration_unload"]) == ("CodeFormer", 0.5, False)
    assert client.post("/sdapi/v1/options", json={"face_restoration_model": "RestoreFormer"}).status_code == 400
    faces = client.app_object.service.libraries.faces
    try:
        assert client.post("/sdapi/v1/options", json={"face_restoration_unload": True}).status_code == 200
        assert faces.unload_after_use is True
    finally:
        client.post("/sdapi/v1/options", json={"face_restoration_unload": False})
    assert faces.unload_after_use is False


def test_inpainting_with_restore_faces_leaves_the_unmasked_face_alone(server):
    """A1111 restores faces before putting the unmasked part back: a face outside the mask
    keeps its original pixels even though the (random) restorer would change it."""
    client, _ = server
    image = drawn_face()
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (0, 0, 96, 96))  # repaint the top-left corner only; the face is in the middle
    body = {"init_images": [b64(image)], "mask": b64(mask), "denoising_strength": 0.75, "width": image.width, "height": image.height,
            "steps": 2, "seed": 5, "restore_faces": True, "override_settings": {"face_restoration_model": "GFPGAN"}}
    r = client.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["restore_faces"] is True
    out = np.asarray(unb64(r.json()["images"][0]).convert("RGB"), np.int16)
    original = np.asarray(image, np.int16)
    assert np.array_equal(out[150:230, 150:230], original[150:230, 150:230])  # the face, outside the mask
    assert np.abs(out[:80, :80] - original[:80, :80]).max() > 0  # the masked corner was repainted
