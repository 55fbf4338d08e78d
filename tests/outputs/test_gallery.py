"""The gallery index lists what is in outputs/, newest first, finds images by prompt, seed or
model, follows files added or removed behind its back without rescanning everything, and
deletes to a trash that can be undone."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from modules.outputs.gallery import GalleryIndex, RefreshStats
from modules.outputs.saving import OutputWriter, SaveSettings, encode_image

DAY = datetime(2024, 7, 27, 12, 0)
BASE = DAY.timestamp()


def infotext(prompt="a red circle", seed=1234, model="tiny", model_hash="abcdef1234", negative="blurry") -> str:
    return (f"{prompt}\nNegative prompt: {negative}\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: {seed}, "
            f"Size: 64x64, Model hash: {model_hash}, Model: {model}, Version: v0.1")


def write(path: Path, text: str | None = None, mtime: float | None = None, fmt: str = "png", size=(8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        encode_image(Image.new("RGB", size, "red"), handle, fmt, infotext() if text is None else text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def settle(root: Path) -> None:
    """Date every directory back a minute. The index does not trust a directory changed in the
    last 2 s (a coarse clock could hide a second change within the same tick) and lists it again,
    so "nothing to list" is only true for directories that have been quiet a moment."""
    old = time.time() - 60
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.utime(directory, (old, old))


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "outputs"


@pytest.fixture
def index(root, tmp_path):
    gallery = GalleryIndex(root, tmp_path / "data" / "gallery.sqlite3")
    yield gallery
    gallery.close()


def images_dir(root: Path, day: str = "2024-07-27", folder: str = "txt2img-images") -> Path:
    return root / folder / day


def test_entry_carries_infotext_size_and_names(root, index):
    saved = OutputWriter(SaveSettings(directory=root / "txt2img-images"), clock=lambda: DAY).save_image(
        Image.new("RGB", (64, 48), "red"), seed=1234, infotext=infotext())
    jpeg = write(root / "extras-images" / "00000.jpg", infotext("a blue square", seed=7), fmt="jpg")
    entry = index.get("txt2img-images/2024-07-27/00000-1234.png")
    assert entry.path == saved.resolve()
    assert (entry.folder, entry.date, entry.width, entry.height, entry.size) == ("txt2img-images", "2024-07-27", 64, 48, saved.stat().st_size)
    assert (entry.prompt, entry.negative_prompt, entry.seed, entry.model, entry.model_hash) == ("a red circle", "blurry", 1234, "tiny", "abcdef1234")
    assert entry.infotext == infotext()
    extra = index.get("extras-images/00000.jpg")
    assert (extra.prompt, extra.seed, extra.folder) == ("a blue square", 7, "extras-images")
    assert extra.date == datetime.fromtimestamp(jpeg.stat().st_mtime).strftime("%Y-%m-%d")  # no date folder: the file's date


def test_newest_first_and_paging(root, index):
    for n in range(50):
        write(images_dir(root) / f"{n:05d}-{n}.png", mtime=BASE + n)
    write(images_dir(root) / "tie-a.png", mtime=BASE + 10)  # same mtime as 00010: path descending breaks the tie
    first = index.query(per_page=20)
    assert (first.total, first.pages, first.page) == (51, 3, 1)
    assert [e.rel.rsplit("/", 1)[1] for e in first.entries[:3]] == ["00049-49.png", "00048-48.png", "00047-47.png"]
    names = [e.rel.rsplit("/", 1)[1] for p in (1, 2, 3) for e in index.query(page=p, per_page=20).entries]
    assert len(names) == 51 and names.index("tie-a.png") == names.index("00010-10.png") - 1
    last = index.query(page=99, per_page=20)
    assert (last.page, len(last.entries), last.entries[-1].rel.endswith("00000-0.png")) == (3, 11, True)
    assert index.query(page=0, per_page=20).page == 1
    with pytest.raises(ValueError, match="at least one"):
        index.query(per_page=0)


def test_filter_by_folder_and_date(root, index):
    write(images_dir(root, "2024-07-26") / "00000-1.png", mtime=BASE - 86400)
    write(images_dir(root, "2024-07-27") / "00000-2.png", mtime=BASE)
    write(images_dir(root, "2024-07-27", "txt2img-grids") / "grid-0000.png", mtime=BASE + 1)
    write(images_dir(root, "2024-07-25", "img2img-images") / "00000-3.png", mtime=BASE - 2 * 86400)
    assert index.folders() == ["img2img-images", "txt2img-grids", "txt2img-images"]
    assert index.dates() == ["2024-07-27", "2024-07-26", "2024-07-25"]
    assert index.dates("txt2img-images") == ["2024-07-27", "2024-07-26"]
    assert [e.rel for e in index.query(folder="txt2img-images").entries] == [
        "txt2img-images/2024-07-27/00000-2.png", "txt2img-images/2024-07-26/00000-1.png"]
    assert [e.rel for e in index.query(date="2024-07-27").entries] == [
        "txt2img-grids/2024-07-27/grid-0000.png", "txt2img-images/2024-07-27/00000-2.png"]
    assert index.query(folder="txt2img-images", date="2024-07-25").total == 0
    with pytest.raises(ValueError, match="2024-07-27"):
        index.query(date="27/07/2024")


def test_search_by_prompt_phrase_seed_and_model(root, index):
    write(images_dir(root) / "a.png", infotext("a red circle on a blue background", seed=1234, model="tiny"))
    write(images_dir(root) / "b.png", infotext("A blue Circle", seed=99, model="dreamshaper_8", model_hash="ffee001122"))
    write(images_dir(root) / "c.png", infotext("100% green_square", seed=5, negative="red"))

    def found(search: str) -> list[str]:
        return sorted(e.rel.rsplit("/", 1)[1] for e in index.query(search=search).entries)

    assert found("circle") == ["a.png", "b.png"]
    assert found("CIRCLE blue") == ["a.png", "b.png"]  # every term, any case
    assert found('"a red circle"') == ["a.png"]
    assert found('"red circle on"') == ["a.png"]
    assert found("red") == ["a.png", "c.png"]  # c has it in the negative prompt
    assert found("seed:99") == ["b.png"]
    assert found("seed:9") == []  # the seed matches exactly
    assert found("1234") == ["a.png"]  # a bare number is also the seed
    assert found("model:dream") == ["b.png"]
    assert found("model:FFEE00") == ["b.png"]  # or the model hash
    assert found("dreamshaper") == ["b.png"]
    assert found("100%") == ["c.png"] and found("%") == ["c.png"]  # % and _ are plain characters
    assert found("n_s") == ["c.png"] and found("e_b") == []  # as a wildcard, e_b would match "blue background"
    assert found("circle seed:5") == []
    assert found("") == ["a.png", "b.png", "c.png"]
    with pytest.raises(ValueError, match="whole number"):
        index.query(search="seed:abc")


def test_files_added_and_removed_behind_its_back(root, index):
    first = write(images_dir(root) / "00000-1.png", mtime=BASE)
    write(images_dir(root) / "00001-2.png", mtime=BASE + 1)
    assert index.query().total == 2
    shutil.copy2(first, images_dir(root) / "00002-3.png")
    first.unlink()
    write(images_dir(root, "2024-07-28") / "00000-9.png", infotext("new day", seed=9), mtime=BASE + 86400)
    assert [e.rel for e in index.query().entries] == [
        "txt2img-images/2024-07-28/00000-9.png", "txt2img-images/2024-07-27/00001-2.png", "txt2img-images/2024-07-27/00002-3.png"]
    assert index.dates() == ["2024-07-28", "2024-07-27"]
    shutil.rmtree(root / "txt2img-images" / "2024-07-27")
    assert [e.rel for e in index.query().entries] == ["txt2img-images/2024-07-28/00000-9.png"]
    assert index.get("txt2img-images/2024-07-27/00001-2.png") is None


def test_refresh_lists_only_changed_directories(root, index):
    for day in ("2024-07-26", "2024-07-27"):
        for n in range(3):
            write(images_dir(root, day) / f"{n:05d}-{n}.png")
    settle(root)
    assert index.refresh().added == 6
    assert index.refresh() == RefreshStats(added=0, removed=0, updated=0, dirs_listed=0)
    changed = images_dir(root, "2024-07-27") / "00001-1.png"
    replacement = write(changed.with_name(".saving-x.png.tmp"), infotext("rewritten", seed=1))
    os.replace(replacement, changed)  # how an editor or saver rewrites a file: a new inode
    stats = index.refresh()
    assert (stats.dirs_listed, stats.added, stats.updated, stats.removed) == (1, 0, 1, 0)
    assert index.get("txt2img-images/2024-07-27/00001-1.png", refresh=False).prompt == "rewritten"


def test_full_refresh_notices_a_file_rewritten_in_place(root, index):
    image = write(images_dir(root) / "00000-1.png", mtime=BASE)
    settle(root)
    index.refresh()
    write(image, infotext("edited in place"), mtime=BASE + 5)  # same inode: the directory's mtime does not move
    assert index.refresh().updated == 0
    assert index.refresh(full=True).updated == 1
    assert index.get("txt2img-images/2024-07-27/00000-1.png").prompt == "edited in place"


def test_directory_changed_just_now_is_listed_again_without_reading_files(root, index):
    write(images_dir(root) / "00000-1.png")
    assert index.refresh().dirs_listed == 3  # outputs, txt2img-images, the date folder
    again = index.refresh()  # all three changed a moment ago, so they are listed once more
    assert (again.dirs_listed, again.added, again.updated, again.removed) == (3, 0, 0, 0)


def test_hidden_files_trash_and_links_never_show(root, index, tmp_path):
    write(images_dir(root) / "00000-1.png")
    write(images_dir(root) / ".saving-0123abcd.png.tmp")
    write(images_dir(root) / ".hidden.png")
    write(root / ".trash" / "123" / "txt2img-images" / "x.png")
    write(root / ".cache" / "y.png")
    (images_dir(root) / "notes.txt").write_text("not an image")
    outside = write(tmp_path / "elsewhere" / "secret.png", infotext("outside"))
    os.symlink(outside.parent, root / "linked-dir", target_is_directory=True)
    os.symlink(outside, images_dir(root) / "00001-link.png")
    assert [e.rel for e in index.query().entries] == ["txt2img-images/2024-07-27/00000-1.png"]
    assert index.query(search="outside").total == 0


def test_garbage_image_is_listed_with_empty_infotext(root, index):
    (images_dir(root)).mkdir(parents=True)
    (images_dir(root) / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write(images_dir(root) / "good.png", mtime=BASE)
    write(images_dir(root) / "plain.png", text="", mtime=BASE - 1)  # a real image without infotext
    page = index.query()
    assert page.total == 3
    broken = index.get("txt2img-images/2024-07-27/broken.png")
    assert (broken.prompt, broken.seed, broken.infotext, broken.width) == ("", None, "", None)
    assert index.get("txt2img-images/2024-07-27/plain.png").width == 8
    assert index.query(search="circle").total == 1


def test_resolve_is_strict(root, index, tmp_path):
    image = write(images_dir(root) / "00000-1.png")
    assert index.resolve("txt2img-images/2024-07-27/00000-1.png") == image.resolve()
    (tmp_path / "x").write_bytes(b"x")
    os.symlink(tmp_path / "x", images_dir(root) / "out.png")
    os.symlink(tmp_path, root / "up", target_is_directory=True)
    for bad in ("../x", "/etc/passwd", str(image), "txt2img-images/../../x", "txt2img-images/2024-07-27/out.png",
                "up/x", ".trash/1/a.png", "", "txt2img-images\\2024-07-27\\00000-1.png", "txt2img-images/2024-07-27/missing.png"):
        with pytest.raises(ValueError):
            index.resolve(bad)


def test_delete_and_undo(root, index):
    image = write(images_dir(root) / "00000-1.png", mtime=BASE)
    write(images_dir(root) / "00001-2.png", mtime=BASE + 1)
    data = image.read_bytes()
    token = index.delete("txt2img-images/2024-07-27/00000-1.png")
    assert not image.exists()
    assert [e.rel for e in index.query().entries] == ["txt2img-images/2024-07-27/00001-2.png"]
    (item,) = index.trash()
    assert (item.token, item.rel) == (token, "txt2img-images/2024-07-27/00000-1.png")
    assert item.path == root / ".trash" / token / "txt2img-images" / "2024-07-27" / "00000-1.png" and item.path.read_bytes() == data
    assert index.undo_delete() == "txt2img-images/2024-07-27/00000-1.png"
    assert image.read_bytes() == data and index.trash() == [] and not (root / ".trash" / token).exists()
    assert index.query().total == 2 and index.get(item.rel, refresh=False).seed == 1234
    assert index.refresh().added == 0  # the index was already right
    with pytest.raises(ValueError, match="empty"):
        index.undo_delete()
    with pytest.raises(ValueError):
        index.delete("txt2img-images/2024-07-27/gone.png")


def test_undo_never_overwrites_and_takes_a_token(root, index):
    image = write(images_dir(root) / "00000-1.png", infotext("first"))
    other = write(images_dir(root) / "00001-2.png", infotext("second"))
    first_token = index.delete("txt2img-images/2024-07-27/00000-1.png")
    index.delete("txt2img-images/2024-07-27/00001-2.png")
    assert [i.rel for i in index.trash()] == ["txt2img-images/2024-07-27/00001-2.png", "txt2img-images/2024-07-27/00000-1.png"]
    write(image, infotext("taken meanwhile"))
    assert index.undo_delete(first_token) == "txt2img-images/2024-07-27/00000-1-1.png"
    assert index.get("txt2img-images/2024-07-27/00000-1.png").prompt == "taken meanwhile"
    assert index.get("txt2img-images/2024-07-27/00000-1-1.png").prompt == "first"
    with pytest.raises(ValueError, match="token"):
        index.undo_delete("1234-nope")
    assert index.undo_delete() == "txt2img-images/2024-07-27/00001-2.png" and other.exists()


def test_visible_trash_folder_inside_outputs_is_not_indexed(root, tmp_path):
    write(images_dir(root) / "00000-1.png")
    index = GalleryIndex(root, tmp_path / "gallery.sqlite3", trash_dir=root / "trash")
    token = index.delete("txt2img-images/2024-07-27/00000-1.png")
    assert (root / "trash" / token / "txt2img-images" / "2024-07-27" / "00000-1.png").is_file()
    assert index.query().total == 0 and index.folders() == []
    assert index.undo_delete(token) == "txt2img-images/2024-07-27/00000-1.png" and index.query().total == 1
    index.close()


def test_index_survives_reopen(root, tmp_path):
    write(images_dir(root) / "00000-1.png")
    settle(root)
    db = tmp_path / "data" / "gallery.sqlite3"
    first = GalleryIndex(root, db)
    assert first.query().total == 1
    first.close()
    reopened = GalleryIndex(root, db)
    assert reopened.refresh().dirs_listed == 0
    assert reopened.query(refresh=False).entries[0].prompt == "a red circle"
    reopened.close()


@pytest.mark.parametrize("damage", ["garbage", "old schema"])
def test_unusable_db_is_rebuilt(root, tmp_path, caplog, damage):
    write(images_dir(root) / "00000-1.png")
    db = tmp_path / "gallery.sqlite3"
    if damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    else:
        old = sqlite3.connect(db)
        old.execute("CREATE TABLE images (path TEXT)")
        old.close()
    with caplog.at_level(logging.WARNING, logger="modules.outputs.gallery"):
        index = GalleryIndex(root, db)
    assert "rebuilding" in caplog.text
    assert index.query().entries[0].seed == 1234
    index.close()


def test_threads_share_one_index(root, index):
    errors: list[BaseException] = []

    def browse() -> None:
        try:
            for _ in range(20):
                index.query(search="circle", per_page=5)
                index.folders()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=browse) for _ in range(4)]
    for t in threads:
        t.start()
    for n in range(20):
        write(images_dir(root) / f"{n:05d}-{n}.png")
    for t in threads:
        t.join()
    assert errors == [] and index.query().total == 20


def test_each_user_sees_and_deletes_only_their_own_folder(root, index):
    """Per-user outputs (<folder>/<user>/...): with an owner, the index answers as if the other
    users' images were not there; without one, everything shows (the shared view)."""
    write(root / "txt2img-images" / "alice" / "2024-07-27" / "00000-1.png", infotext(seed=1), mtime=BASE)
    write(root / "img2img-images" / "alice" / "2024-07-28" / "00000-2.png", infotext(seed=2), mtime=BASE + 1)
    write(root / "txt2img-images" / "bob" / "2024-07-27" / "00000-3.png", infotext(seed=3), mtime=BASE + 2)
    write(root / "txt2img-images" / "alicex" / "2024-07-27" / "00000-4.png", infotext(seed=4), mtime=BASE + 3)  # a prefix is not a match
    write(root / "txt2img-images" / "2024-07-27" / "00000-5.png", infotext(seed=5), mtime=BASE + 4)  # from before log-ins
    alice = index.query(owner="alice")
    assert [e.seed for e in alice.entries] == [2, 1] and alice.total == 2
    assert index.query(search="seed:3", owner="alice").total == 0 and index.query(search="seed:3").total == 1
    assert index.folders(owner="bob") == ["txt2img-images"] and index.dates(owner="alice") == ["2024-07-28", "2024-07-27"]
    assert index.query().total == 5
    bobs = "txt2img-images/bob/2024-07-27/00000-3.png"
    assert index.get(bobs, owner="alice") is None and index.get(bobs, owner="bob").seed == 3
    with pytest.raises(ValueError, match="not one of your images"):
        index.delete(bobs, owner="alice")
    assert (root / bobs).exists()
    index.delete(bobs, owner="bob")
    with pytest.raises(ValueError, match="empty"):
        index.undo_delete(owner="alice")  # bob's trash is not alice's to restore
    assert index.undo_delete(owner="bob") == bobs
