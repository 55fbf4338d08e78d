"""--share, --cloudflared, --autolaunch and --theme, offline: the tunnels' programs are small
fakes that print what the real ones print, and nothing reaches beyond loopback."""

from __future__ import annotations

import http.server
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import launch
from modules import sharing
from modules.options import parse_args
from modules.ui.theme import ForcedTheme
from tests.servers import free_port, launched


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):  # noqa: N802
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def serve_ok(port: int) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def browser_calls(monkeypatch):
    import webbrowser

    calls = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: calls.append(url))
    return calls


def fake_program(path: Path, body: str) -> Path:
    """An executable Python script standing in for frpc or cloudflared."""
    path.write_text(f"#!{sys.executable}\nimport os, sys, time\n{body}\n")
    path.chmod(0o755)
    return path


def stopped(pid: int, timeout: float = 10) -> bool:
    """The process has ended (a zombie waiting for its parent to reap it counts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def fake_tunnel(url: str):
    closed = []
    return (lambda local: sharing.Tunnel("fake", url, lambda: closed.append(local))), closed


def test_flags_parse():
    args = parse_args(["--share", "--cloudflared", "--theme", "dark", "--autolaunch"])
    assert (args.share, args.cloudflared, args.theme, args.autolaunch) == (True, True, "dark", True)
    plain = parse_args([])
    assert (plain.share, plain.cloudflared, plain.theme, plain.autolaunch) == (False, False, None, False)
    with pytest.raises(SystemExit):
        parse_args(["--theme", "blue"])


# --- --autolaunch -------------------------------------------------------------------------------


def test_autolaunch_opens_the_local_page_once_the_server_answers(browser_calls):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    links = sharing.StartupLinks(parse_args(["--autolaunch"]), url, wait_timeout=20)
    links.start()
    time.sleep(0.8)
    assert browser_calls == []  # nothing answers yet
    server = serve_ok(port)
    try:
        links.wait(20)
        assert browser_calls == [url]
    finally:
        server.shutdown()
        links.close()


@pytest.mark.parametrize("flags", [["--listen"], ["--share"], ["--cloudflared"], ["--server-name", "0.0.0.0"], ["--nowebui"]])
def test_autolaunch_does_nothing_unless_local(flags, browser_calls, capsys):
    server = serve_ok(port := free_port())
    try:
        opener, _ = fake_tunnel("https://abc.gradio.live")
        links = sharing.StartupLinks(parse_args(["--autolaunch", *flags]), f"http://127.0.0.1:{port}",
                                     openers={"share": opener, "cloudflared": opener}, wait_timeout=10)
        links.start()
        links.wait(20)
        links.close()
    finally:
        server.shutdown()
    assert browser_calls == [] and not links.browser_opened
    assert sharing.is_local_start(parse_args(["--server-name", "127.0.0.1"]))


def test_nothing_runs_without_the_flags():
    links = sharing.StartupLinks(parse_args([]), "http://127.0.0.1:9")
    links.start()
    assert links._thread is None


# --- what the console says ----------------------------------------------------------------------


def test_public_urls_are_printed_and_an_open_link_is_warned_about(capsys):
    server = serve_ok(port := free_port())
    share, share_closed = fake_tunnel("https://abc.gradio.live")
    cloud, cloud_closed = fake_tunnel("https://a-b-c.trycloudflare.com")
    try:
        links = sharing.StartupLinks(parse_args(["--share", "--cloudflared", "--api"]), f"http://127.0.0.1:{port}",
                                     openers={"share": share, "cloudflared": cloud}, wait_timeout=10)
        links.start()
        links.wait(20)
        out = capsys.readouterr().out
        assert "Running on public URL: https://abc.gradio.live\n" in out
        assert "Running on public URL: https://a-b-c.trycloudflare.com\n" in out
        assert "WARNING: the public link has no log-in." in out and "--gradio-auth user:password" in out
        assert "add --api-auth" in out
        links.close()
        assert share_closed and cloud_closed  # the tunnels end with the server
    finally:
        server.shutdown()


def test_no_warning_with_a_log_in(capsys):
    server = serve_ok(port := free_port())
    share, _ = fake_tunnel("https://abc.gradio.live")
    try:
        links = sharing.StartupLinks(parse_args(["--share", "--gradio-auth", "me:secret"]), f"http://127.0.0.1:{port}",
                                     openers={"share": share}, wait_timeout=10)
        links.start()
        links.wait(20)
        links.close()
    finally:
        server.shutdown()
    out = capsys.readouterr().out
    assert "Running on public URL: https://abc.gradio.live" in out and "WARNING" not in out


def test_a_tunnel_that_fails_is_a_message_and_the_other_still_opens(capsys):
    server = serve_ok(port := free_port())

    def broken(local):
        raise sharing.TunnelError("gradio's share server (api.gradio.app) could not be reached: is this machine online?")

    def crashing(local):
        raise KeyError("surprise")

    cloud, _ = fake_tunnel("https://a-b-c.trycloudflare.com")
    try:
        url = f"http://127.0.0.1:{port}"
        links = sharing.StartupLinks(parse_args(["--share", "--cloudflared"]), url, openers={"share": broken, "cloudflared": cloud}, wait_timeout=10)
        links.start()
        links.wait(20)
        out = capsys.readouterr().out
        assert f"Could not open the --share tunnel: gradio's share server (api.gradio.app) could not be reached: is this machine online?. The web UI keeps running locally at {url}" in out
        assert "Running on public URL: https://a-b-c.trycloudflare.com" in out
        links.close()
        links = sharing.StartupLinks(parse_args(["--share"]), url, openers={"share": crashing}, wait_timeout=10)
        links.start()
        links.wait(20)
        assert "Could not open the --share tunnel: KeyError: 'surprise'." in capsys.readouterr().out
    finally:
        server.shutdown()


# --- gradio's share tunnel ----------------------------------------------------------------------


def test_gradio_share_offline_says_why(no_network, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # gradio would write .gradio/certificate.pem here after reaching its server
    from gradio import networking

    monkeypatch.setattr(networking, "GRADIO_SHARE_SERVER_ADDRESS", None)
    with pytest.raises(sharing.TunnelError, match=r"share server \(api\.gradio\.app\) could not be reached"):
        sharing.open_gradio_share("http://127.0.0.1:7860")
    assert set(no_network) == {"api.gradio.app"}
    assert not (tmp_path / ".gradio").exists()


def test_gradio_share_runs_frpc_and_returns_its_address(tmp_path, monkeypatch, no_network):
    from gradio import networking, tunneling

    seen = tmp_path / "argv.txt"
    frpc = fake_program(tmp_path / "frpc", f"open({str(seen)!r}, 'w').write(' '.join(sys.argv[1:]))\n"
                                           "print('start proxy success: http://abc123.share.test', flush=True)\n"
                                           "time.sleep(120)")
    monkeypatch.setattr(tunneling, "BINARY_PATH", str(frpc))
    monkeypatch.setattr(networking, "GRADIO_SHARE_SERVER_ADDRESS", "127.0.0.1:7000")  # a share server of one's own: no API call
    tunnel = sharing.open_gradio_share("http://127.0.0.1:7861")
    try:
        assert tunnel.url == "http://abc123.share.test"  # http, as gradio uses for a server of one's own
        argv = seen.read_text().split()
        assert argv[:1] == ["http"] and argv[argv.index("-l") + 1] == "7861" and argv[argv.index("-i") + 1] == "127.0.0.1"
        assert argv[argv.index("--server_addr") + 1] == "127.0.0.1:7000"
        [proc] = [t.proc for t in tunneling.CURRENT_TUNNELS if t.proc is not None and t.local_port == 7861]
    finally:
        tunnel.close()
    assert proc.wait(10) is not None
    assert no_network == []


def test_gradio_share_address_is_https_on_gradios_server(monkeypatch):
    from gradio import networking

    monkeypatch.setattr(networking, "GRADIO_SHARE_SERVER_ADDRESS", None)
    monkeypatch.setattr(networking, "setup_tunnel", lambda host, port, token, address, cert: "http://abc123.gradio.live")
    assert sharing.open_gradio_share("http://127.0.0.1:7860").url == "https://abc123.gradio.live"
    with pytest.raises(sharing.TunnelError, match="use --cloudflared"):  # frpc speaks plain HTTP to the server
        sharing.open_gradio_share("https://127.0.0.1:7860")


# --- cloudflared --------------------------------------------------------------------------------

CLOUDFLARED_OUTPUT = """
open(sys.argv[0] + '.pid', 'w').write(str(os.getpid()))
print('2026-01-01T00:00:00Z INF Requesting new quick Tunnel on trycloudflare.com...', file=sys.stderr, flush=True)
print('2026-01-01T00:00:00Z INF see https://api.trycloudflare.com for terms', file=sys.stderr, flush=True)
print('2026-01-01T00:00:01Z INF |  https://seasonal-feelings-anonymous-dd.trycloudflare.com  |', file=sys.stderr, flush=True)
for i in range(3000):  # cloudflared keeps logging: the pipe must be read or it blocks
    print(f'2026-01-01T00:00:02Z INF Registered tunnel connection connIndex={i} ' + 'x' * 60, file=sys.stderr)
open(sys.argv[0] + '.done', 'w').write(str(os.getpid()))
time.sleep(120)
"""


def test_cloudflared_prints_its_address_and_is_stopped_on_close(tmp_path):
    seen = tmp_path / "argv.txt"
    binary = fake_program(tmp_path / "cloudflared", f"open({str(seen)!r}, 'w').write(' '.join(sys.argv[1:]))\n" + CLOUDFLARED_OUTPUT)
    tunnel = sharing.open_cloudflared("http://127.0.0.1:7860", binary=str(binary), timeout=20)
    try:
        assert tunnel.url == "https://seasonal-feelings-anonymous-dd.trycloudflare.com"
        assert seen.read_text() == "tunnel --no-autoupdate --url http://127.0.0.1:7860"
        done = Path(str(binary) + ".done")
        deadline = time.monotonic() + 20
        while not done.exists() and time.monotonic() < deadline:  # it got past 3000 lines of log
            time.sleep(0.1)
        pid = int(done.read_text())
    finally:
        tunnel.close()
    assert stopped(pid)


def test_cloudflared_that_fails_says_why(tmp_path):
    binary = fake_program(tmp_path / "cloudflared", "print('ERR failed to request quick Tunnel: Post \"https://api.trycloudflare.com/tunnel\": dial tcp: lookup api.trycloudflare.com: no such host', file=sys.stderr)\nsys.exit(1)")
    with pytest.raises(sharing.TunnelError, match=r"exited with code 1\. Its last lines: ERR failed to request quick Tunnel"):
        sharing.open_cloudflared("http://127.0.0.1:7860", binary=str(binary), timeout=20)


def test_cloudflared_that_gives_no_address_in_time(tmp_path):
    binary = fake_program(tmp_path / "cloudflared", "print('INF starting', file=sys.stderr, flush=True)\ntime.sleep(60)")
    with pytest.raises(sharing.TunnelError, match=r"no address within 1 s\. Its last lines: INF starting"):
        sharing.open_cloudflared("http://127.0.0.1:7860", binary=str(binary), timeout=1)


def test_no_cloudflared_anywhere(monkeypatch):
    monkeypatch.setattr(sharing.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "pycloudflared", None)  # not installed
    assert sharing.find_cloudflared() is None
    with pytest.raises(sharing.TunnelError, match="no cloudflared program"):
        sharing.open_cloudflared("http://127.0.0.1:7860")


def test_pycloudflared_fetches_the_program_once(tmp_path, monkeypatch):
    """Without cloudflared on PATH, pycloudflared's copy is used; a failed download leaves no
    partial file behind to pass for the program next time."""
    import types

    executable = tmp_path / "cloudflared-linux-amd64"
    info = types.SimpleNamespace(executable=str(executable), url="https://github.com/cloudflare/cloudflared/releases/cloudflared-linux-amd64")
    util = types.ModuleType("pycloudflared.util")
    util.get_info = lambda: info

    def offline(found):
        executable.write_bytes(b"partial")
        raise OSError("network disabled in tests")

    util.download = offline
    package = types.ModuleType("pycloudflared")
    package.util = util
    monkeypatch.setitem(sys.modules, "pycloudflared", package)
    monkeypatch.setitem(sys.modules, "pycloudflared.util", util)
    monkeypatch.setattr(sharing.shutil, "which", lambda name: None)
    with pytest.raises(sharing.TunnelError, match="could not be downloaded from https://github.com/cloudflare/.*network disabled"):
        sharing.find_cloudflared()
    assert not executable.exists()
    util.download = lambda found: executable.write_bytes(b"program")
    assert sharing.find_cloudflared() == str(executable)
    util.download = lambda found: pytest.fail("downloaded twice")
    assert sharing.find_cloudflared() == str(executable)


def test_launch_installs_pycloudflared_only_for_cloudflared(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(launch, "run_pip", lambda argv, description: calls.append(argv))
    monkeypatch.setattr(launch, "installed_version", lambda name: None)
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)
    options = launch.LaunchOptions()
    assert launch.ensure_cloudflared(["--share"], options, env={}) is False
    assert launch.ensure_cloudflared(["--cloudflared"], options, env={}) is True
    [argv] = calls
    assert argv[3:5] == ["install", "pycloudflared>=0.3,<0.4"]
    monkeypatch.setattr(launch.shutil, "which", lambda name: "/usr/local/bin/cloudflared")
    assert launch.ensure_cloudflared(["--cloudflared"], options, env={}) is False  # the program is there already
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)
    assert launch.ensure_cloudflared(["--cloudflared"], launch.LaunchOptions(skip_install=True), env={}) is False
    assert "no tunnel will open" in capsys.readouterr().out

    def failing(argv, description):
        raise launch.LaunchError("installing pycloudflared failed (exit code 1)")

    monkeypatch.setattr(launch, "run_pip", failing)
    assert launch.ensure_cloudflared(["--cloudflared"], options, env={}) is False  # a warning, not a stop
    assert "--cloudflared will not open a tunnel" in capsys.readouterr().out


# --- --theme ------------------------------------------------------------------------------------


def _themed(theme: str = "dark", **kwargs) -> TestClient:
    inner = Starlette(routes=[Route("/", lambda r: PlainTextResponse("page")), Route("/config", lambda r: PlainTextResponse("{}"))])
    return TestClient(ForcedTheme(inner, theme=theme, **kwargs), follow_redirects=False)


def test_theme_redirects_a_browser_opening_the_page():
    client = _themed()
    html = {"accept": "text/html,application/xhtml+xml"}
    assert client.get("/", headers=html).status_code == 307
    assert client.get("/", headers=html).headers["location"] == "?__theme=dark"
    assert client.get("/?view=api", headers=html).headers["location"] == "?view=api&__theme=dark"
    assert client.get("/", headers=html, follow_redirects=True).text == "page"
    assert client.get("/?__theme=light", headers=html).status_code == 200  # the address's own choice wins
    assert client.get("/config", headers=html).status_code == 200
    assert client.get("/", headers={"accept": "application/json"}).status_code == 200  # not a browser page load
    assert client.head("/", headers=html).status_code in (200, 405)
    assert _themed("light").get("/", headers=html).headers["location"] == "?__theme=light"
    with pytest.raises(ValueError):
        _themed("blue")


def test_theme_on_the_real_page(tmp_path):
    import webui

    app = webui.App.create(parse_args(["--data-dir", str(tmp_path), "--disable-console-progressbars"]))
    try:
        client = TestClient(app.build_asgi(parse_args(["--theme", "dark"])), follow_redirects=False)
        response = client.get("/", headers={"accept": "text/html"})
        assert response.status_code == 307 and response.headers["location"] == "?__theme=dark"
        assert client.get("/?__theme=dark", headers={"accept": "text/html"}).status_code == 200
    finally:
        app.queue.shutdown()


# --- the whole start, through launch.py ---------------------------------------------------------


@pytest.mark.slow  # a whole launch.py start
def test_launch_with_share_and_cloudflared_offline(tmp_path, monkeypatch):
    """A share server that refuses the log-in and a cloudflared that opens: the console says
    which opened, the local page answers throughout, and cloudflared stops with the server."""
    from gradio import tunneling

    hf_home = tmp_path / "hf"
    frpc = hf_home / "gradio" / "frpc" / tunneling.BINARY_FILENAME
    frpc.parent.mkdir(parents=True)
    fake_program(frpc, "print('login to server failed: connection refused', flush=True)\nsys.exit(1)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_program(bin_dir / "cloudflared", CLOUDFLARED_OUTPUT)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("GRADIO_SHARE_SERVER_ADDRESS", "127.0.0.1:9")  # never api.gradio.app
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    data = tmp_path / "data"
    data.mkdir()
    log = data / "server.log"
    with launched(data, "--share", "--cloudflared", "--no-download-sd-model") as url:
        done = Path(str(bin_dir / "cloudflared") + ".done")
        deadline = time.monotonic() + 60
        while not ("Running on public URL: https://" in log.read_text() and done.exists()) and time.monotonic() < deadline:
            time.sleep(0.3)
        import urllib.request

        with urllib.request.urlopen(url + "/", timeout=10) as page:
            assert page.status == 200
        pid = int(done.read_text())
    text = log.read_text()
    assert "Could not open the --share tunnel: gradio's tunnel program (frpc) gave no address: login to server failed: connection refused." in text and f"keeps running locally at {url}" in text
    assert "Running on public URL: https://seasonal-feelings-anonymous-dd.trycloudflare.com" in text
    assert "WARNING: the public link has no log-in." in text
    assert stopped(pid)
