"""The LAN studio set-up, on the real server (launch.py): HTTPS with a self-signed certificate,
log-ins from --gradio-auth and --gradio-auth-path, a reverse proxy's --subpath, the non-local
policy over the API, and a path-traversal sweep over every route that serves files.

One server is started for the whole module; requests are sent with http.client, which sends
a path exactly as written (no `..` clean-up, no re-encoding), as an attacker's client would.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import urllib.parse
import uuid
from pathlib import Path

import pytest
from PIL import Image

from tests.servers import REPO, launched, self_signed_certificate

PREFIX = "/studio"
OWNER = ("owner", "owner-pass")
FILE_USERS = {"alice": "wonder land", "bob": "builder", "carol": "pa:ss"}  # from --gradio-auth-path
API = ("robot", "robot-pass")
MARKER = f"TOP-SECRET-{uuid.uuid4().hex}"


class Lan:
    """The running server and what the tests need to talk to it."""

    def __init__(self, port: int, context: ssl.SSLContext, data: Path, outside: Path):
        self.port, self.context, self.data, self.outside = port, context, data, outside
        self.cookie = ""

    def connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, api: bool = False, page: bool = False,
                kept: http.client.HTTPSConnection | None = None):
        """One request, on a connection of its own, or on `kept` (a keep-alive connection the caller
        reuses for a sweep of requests, sparing a TLS handshake each; reopened if the server closed it)."""
        sent = dict(headers or {})
        if api:
            sent["Authorization"] = "Basic " + base64.b64encode(f"{API[0]}:{API[1]}".encode()).decode()
        if page and self.cookie:
            sent["Cookie"] = self.cookie
        conn = kept or self.connection()
        try:
            for attempt in range(2):
                try:
                    conn.request(method, path, body=body, headers=sent)
                    response = conn.getresponse()
                    return response.status, response.getheaders(), response.read()
                except (http.client.RemoteDisconnected, ConnectionError):
                    conn.close()  # the server closed a kept connection between requests: the next try opens a new one
                    if attempt or kept is None:
                        raise
        finally:
            if kept is None:
                conn.close()

    def login(self, user: str, password: str):
        body = urllib.parse.urlencode({"username": user, "password": password}).encode()
        return self.request("POST", f"{PREFIX}/login", body, {"Content-Type": "application/x-www-form-urlencoded"})


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    data = tmp_path_factory.mktemp("lan-data")
    certs = tmp_path_factory.mktemp("lan-certs")
    outside = tmp_path_factory.mktemp("lan-outside")  # a folder beside the data folder: never to be served
    key, cert = self_signed_certificate(certs)
    auth_file = certs / "logins.txt"
    auth_file.write_text("alice:wonder land\n\n  bob:builder , carol:pa:ss\n", encoding="utf-8")
    # Files a visitor must never read: beside models/ and outputs/, outside the data folder, in the repo.
    (outside / "secret.txt").write_text(MARKER)
    (data / "config.json").write_text(json.dumps({"lan_test_marker": MARKER}))
    (data / "styles.csv").write_text(f"name,prompt,negative_prompt\nsecret,{MARKER},\n")
    (data / "models" / "VAE").mkdir(parents=True)
    (data / "models" / "VAE" / "notes.txt").write_text(MARKER)
    shown = data / "outputs" / "txt2img-images"
    shown.mkdir(parents=True)
    Image.new("RGB", (8, 8), (0, 200, 0)).save(shown / "shown.png")
    (data / "outputs" / "link-to-secret.txt").symlink_to(outside / "secret.txt")
    (data / "outputs" / "link-to-outside").symlink_to(outside, target_is_directory=True)
    (data / "outputs" / "link-to-config.json").symlink_to(data / "config.json")
    context = ssl.create_default_context(cafile=str(cert))
    flags = ("--server-name", "127.0.0.1", "--tls-keyfile", str(key), "--tls-certfile", str(cert), "--disable-tls-verify",
             "--gradio-auth", ":".join(OWNER), "--gradio-auth-path", str(auth_file), "--api", "--api-auth", ":".join(API),
             "--subpath", PREFIX, "--disable-console-progressbars")
    with launched(data, *flags, ready_path=f"{PREFIX}/", tls=context) as url:
        server = Lan(int(url.rsplit(":", 1)[1]), context, data, outside)
        status, headers, _ = server.login(*OWNER)
        assert status == 200
        server.cookie = "; ".join(c.split(";", 1)[0] for c in _set_cookies(headers))
        yield server


def _set_cookies(headers: list[tuple[str, str]]) -> list[str]:
    return [value for name, value in headers if name.lower() == "set-cookie"]


# -- HTTPS ----------------------------------------------------------------------------------

def test_page_and_options_answer_over_https_and_plain_http_is_not_served(lan):
    status, _, body = lan.request("GET", f"{PREFIX}/")
    assert status == 200 and b"<html" in body.lower()
    status, _, body = lan.request("GET", f"{PREFIX}/sdapi/v1/options", api=True)
    assert status == 200 and "samples_format" in json.loads(body)
    status, _, _ = lan.request("GET", "/sdapi/v1/options")  # no credentials
    assert status == 401
    plain = http.client.HTTPConnection("127.0.0.1", lan.port, timeout=10)
    try:
        plain.request("GET", f"{PREFIX}/sdapi/v1/options")
        answer = plain.getresponse()
        served = answer.status == 200 and b"samples_format" in answer.read()
    except (OSError, http.client.HTTPException):
        served = False
    finally:
        plain.close()
    assert not served


# -- log-ins --------------------------------------------------------------------------------

@pytest.mark.parametrize("user, password", [OWNER, *FILE_USERS.items()])
def test_log_ins_from_the_flag_and_the_file_work(lan, user, password):
    status, _, body = lan.login(user, password)
    assert status == 200 and json.loads(body) == {"success": True}


@pytest.mark.parametrize("user, password", [("alice", "wonder"), ("bob", "Builder"), ("mallory", "x"), ("owner", "")])
def test_wrong_log_ins_are_refused(lan, user, password):
    status, _, _ = lan.login(user, password)
    assert status in (400, 401, 422)  # 422: an empty field


def test_without_a_log_in_the_page_is_the_log_in_form_and_gradio_routes_refuse(lan):
    status, _, body = lan.request("GET", f"{PREFIX}/")
    assert status == 200 and b'"auth_required":true' in body.replace(b" ", b"")
    assert b"txt2img_prompt" not in body
    for path in ("/config", "/gradio_api/info", "/gradio_api/queue/data?session_hash=x", "/gradio_api/heartbeat/x"):
        assert lan.request("GET", PREFIX + path)[0] == 401, path
    status, _, body = lan.request("GET", f"{PREFIX}/config", page=True)
    assert status == 200 and b"txt2img_prompt" in body


# -- behind a reverse proxy -----------------------------------------------------------------

def test_subpath_works_whether_the_proxy_keeps_or_strips_the_prefix(lan):
    proxy = {"X-Forwarded-Host": "studio.lan", "X-Forwarded-Proto": "https"}
    for path in (f"{PREFIX}/config", "/config"):  # a proxy that forwards /studio/... as is, and one that strips it
        status, _, body = lan.request("GET", path, headers=proxy, page=True)
        assert status == 200 and json.loads(body)["root"] == f"https://studio.lan{PREFIX}", path
    for path in (f"{PREFIX}/sdapi/v1/sd-models", "/sdapi/v1/sd-models"):
        assert lan.request("GET", path, api=True)[0] == 200, path
    status, _, body = lan.request("GET", f"{PREFIX}/docs", api=True)
    assert status == 200 and f"{PREFIX}/openapi.json".encode() in body


# -- the non-local policy over the API ------------------------------------------------------

@pytest.mark.parametrize("folder", ["/tmp/elsewhere", "../beside-the-data", "outputs/../../up"])
def test_output_folders_outside_the_data_folder_are_refused(lan, folder):
    status, _, body = lan.request("POST", f"{PREFIX}/sdapi/v1/options", json.dumps({"outdir_txt2img_samples": folder}).encode(),
                                  {"Content-Type": "application/json"}, api=True)
    answer = json.loads(body)
    assert status == 403 and "--enable-insecure-extension-access" in answer["detail"] and "outdir_txt2img_samples" in answer["detail"]
    status, _, body = lan.request("GET", f"{PREFIX}/sdapi/v1/options", api=True)
    assert json.loads(body)["outdir_txt2img_samples"] == "outputs/txt2img-images"


def test_an_output_folder_inside_the_data_folder_is_accepted(lan):
    status, _, _ = lan.request("POST", f"{PREFIX}/sdapi/v1/options", json.dumps({"outdir_extras_samples": "outputs/studio-extras"}).encode(),
                               {"Content-Type": "application/json"}, api=True)
    assert status == 200


# -- path traversal -------------------------------------------------------------------------

def _variants(target: Path, base: Path) -> list[str]:
    """Ways to name `target` from a route that serves files under `base`: absolute, with
    `..` from the base, encoded once or twice, with backslashes, relative to the repo."""
    ups = "../" * (len(base.parts) + 2)
    inside = str(target).lstrip("/")
    forms = [str(target), "/" + str(target), f"{base}/{ups}{inside}", f"{ups}{inside}", f"{base}/{ups}{inside}".replace("/", "\\"),
             ups.replace("/", "\\") + inside.replace("/", "\\")]
    forms += [f.replace("..", "%2e%2e") for f in forms[2:4]]
    forms += [f.replace("..", "%252e%252e") for f in forms[2:4]]
    forms += [f.replace("../", "..%2f") for f in forms[2:4]]
    forms += [f.replace("../", "..%5c") for f in forms[2:4]]
    forms += [f.replace("../", "%2e%2e%2f") for f in forms[2:4]]
    forms += [urllib.parse.quote(str(target), safe="")]
    return forms


def _file_routes(forms: list[str]) -> list[str]:
    """Every gradio route that serves a file named in its path, with and without the prefix."""
    paths = []
    for form in forms:
        for route in ("/gradio_api/file=", "/gradio_api/file/", "/file=", "/static/", "/assets/", "/svelte/", "/gradio_api/custom_component/x/client/y/"):
            paths += [route + form, PREFIX + route + form]
    return paths


def test_no_file_outside_the_allowed_folders_is_ever_served(lan):
    outputs = lan.data / "outputs"
    targets = [Path("/etc/passwd"), REPO / "webui.py", REPO / "modules" / "options.py", lan.data / "config.json", lan.data / "styles.csv",
               lan.data / "queue.sqlite3", lan.data / "models" / "VAE" / "notes.txt", lan.outside / "secret.txt",
               outputs / "link-to-secret.txt", outputs / "link-to-outside" / "secret.txt", outputs / "link-to-config.json"]
    forms = [f for target in targets for f in _variants(target, outputs)]
    forms += ["webui.py", "config.json", "../config.json", "outputs/../config.json", "outputs/link-to-secret.txt", "..%2fwebui.py", "..\\webui.py"]
    leaks = []
    kept = lan.connection()
    try:
        for path in _file_routes(forms):
            quoted = "".join(c if c.isascii() and c.isprintable() and c not in " #?" else urllib.parse.quote(c) for c in path)
            status, _, body = lan.request("GET", quoted, api=True, page=True, kept=kept)
            if status == 200 or MARKER.encode() in body or b"root:x:0:0" in body or b"def main(argv" in body or b"SQLite format 3" in body:
                leaks.append((status, quoted))
    finally:
        kept.close()
    assert leaks == []


def test_files_in_outputs_are_served_to_a_logged_in_user_only(lan):
    shown = lan.data / "outputs" / "txt2img-images" / "shown.png"
    for route in ("/gradio_api/file=", f"{PREFIX}/gradio_api/file="):
        status, _, body = lan.request("GET", route + str(shown), page=True)
        assert status == 200 and body.startswith(b"\x89PNG"), route
        assert lan.request("GET", route + str(shown))[0] == 401
