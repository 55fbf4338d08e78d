"""The API's log-in: ignored without --api-auth (as A1111 does, so clients that always send
an `Authorization: Basic ` header with empty credentials connect), checked with it, and a
malformed header is a 401 that says what is wrong."""

from __future__ import annotations

import base64

import pytest

from tests.servers import in_process_api


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def open_api(tmp_path_factory):
    with in_process_api(tmp_path_factory.mktemp("open"), "--nowebui") as client:
        yield client


@pytest.fixture(scope="module")
def guarded_api(tmp_path_factory):
    with in_process_api(tmp_path_factory.mktemp("guarded"), "--nowebui", "--api-auth", "alice:se:cret") as client:
        yield client


# What Open WebUI and SillyTavern send with their auth setting left empty ('Basic ' + base64('')),
# and other headers a client may carry for a proxy in front of the server.
IGNORED = ["Basic ", "Basic", basic(""), basic("user"), "Basic !!!not-base64", "Bearer abc.def", "Digest x=1", basic("bob:pw")]


@pytest.mark.parametrize("header", IGNORED)
def test_without_api_auth_any_authorization_header_is_ignored(open_api, header):
    r = open_api.get("/sdapi/v1/samplers", headers={"Authorization": header})
    assert r.status_code == 200, r.text
    assert r.json()[0]["name"] == "DPM++ 2M"
    r = open_api.post("/sdapi/v1/options", headers={"Authorization": header}, json={})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "header, message",
    [
        (None, "Not authenticated"),
        ("Basic ", "Not authenticated"),
        ("Basic !!!", "not valid base64"),
        (basic("alice"), "must be user:password"),
        ("Bearer abc", "scheme 'Bearer' is not supported"),
        (basic("alice:wrong"), "Incorrect username or password"),
        (basic("mallory:se:cret"), "Incorrect username or password"),
    ],
)
def test_with_api_auth_a_missing_or_malformed_header_is_a_401_with_a_message(guarded_api, header, message):
    r = guarded_api.get("/sdapi/v1/samplers", headers={"Authorization": header} if header else {})
    assert r.status_code == 401
    assert message in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Basic"


def test_with_api_auth_the_right_credentials_get_in(guarded_api):
    r = guarded_api.get("/sdapi/v1/samplers", headers={"Authorization": basic("alice:se:cret")})
    assert r.status_code == 200 and r.json()[0]["name"] == "DPM++ 2M"
