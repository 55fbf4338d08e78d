"""Log-ins on a shared server: wrong passwords back off (per address and per user, on the page's
log-in and the API's alike: 429 with Retry-After and a sentence), the start warns when only
one side has a log-in, and an anonymous visitor is not handed the API's schema."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

import webui
from modules.login_limits import LoginLimits
from modules.network import exposure_warnings
from modules.options import parse_args


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# -- the rule ---------------------------------------------------------------------------------

def test_five_wrong_passwords_then_a_doubling_pause():
    clock = Clock()
    limits = LoginLimits(clock=clock)  # the shipped numbers: 5 tries, then 30 s, doubling, at most 15 min
    for _ in range(4):
        limits.failed("10.0.0.5", "alice")
        assert limits.refusal("10.0.0.5", "alice") is None
    limits.failed("10.0.0.5", "alice")
    refusal = limits.refusal("10.0.0.5", "alice")
    assert refusal.retry_after == 30 and "try again in 30 seconds" in refusal.detail
    waits = []
    for _ in range(8):
        clock.now += limits.refusal("10.0.0.5", "alice").retry_after
        assert limits.refusal("10.0.0.5", "alice") is None  # the pause is over: one more try
        limits.failed("10.0.0.5", "alice")
        waits.append(limits.refusal("10.0.0.5", "alice").retry_after)
    assert waits == [60, 120, 240, 480, 900, 900, 900, 900]
    clock.now += 900
    limits.succeeded("10.0.0.5", "alice")  # a right password resets the count
    limits.failed("10.0.0.5", "alice")
    assert limits.refusal("10.0.0.5", "alice") is None


def test_the_address_and_the_user_are_counted_apart():
    clock = Clock()
    limits = LoginLimits(max_failures=3, clock=clock)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):  # one user, tried from many machines
        limits.failed(address, "alice")
    assert "for the user 'alice'" in limits.refusal("10.0.0.9", "alice").detail
    assert limits.refusal("10.0.0.9", "bob") is None
    for user in ("carol", "dave", "erin"):  # one machine, trying many users
        limits.failed("10.0.0.7", user)
    assert "from this address" in limits.refusal("10.0.0.7", "frank").detail
    assert limits.refusal("10.0.0.8", "frank") is None


def test_wrong_passwords_are_forgotten_after_a_quiet_while():
    clock = Clock()
    limits = LoginLimits(max_failures=3, forget_after=600, clock=clock)
    limits.failed("10.0.0.1", "alice")
    limits.failed("10.0.0.1", "alice")
    clock.now += 601
    limits.failed("10.0.0.1", "alice")  # counts as the first again
    assert limits.refusal("10.0.0.1", "alice") is None


def test_nonsense_limits_are_refused():
    with pytest.raises(ValueError, match="max_failures"):
        LoginLimits(max_failures=0)


# -- on the server ----------------------------------------------------------------------------

@pytest.fixture
def server(tmp_path):
    """A shared server with both log-ins (alice on both sides) and limits on a clock the test moves."""
    clock = Clock()
    args = parse_args(["--data-dir", str(tmp_path), "--listen", "--api", "--gradio-auth", "alice:apple,owner:pw", "--api-auth",
                       "alice:apple,robot:beep", "--disable-console-progressbars"])
    app = webui.App.create(args)
    app.login_limits = LoginLimits(max_failures=3, base_delay=20, clock=clock)
    asgi = app.build_asgi(args)
    try:
        with TestClient(asgi) as client:
            yield client, asgi, clock
    finally:
        app.queue.shutdown()


def page_login(client, user: str, password: str):
    return client.post("/login", data={"username": user, "password": password})


def test_the_page_log_in_backs_off_and_a_right_password_works_after_the_pause(server):
    client, _, clock = server
    for _ in range(3):
        assert page_login(client, "owner", "guess").status_code == 400
    r = page_login(client, "owner", "pw")  # even the right password waits now
    assert r.status_code == 429 and r.headers["retry-after"] == "20"
    assert "Too many wrong passwords" in r.json()["detail"] and "try again in 20 seconds" in r.json()["detail"]
    assert "access-token" not in r.headers.get("set-cookie", "")
    clock.now += 20
    assert page_login(client, "owner", "pw").json() == {"success": True}
    for _ in range(2):  # the count started again
        assert page_login(client, "owner", "guess").status_code == 400
    assert page_login(client, "owner", "pw").status_code == 200


def test_the_page_log_in_backs_off_per_user_across_addresses(server):
    _, asgi, clock = server
    for number in range(3):
        assert page_login(TestClient(asgi, client=(f"10.0.0.{number}", 5000)), "owner", "guess").status_code == 400
    elsewhere = TestClient(asgi, client=("10.0.0.99", 5000))
    r = page_login(elsewhere, "owner", "pw")
    assert r.status_code == 429 and "for the user 'owner'" in r.json()["detail"]
    assert page_login(elsewhere, "alice", "apple").status_code == 200  # another user from there is not held up


def test_the_api_backs_off_too(server):
    client, _, clock = server
    for _ in range(3):
        r = client.get("/sdapi/v1/options", headers=basic("robot", "guess"))
        assert r.status_code == 401 and r.json()["detail"] == "Incorrect username or password"
    r = client.get("/sdapi/v1/options", headers=basic("robot", "beep"))
    assert r.status_code == 429 and r.headers["retry-after"] == "20" and "Too many wrong passwords" in r.json()["detail"]
    assert client.get("/docs", headers=basic("robot", "beep")).status_code == 429
    r = client.get("/sdapi/v1/options", headers={"Authorization": "Basic !!!"})  # a malformed header is no try
    assert r.status_code == 401
    clock.now += 20
    assert client.get("/sdapi/v1/options", headers=basic("robot", "beep")).status_code == 200


def test_the_page_and_the_api_share_one_count(server):
    client, _, _ = server
    assert page_login(client, "alice", "guess").status_code == 400
    assert client.get("/sdapi/v1/options", headers=basic("alice", "guess")).status_code == 401
    assert page_login(client, "alice", "guess").status_code == 400
    assert page_login(client, "alice", "apple").status_code == 429
    assert client.get("/sdapi/v1/options", headers=basic("alice", "apple")).status_code == 429


def test_with_the_shipped_limits_a_burst_of_guesses_gets_five_tries(tmp_path):
    args = parse_args(["--data-dir", str(tmp_path), "--listen", "--api", "--gradio-auth", "owner:pw", "--api-auth", "robot:beep",
                       "--disable-console-progressbars"])
    app = webui.App.create(args)
    try:
        with TestClient(app.build_asgi(args)) as client:
            page = [page_login(client, "owner", f"guess{n}").status_code for n in range(40)]
            api = [client.get("/sdapi/v1/options", headers=basic("robot", f"guess{n}")).status_code for n in range(40)]
    finally:
        app.queue.shutdown()
    assert page == [400] * 5 + [429] * 35
    assert api == [429] * 40  # the same address has used its tries on the page


# -- what an anonymous visitor is handed --------------------------------------------------------

SCHEMAS = ("/openapi.json", "/docs", "/redoc")
PAGE_SCHEMAS = ("/config", "/gradio_api/info", "/gradio_api/openapi.json", "/info", "/gradio_api/config")


def test_with_a_page_log_in_and_an_open_api_the_schema_needs_the_page_log_in(tmp_path):
    args = parse_args(["--data-dir", str(tmp_path), "--listen", "--api", "--gradio-auth", "owner:pw", "--disable-console-progressbars"])
    app = webui.App.create(args)
    try:
        with TestClient(app.build_asgi(args)) as client:
            for path in (*SCHEMAS, *PAGE_SCHEMAS):
                r = client.get(path)
                assert r.status_code == 401 and "log in" in r.json()["detail"], path
            page = client.get("/")
            assert page.status_code == 200 and "txt2img_prompt" not in page.text and "/sdapi/v1/txt2img" not in page.text
            assert client.get("/sdapi/v1/samplers").status_code == 200  # the API itself is open: the start warns about that
            assert page_login(client, "owner", "pw").status_code == 200
            r = client.get("/openapi.json")
            assert r.status_code == 200 and "/sdapi/v1/txt2img" in r.json()["paths"]
            assert client.get("/docs").status_code == 200
    finally:
        app.queue.shutdown()


def test_with_api_auth_the_schema_needs_the_api_credentials(tmp_path):
    args = parse_args(["--data-dir", str(tmp_path), "--listen", "--api", "--gradio-auth", "owner:pw", "--api-auth", "robot:beep",
                       "--disable-console-progressbars"])
    app = webui.App.create(args)
    try:
        with TestClient(app.build_asgi(args)) as client:
            for path in SCHEMAS:
                r = client.get(path)
                assert r.status_code == 401 and "HTTP Basic" in r.json()["detail"], path
                assert client.get(path, headers=basic("robot", "beep")).status_code == 200, path
            for path in PAGE_SCHEMAS:
                assert client.get(path).status_code == 401, path
            page = client.get("/")
            assert page.status_code == 200 and "txt2img_prompt" not in page.text and "/sdapi/v1/txt2img" not in page.text
    finally:
        app.queue.shutdown()


# -- the start's warnings ---------------------------------------------------------------------

def test_the_start_warns_when_only_one_side_has_a_log_in():
    page_only = " ".join(exposure_warnings(parse_args(["--listen", "--api", "--gradio-auth", "a:b"])))
    assert "without --api-auth" in page_only and "API (/sdapi/v1) is OPEN" in page_only
    api_only = " ".join(exposure_warnings(parse_args(["--listen", "--api", "--api-auth", "a:b"])))
    assert "without --gradio-auth" in api_only and "The page is OPEN" in api_only and "--api-auth guards only the API" in api_only
    assert exposure_warnings(parse_args(["--listen", "--api", "--api-auth", "a:b", "--gradio-auth", "c:d"])) == []
    assert exposure_warnings(parse_args(["--api", "--gradio-auth", "a:b"])) == []  # not shared: nothing to warn about
