"""POST /sdapi/v1/interrogate as A1111 answers it: {"caption"} for model clip (BLIP + CLIP terms) and
deepdanbooru (tagger), 404 for another model or no image, 400 for a bad image, and a 503 that names
the catalog entries when the weights are missing; the server keeps serving."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tests.postprocessing.interrogate_models import WORDS, write_blip, write_clip, write_tagger
from tests.servers import in_process_api

SCORES = [0.9, 0.2, 0.95, 0.7, 0.55, 0.3, 0.8, 0.6, 0.65, 0.4]


def _png(size=(40, 32), colour=(120, 30, 200)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    data = tmp_path_factory.mktemp("interrogate")
    models = data / "models"
    write_blip(models / "BLIP")
    write_clip(models / "CLIP")
    write_tagger(models / "deepbooru", SCORES)
    with in_process_api(data, "--nowebui") as c:
        yield c


@pytest.fixture(scope="module")
def bare_client(tmp_path_factory):
    with in_process_api(tmp_path_factory.mktemp("interrogate-bare"), "--nowebui") as c:
        yield c


def test_clip_answers_a_caption_with_ranked_terms(client):
    r = client.post("/sdapi/v1/interrogate", json={"image": _png(), "model": "clip"})
    assert r.status_code == 200, r.text
    caption, *terms = r.json()["caption"].split(", ")
    assert set(caption.split()) <= set(WORDS) and caption
    assert len(terms) == 6 and terms[0].startswith("by ")


def test_deepdanbooru_answers_tags_with_the_deepbooru_settings(client):
    image = "data:image/png;base64," + _png()
    r = client.post("/sdapi/v1/interrogate", json={"image": image, "model": "deepdanbooru"})
    assert r.status_code == 200, r.text
    assert r.json() == {"caption": "1girl, ^_^, hatsune miku, looking \\(at\\) viewer, red hair, smile"}
    changed = client.post("/sdapi/v1/options", json={"deepbooru_use_spaces": False, "deepbooru_sort_alpha": False,
                                                     "interrogate_deepbooru_score_threshold": 0.75})
    assert changed.status_code == 200, changed.text
    try:
        r = client.post("/sdapi/v1/interrogate", json={"image": image, "model": "deepdanbooru"})
        assert r.json()["caption"] == "1girl, hatsune_miku"
    finally:
        client.post("/sdapi/v1/options", json={"deepbooru_use_spaces": True, "deepbooru_sort_alpha": True,
                                               "interrogate_deepbooru_score_threshold": 0.5})


def test_skip_categories_setting_is_a_list_of_the_term_lists(client):
    assert client.get("/sdapi/v1/options").json()["interrogate_clip_skip_categories"] == []
    bad = client.post("/sdapi/v1/options", json={"interrogate_clip_skip_categories": ["painters"]})
    assert bad.status_code == 400 and "artists" in bad.text
    assert client.post("/sdapi/v1/options", json={"interrogate_clip_skip_categories": ["artists", "flavors"]}).status_code == 200
    try:
        r = client.post("/sdapi/v1/interrogate", json={"image": _png(), "model": "clip"})
        assert len(r.json()["caption"].split(", ")) == 3  # caption, medium, movement
    finally:
        client.post("/sdapi/v1/options", json={"interrogate_clip_skip_categories": []})


def test_unknown_model_is_404_and_no_image_is_404(client):
    r = client.post("/sdapi/v1/interrogate", json={"image": _png(), "model": "blip2"})
    assert r.status_code == 404 and "Model not found" in r.json()["detail"] and "deepdanbooru" in r.json()["detail"]
    r = client.post("/sdapi/v1/interrogate", json={"model": "clip"})
    assert r.status_code == 404 and r.json()["detail"] == "Image not found"


def test_bad_image_is_400_and_the_server_keeps_serving(client):
    r = client.post("/sdapi/v1/interrogate", json={"image": "!!!not base64!!!", "model": "deepdanbooru"})
    assert r.status_code == 400 and "image" in r.json()["detail"]
    r = client.post("/sdapi/v1/interrogate", json={"image": base64.b64encode(b"GIF89a broken").decode(), "model": "clip"})
    assert r.status_code == 400
    assert client.post("/sdapi/v1/interrogate", json={"image": _png(), "model": "deepdanbooru"}).status_code == 200


def test_missing_weights_are_503_naming_the_catalog_entries(bare_client):
    r = bare_client.post("/sdapi/v1/interrogate", json={"image": _png(), "model": "clip"})
    assert r.status_code == 503
    detail = r.json()["detail"]
    assert "BLIP caption model" in detail and "launch.py --download clip-vit-large-patch14" in detail
    r = bare_client.post("/sdapi/v1/interrogate", json={"image": _png(), "model": "deepdanbooru"})
    assert r.status_code == 503 and "wd14-moat-v2" in r.json()["detail"]
    assert bare_client.get("/sdapi/v1/samplers").status_code == 200
