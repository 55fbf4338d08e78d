"""The LAN rules in-process: which flags make the server non-local, what that turns off (the
batch tabs' server folders, output folders outside the data folder: a message on the page,
403 from the API) and what --enable-insecure-extension-access turns back on; the page's
log-in on every route; --gradio-auth-path, --subpath and TLS flags checked at start."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import gradio as gr
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from PIL import Image
from starlette.routing import Mount, Route

import webui
from modules.network import AccessRefused, ServerAccess, page_users, subpath, tls_options
from modules.options import parse_args
from modules.settings import SettingsStore
from tests import aio
from tests.servers import data_dir_with_tiny_model, self_signed_certificate

INSECURE = "--enable-insecure-extension-access"


# -- the policy -----------------------------------------------------------------------------

@pytest.mark.parametrize("flags, shared_by", [
    ([], ()), (["--listen"], ("--listen",)), (["--server-name", "127.0.0.1"], ("--server-name",)), (["--share"], ("--share",)),
    (["--listen", "--server-name", "studio"], ("--listen", "--server-name")),
])
def test_the_flags_that_make_the_server_non_local(tmp_path, flags, shared_by):
    access = ServerAccess.from_args(parse_args(flags), tmp_path)
    assert access.shared_by == shared_by and access.restricted == bool(shared_by)
    assert not ServerAccess.from_args(parse_args([*flags, INSECURE]), tmp_path).restricted


@pytest.mark.parametrize("value, refused", [
    ("/tmp/x", True), ("../beside", True), ("outputs/../../up", True), ("outputs/mine", False), ("mine", False), ("", False),
    ("outputs/./a/../b", False),
])
def test_output_folders_must_stay_in_the_data_folder_when_non_local(tmp_path, value, refused):
    restricted = ServerAccess(tmp_path, ("--listen",))
    if refused:
        with pytest.raises(AccessRefused, match=f"outdir_txt2img_samples must be a folder inside the data folder.*{INSECURE}"):
            restricted.check_setting("outdir_txt2img_samples", value)
    else:
        restricted.check_setting("outdir_txt2img_samples", value)
    for allowed in (ServerAccess(tmp_path), ServerAccess(tmp_path, ("--listen",), insecure_allowed=True)):
        allowed.check_setting("outdir_txt2img_samples", value)
    restricted.check_setting("samples_filename_pattern", "/tmp/x")  # not a folder setting


def test_a_folder_already_in_config_json_is_not_refused_but_a_new_one_is(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"outdir_txt2img_grids": "/srv/grids"}))
    store = SettingsStore.open(tmp_path / "config.json")
    store.add_guard(ServerAccess(tmp_path, ("--listen",)).check_setting)
    store.update({"outdir_txt2img_grids": "/srv/grids", "jpeg_quality": 90})  # the owner's value, sent back unchanged by the page
    with pytest.raises(AccessRefused):
        store.update({"outdir_txt2img_grids": "/srv/other", "jpeg_quality": 70})
    assert store["outdir_txt2img_grids"] == "/srv/grids" and store["jpeg_quality"] == 90



def test_work_limits_can_be_lowered_but_not_loosened_by_visitors_of_a_shared_server(tmp_path):
    store = SettingsStore.open(tmp_path / "config.json")
    access = ServerAccess(tmp_path, ("--listen",))
    store.add_guard(lambda key, value: access.check_limit(key, value, store.get(key)))
    store.update({"limit_and_parts": 8})  # tighter: fine
    for loosened in (9, 0):
        with pytest.raises(AccessRefused, match=f"limit_and_parts can only be lowered.*it is 8, asked {loosened}.*{INSECURE}"):
            store.update({"limit_and_parts": loosened})
    assert store["limit_and_parts"] == 8
    local = SettingsStore.open(tmp_path / "local.json")
    local.add_guard(lambda key, value: ServerAccess(tmp_path).check_limit(key, value, local.get(key)))
    local.update({"limit_and_parts": 0})  # on one's own machine, anything goes
    assert local["limit_and_parts"] == 0

# -- flags read at start ----------------------------------------------------------------------

def test_gradio_auth_path_entries_are_merged_with_gradio_auth(tmp_path):
    logins = tmp_path / "logins.txt"
    logins.write_text("alice:a\r\n\n bob:b:c , carol:c\n", encoding="utf-8")
    args = parse_args(["--gradio-auth", "owner:o", "--gradio-auth-path", str(logins)])
    assert page_users(args) == {"owner": "o", "alice": "a", "bob": "b:c", "carol": "c"}
    assert page_users(parse_args(["--gradio-auth-path", str(logins)])) == {"alice": "a", "bob": "b:c", "carol": "c"}


@pytest.mark.parametrize("content, message", [(None, "cannot read"), ("\n\n", "holds no user:password"), ("nocolon\n", "Bad credentials 'nocolon'")])
def test_a_bad_auth_file_is_named(tmp_path, content, message):
    logins = tmp_path / "logins.txt"
    if content is not None:
        logins.write_text(content)
    with pytest.raises(ValueError, match=message):
        page_users(parse_args(["--gradio-auth-path", str(logins)]))


def test_tls_flags_are_checked(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    key, cert = self_signed_certificate(first)
    other_key, _ = self_signed_certificate(second)
    assert tls_options(parse_args([])) == {}
    assert tls_options(parse_args(["--tls-keyfile", str(key), "--tls-certfile", str(cert)])) == {"ssl_keyfile": str(key), "ssl_certfile": str(cert)}
    with pytest.raises(ValueError, match="needs both"):
        tls_options(parse_args(["--tls-certfile", str(cert)]))
    with pytest.raises(ValueError, match="is not a file"):
        tls_options(parse_args(["--tls-keyfile", str(tmp_path / "none.pem"), "--tls-certfile", str(cert)]))
    with pytest.raises(ValueError, match="not a matching PEM certificate and key"):
        tls_options(parse_args(["--tls-keyfile", str(other_key), "--tls-certfile", str(cert)]))


@pytest.mark.parametrize("value, expected", [(None, ""), ("", ""), ("/", ""), ("sd", "/sd"), ("/sd/", "/sd"), ("/a/b", "/a/b")])
def test_subpath_is_normalised(value, expected):
    assert subpath(value) == expected


@pytest.mark.parametrize("flags, message", [
    (["--subpath", "/a/../b"], "--subpath"), (["--subpath", "/a b"], "--subpath"),
    (["--tls-keyfile", "/no/key.pem"], "needs both"), (["--gradio-auth-path", "/no/such/file"], "cannot read"),
])
def test_bad_lan_flags_stop_the_start_with_a_sentence(tmp_path, capsys, flags, message):
    assert webui.main(["--data-dir", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "queue.sqlite3").exists()  # nothing started


# -- the app, in-process ----------------------------------------------------------------------

def _gradio_app(asgi):
    return next(r.app for r in asgi.routes if isinstance(r, Mount) and hasattr(r.app, "tokens"))


def _handler(asgi, qualname: str):
    blocks = _gradio_app(asgi).get_blocks()
    return next(f for f in blocks.fns.values() if f.fn is not None and f.fn.__qualname__ == qualname)


def _inputs(fn, **by_elem_id) -> list:
    """The handler's inputs as gradio hands them over: each control's default, preprocessed,
    with `by_elem_id` replacing some; `state0`, `state1` name the gr.State inputs in order."""
    values, states = [], 0
    for component in fn.inputs:
        if isinstance(component, gr.State):
            key, states = f"state{states}", states + 1
            values.append(by_elem_id.get(key, component.value))
        else:
            values.append(by_elem_id.get(component.elem_id, component.preprocess(component.postprocess(component.value))))
    return values


def _elem_ids(asgi) -> set[str]:
    return {c.get("props", {}).get("elem_id") for c in _gradio_app(asgi).get_blocks().config["components"]}


async def _drain(generator) -> list:
    return [item async for item in generator]


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_checkpoint):
    """Two apps on the tiny model, both non-local (--server-name): one as shipped, one with
    --enable-insecure-extension-access."""
    made = {}
    for name, extra in (("restricted", []), ("insecure", [INSECURE])):
        data = data_dir_with_tiny_model(tmp_path_factory.mktemp(f"lan-{name}"), tiny_checkpoint)
        args = parse_args(["--data-dir", str(data), "--server-name", "127.0.0.1", "--api", "--disable-console-progressbars", *extra])
        app = webui.App.create(args)
        app.start(str(data / "models" / "Stable-diffusion" / tiny_checkpoint.name))
        made[name] = (app, app.build_asgi(args), data)
    for app, _, _ in made.values():
        assert app.startup.wait(120)
    yield made
    for app, _, _ in made.values():
        app.queue.shutdown()


def _folder_of_images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (200, 40, 40)).save(folder / "red.png")
    return folder


def _img2img_batch(asgi, source: Path, target: Path) -> list:
    fn = _handler(asgi, "build_img2img_tab.<locals>.run")
    values = _inputs(fn, state0=4, img2img_batch_input_dir=str(source), img2img_batch_output_dir=str(target), img2img_steps=2,
                     img2img_width=64, img2img_height=64)
    return aio.run(_drain(fn.fn(SimpleNamespace(session_hash="lan-test", username=None, client=None), gr.Progress(), *values)))


def _extras_batch(asgi, source: Path, target: Path):
    fn = _handler(asgi, "build_extras_tab.<locals>.run_for_panel")
    values = _inputs(fn, state0=2, extras_batch_input_dir=str(source), extras_batch_output_dir=str(target), extras_upscaling_resize=2)
    return aio.run(fn.fn(None, gr.Progress(), *values))


def _apply_settings(app, asgi, **changes) -> str:
    fn = _handler(asgi, "build_settings_tab.<locals>.apply_settings")
    current = {**app.settings.values, "sd_model_checkpoint": app.models.current.title if app.models.current else None}
    values = [changes.get(c.elem_id.removeprefix("settings_"), current.get(c.elem_id.removeprefix("settings_"))) for c in fn.inputs]
    return aio.run(fn.fn(None, *values))[0]


def test_non_local_page_refuses_the_img2img_batch_with_a_message(servers, tmp_path):
    _, asgi, _ = servers["restricted"]
    with pytest.raises(gr.Error, match=f"img2img Batch .* is turned off: this server is shared on the network \\(--server-name\\).*{INSECURE}"):
        _img2img_batch(asgi, _folder_of_images(tmp_path / "in"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    shown = _elem_ids(asgi)
    assert "img2img_batch_refused" in shown and "extras_batch_directory_refused" in shown  # said up front, in the tabs


def test_non_local_page_refuses_the_extras_folder_batch_with_a_message(servers, tmp_path):
    _, asgi, _ = servers["restricted"]
    with pytest.raises(gr.Error, match=f"Batch from Directory.* is turned off.*{INSECURE}"):
        _extras_batch(asgi, _folder_of_images(tmp_path / "in"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_local_settings_tab_refuses_an_output_folder_outside_the_data_folder(servers, tmp_path):
    app, asgi, data = servers["restricted"]
    shown = _apply_settings(app, asgi, outdir_img2img_samples=str(tmp_path / "elsewhere"), jpeg_quality=85)
    assert "Not applied: outdir_img2img_samples must be a folder inside the data folder" in shown and INSECURE in shown
    assert app.settings["outdir_img2img_samples"] == "outputs/img2img-images" and app.settings["jpeg_quality"] == 85  # the rest applied
    assert "Not applied" not in _apply_settings(app, asgi, outdir_img2img_samples="outputs/studio-img2img")


def test_non_local_api_answers_403_for_an_output_folder_outside_the_data_folder(servers, tmp_path):
    app, asgi, _ = servers["restricted"]
    with TestClient(asgi) as client:
        r = client.post("/sdapi/v1/options", json={"outdir_extras_samples": str(tmp_path), "jpeg_quality": 60})
        assert r.status_code == 403 and "outdir_extras_samples must be a folder inside the data folder" in r.json()["detail"]
        assert app.settings["outdir_extras_samples"] == "outputs/extras-images" and app.settings["jpeg_quality"] != 60  # nothing applied
        assert client.post("/sdapi/v1/options", json={"outdir_extras_samples": "outputs/lan-extras"}).status_code == 200


def test_insecure_flag_allows_the_batches_and_any_output_folder(servers, tmp_path):
    app, asgi, _ = servers["insecure"]
    source = _folder_of_images(tmp_path / "in")
    _img2img_batch(asgi, source, tmp_path / "img2img-out")
    assert (tmp_path / "img2img-out" / "red.png").is_file()
    _extras_batch(asgi, source, tmp_path / "extras-out")
    assert Image.open(tmp_path / "extras-out" / "red.png").size == (128, 128)
    assert "Not applied" not in _apply_settings(app, asgi, outdir_img2img_samples=str(tmp_path / "anywhere"))
    with TestClient(asgi) as client:
        assert client.post("/sdapi/v1/options", json={"outdir_extras_samples": str(tmp_path / "x")}).status_code == 200
    assert "img2img_batch_refused" not in _elem_ids(asgi)


# -- log-in on every route --------------------------------------------------------------------

LOGIN_PAGE = {"/", "/login", "/login/", "/logout", "/theme.css", "/favicon.ico", "/manifest.json", "/robots.txt", "/static/{path:path}",
              "/assets/{path:path}"}


def _routes(asgi) -> list[tuple[str, str]]:
    """(method, path template) for every route of the app and of the gradio app mounted in it,
    routers included (FastAPI keeps an included router as one entry)."""
    found = []

    def walk(routes, prefix: str = "") -> None:
        for route in routes:
            if hasattr(route, "original_router"):
                walk(route.original_router.routes, prefix + route.include_context.prefix)
            elif isinstance(route, (APIRoute, Route)) and route.methods:
                found.extend((method, prefix + route.path) for method in sorted(route.methods - {"HEAD"}))

    walk(asgi.routes)
    walk(_gradio_app(asgi).routes)
    return found


def _fill(template: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: "1" if m.group(1) in ("size", "component_id") else "x", template)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    data = tmp_path_factory.mktemp("lan-auth")
    (data / "outputs").mkdir()
    Image.new("RGB", (4, 4)).save(data / "outputs" / "mine.png")
    args = parse_args(["--data-dir", str(data), "--listen", "--api", "--gradio-auth", "owner:pw", "--api-auth", "robot:rpw",
                       "--disable-console-progressbars"])
    app = webui.App.create(args)
    asgi = app.build_asgi(args)
    with TestClient(asgi) as client:
        yield client, asgi, data
    app.queue.shutdown()


def test_every_route_refuses_an_anonymous_request_but_the_log_in_page(guarded):
    client, asgi, _ = guarded
    routes = _routes(asgi)
    assert len(routes) > 60 and ("POST", "/sdapi/v1/txt2img") in routes and ("GET", "/gradio_api/file={path_or_url:path}") in routes
    open_to_anyone = []
    for method, template in routes:
        r = client.request(method, _fill(template), json={} if method != "GET" else None, follow_redirects=False)
        refused = r.status_code in (401, 403) or (r.is_redirect and urlparse(r.headers["location"]).path in ("", "/"))  # to the log-in
        if not refused and template not in LOGIN_PAGE:
            open_to_anyone.append((method, template, r.status_code))
    assert open_to_anyone == []
    page = client.get("/")
    assert page.status_code == 200 and '"auth_required":true' in page.text.replace(" ", "") and "txt2img_prompt" not in page.text


def test_with_credentials_the_routes_work(guarded):
    client, _, data = guarded
    assert client.post("/login", data={"username": "owner", "password": "pw"}).json() == {"success": True}
    assert "txt2img_prompt" in client.get("/").text
    for path in ("/config", "/gradio_api/info", f"/gradio_api/file={data / 'outputs' / 'mine.png'}"):
        assert client.get(path).status_code == 200, path
    assert client.get("/sdapi/v1/options").status_code == 401  # the page's log-in is not the API's
    for path in ("/sdapi/v1/options", "/sdapi/v1/sd-models", "/docs", "/openapi.json"):
        assert client.get(path, auth=("robot", "rpw")).status_code == 200, path
    client.cookies.clear()


def test_gradio_never_fetches_other_sites_for_a_visitor(guarded):
    client, _, _ = guarded
    client.post("/login", data={"username": "owner", "password": "pw"})
    for path in ("/gradio_api/file=https://example.com/cat.png", "/gradio_api/file=http://127.0.0.1:1/x", "/gradio_api/file/https://example.com/x",
                 "/gradio_api/proxy=https://example.com/x"):
        r = client.get(path)
        assert r.status_code == 403 and "does not fetch" in r.json()["detail"], path
    client.cookies.clear()


def test_subpath_in_process_with_and_without_the_prefix(tmp_path):
    args = parse_args(["--data-dir", str(tmp_path), "--api", "--subpath", "studio", "--disable-console-progressbars"])
    app = webui.App.create(args)
    try:
        with TestClient(app.build_asgi(args)) as client:
            for path in ("/studio/", "/", "/studio/sdapi/v1/options", "/sdapi/v1/options"):
                assert client.get(path).status_code == 200, path
            r = client.get("/studio/", headers={"X-Forwarded-Host": "studio.lan", "X-Forwarded-Proto": "https"})
            assert '"root":"https://studio.lan/studio"' in r.text.replace(" ", "")
            assert client.get("/studio/openapi.json").json()["servers"] == [{"url": "/studio"}]
            assert "/studio/openapi.json" in client.get("/studio/docs").text
    finally:
        app.queue.shutdown()
