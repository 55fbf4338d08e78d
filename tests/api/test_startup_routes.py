"""Routes clients call when they start (aiyabot, the Photoshop plug-in, SillyTavern): they
answer with A1111's shapes, even where this server has nothing to list."""

from __future__ import annotations

import pytest

from tests.servers import in_process_api


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with in_process_api(tmp_path_factory.mktemp("startup"), "--nowebui") as c:
        yield c


@pytest.mark.parametrize("route", ["/sdapi/v1/face-restorers", "/sdapi/v1/hypernetworks", "/sdapi/v1/realesrgan-models"])
def test_listing_routes_answer_with_lists(client, route):
    r = client.get(route)
    assert r.status_code == 200, r.text
    assert r.json() == []


def test_interrogate_without_weights_names_what_to_download(client):
    r = client.post("/sdapi/v1/interrogate", json={"image": "iVBORw0KGgo=", "model": "clip"})
    assert r.status_code == 503
    body = r.json()
    assert body["error"] == "ServiceUnavailable" and "launch.py --download clip-vit-large-patch14" in body["detail"]
    assert client.get("/sdapi/v1/samplers").status_code == 200  # still serving
