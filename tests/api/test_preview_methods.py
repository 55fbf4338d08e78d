"""show_progress_type and vae_tiling_megapixels through the API: POST /options changes what
the running job's live preview is made with (and so what GET /progress returns), and large
pictures go through the tiled VAE with the same result."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image

from modules.generation import vae_tiling
from tests.servers import data_dir_with_tiny_model, in_process_app


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_checkpoint):
    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("previews"), tiny_checkpoint)
    with in_process_app(data, "--api", "--nowebui", "--disable-console-progressbars",
                        checkpoint=data / "models" / "Stable-diffusion" / tiny_checkpoint.name) as (app, client):
        yield app, client


def _picture(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"), dtype=np.int16)


def test_progress_shows_the_preview_made_by_the_chosen_method(served, monkeypatch):
    app, client = served
    made: list[tuple[str, Image.Image]] = []
    real = app.service.previews.image

    def recorded(model, latents, full):
        image = real(model, latents, full)
        made.append((app.service.previews.method, image))
        return image

    monkeypatch.setattr(app.service.previews, "image", recorded)
    r = client.post("/sdapi/v1/options", json={"show_progress_type": "Warp drive"})
    assert r.status_code == 400 and "show_progress_type must be one of: Full, Approx cheap, TAESD" in r.text
    try:
        for method in ("TAESD", "Full"):
            assert client.post("/sdapi/v1/options", json={"show_progress_type": method, "show_progress_every_n_steps": 2}).status_code == 200
            assert client.get("/sdapi/v1/options").json()["show_progress_type"] == method
            job = client.post("/sdapi/v1/queue/txt2img", json={"prompt": "previews", "width": 128, "height": 128, "steps": 30, "n_iter": 20}).json()
            made.clear()
            shown, deadline = None, time.monotonic() + 60
            while shown is None and time.monotonic() < deadline:
                shown = client.get("/sdapi/v1/progress").json()["current_image"]
                time.sleep(0.05)
            client.delete(f"/sdapi/v1/queue/{job['id']}")
            assert shown is not None, "no live preview"
            methods = {m for m, _ in made}
            assert methods == {method}
            assert any(np.array_equal(_picture(shown), np.asarray(im, dtype=np.int16)) for _, im in made)
            assert _picture(shown).shape == (128, 128, 3)
            deadline = time.monotonic() + 30
            while client.get("/sdapi/v1/progress").json()["state"]["job_count"] and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        client.post("/sdapi/v1/options", json={"show_progress_type": "Approx cheap", "show_progress_every_n_steps": 10})


def test_large_pictures_go_through_the_tiled_vae_with_the_same_result(served, monkeypatch):
    app, client = served
    bands = []
    real = vae_tiling._Banded.decode
    monkeypatch.setattr(vae_tiling._Banded, "decode", lambda self, z: bands.append(z.shape) or real(self, z))
    body = {"prompt": "tiles", "width": 192, "height": 128, "steps": 3, "seed": 11}
    try:
        plain = client.post("/sdapi/v1/txt2img", json=body).json()["images"][0]
        assert bands == []  # 0.025 MP: below the default 2 MP
        assert client.post("/sdapi/v1/options", json={"vae_tiling_megapixels": 0.02}).status_code == 200
        tiled = client.post("/sdapi/v1/txt2img", json=body).json()["images"][0]
        assert bands == [(1, 4, 16, 24)]
        assert np.abs(_picture(tiled) - _picture(plain)).max() <= 1
        assert client.post("/sdapi/v1/options", json={"vae_tiling_megapixels": -1}).status_code == 400
    finally:
        client.post("/sdapi/v1/options", json={"vae_tiling_megapixels": 2.0})
