"""A studio server with log-ins: each user's images, trash and uploads are served to that user
only. Another user who learns a file's path gets 404 with a sentence, someone without a log-in
gets 401; the Gallery and "send to" keep working for the owner. In-process, no model loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import webui
from modules.options import parse_args

DAY = "2026-01-01"
USERS = {"alice": "apple-pie", "bob": "blue-moon"}
ROUTES = ("/gradio_api/file=", "/gradio_api/file/")


def _png(path: Path, colour: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)
    return path


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    data = tmp_path_factory.mktemp("studio")
    outputs = data / "outputs"
    files = {
        "alice": _png(outputs / "txt2img-images" / "alice" / DAY / "00000-1.png", "red"),
        "bob": _png(outputs / "txt2img-images" / "bob" / DAY / "00000-2.png", "green"),
        "bob_grid": _png(outputs / "txt2img-grids" / "bob" / DAY / "grid-0000.png", "yellow"),
        "bob_patterned": _png(outputs / "txt2img-images" / DAY / "bob" / "00002-5.png", "cyan"),  # a [date]/[user] folder pattern
        "robot": _png(outputs / "img2img-images" / "robot" / DAY / "00000-4.png", "white"),  # an --api-auth user's
        "old": _png(outputs / "old.png", "black"),  # no one's in particular
        "loose": _png(outputs / "txt2img-images" / "loose.png", "gray"),
        "dated": _png(outputs / "txt2img-images" / "2025-12-31" / "00000-7.png", "navy"),  # from before log-ins: in no one's Gallery
        "former": _png(outputs / "txt2img-images" / "carol" / DAY / "00000-8.png", "pink"),  # a user no longer in the log-ins
    }
    trashed = _png(outputs / "txt2img-images" / "bob" / DAY / "00001-3.png", "blue")
    args = parse_args(["--data-dir", str(data), "--listen", "--api", "--gradio-auth", ",".join(f"{u}:{p}" for u, p in USERS.items()),
                       "--api-auth", "robot:beep", "--disable-console-progressbars"])
    app = webui.App.create(args)
    token = app.gallery.delete(trashed.relative_to(outputs).as_posix(), owner="bob")
    files["bob_trash"] = app.gallery.trash_dir / token / trashed.relative_to(outputs)
    asgi = app.build_asgi(args)
    with TestClient(asgi) as first:
        clients = {"alice": first, "bob": TestClient(asgi), "anonymous": TestClient(asgi)}  # one cookie jar each
        for user, password in USERS.items():
            assert clients[user].post("/login", data={"username": user, "password": password}).json() == {"success": True}
        yield {"app": app, "clients": clients, "files": files}
    app.queue.shutdown()


def _refused_as_not_yours(response) -> bool:
    return response.status_code == 404 and "not one of your files" in response.json()["detail"]


@pytest.mark.parametrize("route", ROUTES)
def test_a_users_images_are_served_to_that_user_only(studio, route):
    clients, files = studio["clients"], studio["files"]
    for owner, other in (("alice", "bob"), ("bob", "alice")):
        mine = files[owner]
        r = clients[owner].get(route + str(mine))
        assert r.status_code == 200 and r.content == mine.read_bytes()
        r = clients[other].get(route + str(mine))
        assert _refused_as_not_yours(r), r.text
        assert clients[other].head(route + str(mine)).status_code == 404
        assert clients["anonymous"].get(route + str(mine)).status_code == 401
    for theirs in ("bob_grid", "bob_patterned"):  # grids too, and [user] anywhere in the folder pattern
        assert _refused_as_not_yours(clients["alice"].get(route + str(files[theirs])))
        assert clients["bob"].get(route + str(files[theirs])).content == files[theirs].read_bytes()
    r = clients["alice"].get(route + str(files["robot"]))  # and an API user's images
    assert _refused_as_not_yours(r)


def test_dot_dot_links_and_relative_paths_lead_to_the_real_owner(studio, monkeypatch):
    clients, files = studio["clients"], studio["files"]
    bobs = files["bob"]
    sideways = f"{files['alice'].parent.parent}/%2e%2e/bob/{DAY}/{bobs.name}"  # starts in alice's folder (encoded: the client keeps it)
    assert _refused_as_not_yours(clients["alice"].get("/gradio_api/file=" + sideways))
    assert clients["bob"].get("/gradio_api/file=" + sideways).content == bobs.read_bytes()
    link = files["alice"].parent / "link-to-bob.png"
    link.symlink_to(bobs)
    try:
        assert _refused_as_not_yours(clients["alice"].get("/gradio_api/file=" + str(link)))
        assert clients["bob"].get("/gradio_api/file=" + str(link)).content == bobs.read_bytes()
    finally:
        link.unlink()
    shouted = str(bobs).replace("/bob/", "/BOB/")  # on macOS and Windows this opens bob's file
    assert _refused_as_not_yours(clients["alice"].get("/gradio_api/file=" + shouted))
    monkeypatch.chdir(bobs.parents[3])  # gradio takes a relative path from the working folder
    relative = bobs.relative_to(bobs.parents[3]).as_posix()
    assert _refused_as_not_yours(clients["alice"].get("/gradio_api/file=" + relative))
    assert clients["bob"].get("/gradio_api/file=" + relative).content == bobs.read_bytes()


def test_the_trash_is_its_owners_only(studio):
    clients, trashed = studio["clients"], studio["files"]["bob_trash"]
    assert trashed.is_file()
    assert _refused_as_not_yours(clients["alice"].get("/gradio_api/file=" + str(trashed)))
    assert clients["anonymous"].get("/gradio_api/file=" + str(trashed)).status_code == 401
    r = clients["bob"].get("/gradio_api/file=" + str(trashed))
    assert r.status_code == 200 and r.content == trashed.read_bytes()


def test_files_in_no_users_folder_are_served_to_every_logged_in_user(studio):
    clients, files = studio["clients"], studio["files"]
    for name in ("old", "loose"):
        for user in USERS:
            assert clients[user].get("/gradio_api/file=" + str(files[name])).content == files[name].read_bytes()
        assert clients["anonymous"].get("/gradio_api/file=" + str(files[name])).status_code == 401


def test_files_in_no_current_users_gallery_are_no_ones_to_read(studio):
    clients, files = studio["clients"], studio["files"]
    for name in ("dated", "former"):  # as in the Gallery: `<category>/<owner>/...`, and carol is gone
        for user in USERS:
            assert _refused_as_not_yours(clients[user].get("/gradio_api/file=" + str(files[name]))), (name, user)


def test_the_show_all_users_setting_shares_the_images(studio):
    app, clients, bobs = studio["app"], studio["clients"], studio["files"]["bob"]
    app.settings.update({"gallery_show_all_users": True})
    try:
        for shown in (bobs, studio["files"]["dated"], studio["files"]["former"]):
            assert clients["alice"].get("/gradio_api/file=" + str(shown)).content == shown.read_bytes()
        assert clients["anonymous"].get("/gradio_api/file=" + str(bobs)).status_code == 401
    finally:
        app.settings.update({"gallery_show_all_users": False})
    assert _refused_as_not_yours(clients["alice"].get("/gradio_api/file=" + str(bobs)))


def _upload(client, content: bytes, name: str = "sketch.png") -> str:
    r = client.post("/gradio_api/upload", files={"files": (name, content, "image/png")})
    assert r.status_code == 200, r.text
    (path,) = r.json()
    return path


def _png_bytes(colour: str) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_upload_is_served_to_its_uploader_only(studio):
    clients = studio["clients"]
    content = _png_bytes("purple")
    path = _upload(clients["alice"], content)
    r = clients["alice"].get("/gradio_api/file=" + path)
    assert r.status_code == 200 and r.content == content
    assert _refused_as_not_yours(clients["bob"].get("/gradio_api/file=" + path))
    assert _refused_as_not_yours(clients["bob"].get("/gradio_api/file/" + path))
    assert clients["anonymous"].get("/gradio_api/file=" + path).status_code == 401
    assert clients["anonymous"].post("/gradio_api/upload", files={"files": ("x.png", content, "image/png")}).status_code == 401
    # gradio names an upload by its content: bob uploading the same picture gets the same path, and may read it then
    assert _upload(clients["bob"], content) == path
    assert clients["bob"].get("/gradio_api/file=" + path).content == content


# -- the page's events, through gradio's queue as the browser runs them ------------------------

def _event(client, elem_id: str, data_by_elem_id: dict, session: str) -> list:
    """Run the click event of the button `elem_id` through gradio's queue (POST queue/join, then
    the SSE stream of queue/data) and return its outputs; the inputs are the controls' values
    on the page, with `data_by_elem_id` replacing some."""
    config = client.get("/config").json()
    components = {c["id"]: c.get("props", {}) for c in config["components"]}
    dep = next(d for d in config["dependencies"] if any(components.get(t[0], {}).get("elem_id") == elem_id for t in d["targets"]))
    data = [data_by_elem_id.get(components[i].get("elem_id"), components[i].get("value")) for i in dep["inputs"]]
    body = {"data": data, "fn_index": dep["id"], "session_hash": session, "event_data": None, "trigger_id": dep["targets"][0][0]}
    r = client.post("/gradio_api/queue/join", json=body)
    if r.status_code != 200:
        return r
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            message = json.loads(line[5:]) if line.startswith("data:") else {}
            if message.get("msg") == "process_completed":
                assert message.get("success"), message
                return message["output"]["data"]
    raise AssertionError(f"{elem_id}: the event did not complete")


def _file_data(path: str) -> dict:
    return {"path": path, "url": None, "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}


def test_the_gallery_shows_the_owner_her_pictures_and_no_one_else_can_fetch_them(studio):
    clients, mine = studio["clients"], studio["files"]["alice"]
    shown = _event(clients["alice"], "gallery_refresh", {}, "alice-gallery")[0]
    assert [item["caption"] for item in shown] == [f"txt2img-images/alice/{DAY}/{mine.name}"]
    cached = shown[0]["image"]["path"]  # gradio serves a copy from its cache
    assert cached != str(mine)
    r = clients["alice"].get(shown[0]["image"]["url"].removeprefix("http://testserver"))
    assert r.status_code == 200 and r.content == mine.read_bytes()
    assert _refused_as_not_yours(clients["bob"].get("/gradio_api/file=" + cached))
    assert clients["anonymous"].get("/gradio_api/file=" + cached).status_code == 401


def test_send_to_img2img_works_for_the_owner_and_not_with_another_users_file(studio):
    clients = studio["clients"]
    cached = _event(clients["alice"], "gallery_refresh", {}, "alice-send")[0][0]["image"]["path"]
    infotext = "a red square\nSteps: 12, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 16x16"
    outputs = _event(clients["alice"], "gallery_send_img2img", {"gallery_generation_info": infotext,
                                                                "gallery_selected_image": _file_data(cached)}, "alice-send")
    sent = next(o for o in outputs if isinstance(o, dict) and o.get("path"))  # the img2img image box's new value
    assert clients["alice"].get("/gradio_api/file=" + sent["path"]).content == studio["files"]["alice"].read_bytes()
    r = _event(clients["bob"], "gallery_send_img2img", {"gallery_generation_info": infotext,
                                                        "gallery_selected_image": _file_data(cached)}, "bob-send")
    assert _refused_as_not_yours(r), r
    assert _refused_as_not_yours(clients["bob"].get("/gradio_api/file=" + sent["path"]))


def test_another_users_upload_cannot_be_an_input_either(studio):
    clients = studio["clients"]
    theirs = _upload(clients["alice"], _png_bytes("orange"))
    r = _event(clients["bob"], "gallery_send_extras", {"gallery_selected_image": _file_data(theirs)}, "bob-extras")
    assert _refused_as_not_yours(r), r
    outputs = _event(clients["alice"], "gallery_send_extras", {"gallery_selected_image": _file_data(theirs)}, "alice-extras")
    assert outputs[0]["path"] == theirs  # hers to use


def test_with_only_api_auth_the_api_users_images_are_not_served_by_path_to_page_visitors(tmp_path):
    outputs = tmp_path / "outputs"
    robots = _png(outputs / "txt2img-images" / "robot" / DAY / "00000-9.png", "white")
    old = _png(outputs / "old.png", "black")
    args = parse_args(["--data-dir", str(tmp_path), "--listen", "--api", "--api-auth", "robot:beep", "--disable-console-progressbars"])
    app = webui.App.create(args)
    try:
        with TestClient(app.build_asgi(args)) as visitor:  # the page is open (the start warns): no one is logged in on it
            assert _refused_as_not_yours(visitor.get("/gradio_api/file=" + str(robots)))
            assert visitor.get("/gradio_api/file=" + str(old)).content == old.read_bytes()
    finally:
        app.queue.shutdown()
