"""Downloading model files from a real HTTP server on loopback: progress, resume, hash
checks, errors, names, the catalog and background downloads. Nothing leaves this machine."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from modules.models.catalog import PARTIAL_SUFFIXES, find_checkpoints
from modules.models.downloadable import CATALOG_FILE, Catalog, model_folders, resolve_request
from modules.models.downloads import Downloads
from modules.models.fetch import (
    PARTIAL_SUFFIX, FetchCancelled, FetchProgress, FetchSource, fetch_file, filename_from_disposition, safe_filename,
)
from tests.fileserver import Served, closed_port, file_server

FILE = "/files/tiny.safetensors"


@pytest.fixture(scope="module")
def payload(tiny_checkpoint) -> bytes:
    return tiny_checkpoint.read_bytes()


@pytest.fixture
def served(payload) -> Served:
    return Served(files={FILE: payload})


@pytest.fixture
def base(served):
    with file_server(served) as url:
        yield url


@pytest.fixture
def folder(tmp_path) -> Path:
    return tmp_path / "models" / "Stable-diffusion"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_good_fetch_lands_verified_with_progress(base, folder, payload):
    calls = []
    source = FetchSource(base + FILE, sha256=sha(payload), size=len(payload))
    progress = FetchProgress(source, folder)
    path = fetch_file(source, folder, progress=progress, on_progress=lambda done, total: calls.append((done, total)), console=False)
    assert path == folder / "tiny.safetensors"
    assert path.read_bytes() == payload
    assert [p.name for p in folder.iterdir()] == ["tiny.safetensors"]  # no partial file left
    assert calls[-1] == (len(payload), len(payload)) and len(calls) > 2
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    status = progress.status()
    assert (status.state, status.finished, status.fraction, status.path, status.error) == ("done", True, 1.0, path, None)
    assert status.filename == "tiny.safetensors" and status.done_bytes == status.total_bytes == len(payload)
    assert [c.name for c in find_checkpoints([folder])] == ["tiny"]


def test_dropped_connection_keeps_the_partial_file_and_a_second_fetch_resumes_with_range(base, served, folder, payload):
    served.drop_after[FILE] = len(payload) // 3
    source = FetchSource(base + FILE, sha256=sha(payload))
    with pytest.raises(ValueError, match=r"interrupted after .* run the download again to resume"):
        fetch_file(source, folder, console=False, resume_attempts=0)
    partial = folder / ("tiny.safetensors" + PARTIAL_SUFFIX)
    kept = partial.stat().st_size
    assert kept == len(payload) // 3  # every byte received before the drop was kept
    assert not (folder / "tiny.safetensors").exists()
    assert find_checkpoints([folder]) == []  # the scanner never lists a file still arriving

    path = fetch_file(source, folder, console=False)
    assert path.read_bytes() == payload and not partial.exists()
    assert served.requests[-1][:2] == (FILE, f"bytes={kept}-")


def test_a_dropped_connection_is_resumed_within_one_fetch(base, served, folder, payload):
    served.drop_after[FILE] = len(payload) // 2
    path = fetch_file(FetchSource(base + FILE, sha256=sha(payload)), folder, console=False)
    assert sha(path.read_bytes()) == sha(payload)
    assert [r[1] for r in served.requests] == [None, f"bytes={len(payload) // 2}-"]


def test_wrong_hash_deletes_the_download_and_says_expected_and_got(base, folder, payload):
    wrong = "0" * 64
    with pytest.raises(ValueError) as error:
        fetch_file(FetchSource(base + FILE, sha256=wrong), folder, console=False)
    assert f"expected sha256 {wrong}, got {sha(payload)}" in str(error.value)
    assert list(folder.iterdir()) == []


def test_wrong_size_is_refused_too(base, folder, payload):
    with pytest.raises(ValueError, match="expected 5 bytes"):
        fetch_file(FetchSource(base + FILE, size=5), folder, console=False)
    assert list(folder.iterdir()) == []


def test_a_git_blob_pin_checks_a_file_from_a_git_repository(base, served, tmp_path, payload):
    """TAESD's decoders are kept in a Git repository and nobody publishes their SHA-256: the
    catalog pins them by the blob id `git ls-tree` shows (computed here with git itself)."""
    served.files["/raw/taesd_decoder.pth"] = payload
    (tmp_path / "blob").write_bytes(payload)
    blob = subprocess.run(["git", "hash-object", str(tmp_path / "blob")], capture_output=True, text=True, check=True).stdout.strip()
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(json.dumps({"checkpoints": [{
        "name": "taesd", "title": "TAESD", "architecture": "taesd", "filename": "taesd_decoder.pth", "size": 0, "sha256": "",
        "git_blob": blob, "url": base + "/raw/taesd_decoder.pth", "folder": "VAE-approx"}]}))
    source, folder_name = resolve_request("taesd", Catalog.load(catalog_file))
    assert (source.git_blob, source.size, source.sha256, folder_name) == (blob, None, None, "VAE-approx")
    folder = tmp_path / "VAE-approx"
    path = fetch_file(source, folder, console=False)
    assert path == folder / "taesd_decoder.pth" and path.read_bytes() == payload
    assert fetch_file(source, folder, console=False) == path  # already there and verified: skipped

    wrong = dataclasses.replace(source, git_blob="0" * 40)
    path.unlink()
    with pytest.raises(ValueError, match=f"expected Git blob {'0' * 40}, got {blob}"):
        fetch_file(wrong, folder, console=False)
    assert list(folder.iterdir()) == []
    # An entry needs one of the two pins.
    catalog_file.write_text(catalog_file.read_text().replace(blob, ""))
    with pytest.raises(ValueError, match="sha256 must be 64 lower-case hex digits"):
        Catalog.load(catalog_file)


def test_404_is_a_clear_error_and_writes_nothing(base, folder):
    source = FetchSource(base + "/files/missing.safetensors")
    progress = FetchProgress(source, folder)
    with pytest.raises(ValueError, match=r"not found \(HTTP 404\)"):
        fetch_file(source, folder, progress=progress, console=False)
    assert progress.status().state == "failed" and "404" in progress.status().error
    assert list(folder.iterdir()) == []


def test_no_network_fails_within_seconds_with_a_clear_message(folder):
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"could not connect to 127\.0\.0\.1:\d+ .*Check the network connection"):
        fetch_file(FetchSource(f"http://127.0.0.1:{closed_port()}/x.safetensors"), folder, console=False)
    assert time.monotonic() - started < 5
    assert list(folder.iterdir()) == []


def test_an_existing_file_is_never_overwritten_but_a_verified_one_is_skipped(base, served, folder, payload):
    folder.mkdir(parents=True)
    mine = folder / "tiny.safetensors"
    mine.write_bytes(b"my own file")
    with pytest.raises(ValueError, match="already exists; it is not overwritten"):
        fetch_file(FetchSource(base + FILE), folder, console=False)
    with pytest.raises(ValueError, match="is a different file"):
        fetch_file(FetchSource(base + FILE, sha256=sha(payload)), folder, console=False)
    assert mine.read_bytes() == b"my own file"

    mine.write_bytes(payload)
    source = FetchSource(base + FILE, sha256=sha(payload))
    progress = FetchProgress(source, folder)
    assert fetch_file(source, folder, progress=progress, console=False) == mine
    assert progress.status().skipped and progress.status().state == "done"
    assert served.requests == []  # nothing was downloaded


def test_name_from_content_disposition_is_sanitized(base, served, folder, payload):
    served.files["/api/download/models/42"] = payload
    served.dispositions["/api/download/models/42"] = 'attachment; filename="../../evil name.safetensors"'
    path = fetch_file(FetchSource(base + "/api/download/models/42"), folder, console=False)
    assert path == folder / "evil name.safetensors" and path.read_bytes() == payload


def test_a_url_that_names_no_model_file_is_refused(base, served, folder):
    served.files["/notes.txt"] = b"hello"
    with pytest.raises(ValueError, match="not a model file"):
        fetch_file(FetchSource(base + "/notes.txt"), folder, console=False)
    assert list(folder.iterdir()) == []


def test_cancel_raises_and_keeps_nothing_half_named(base, folder):
    source = FetchSource(base + FILE)
    progress = FetchProgress(source, folder)
    progress.cancel()
    with pytest.raises(FetchCancelled):
        fetch_file(source, folder, progress=progress, console=False)
    assert progress.status().state == "cancelled"
    assert not (folder / "tiny.safetensors").exists()


@pytest.mark.parametrize("name, expected", [
    ("model.safetensors", "model.safetensors"),
    ("../../etc/model.safetensors", "model.safetensors"),
    ("..\\..\\model.ckpt", "model.ckpt"),
    (".hidden.safetensors", "hidden.safetensors"),
    ("a:b?.safetensors", "a_b_.safetensors"),
    ("sd%2F15.safetensors", "15.safetensors"),
])
def test_safe_filename(name, expected):
    assert safe_filename(name) == expected


@pytest.mark.parametrize("name", ["", "..", "../", "/", "...."])
def test_safe_filename_refuses_nothing_left(name):
    with pytest.raises(ValueError, match="safe file name"):
        safe_filename(name)


def test_filename_from_disposition_reads_rfc5987():
    assert filename_from_disposition("attachment; filename*=UTF-8''caf%C3%A9.safetensors; filename=\"cafe.safetensors\"") == "café.safetensors"
    assert filename_from_disposition(None) is None


def test_partial_suffix_is_one_the_scanner_skips():
    assert PARTIAL_SUFFIX in PARTIAL_SUFFIXES


# --------------------------------------------------------------------------- the catalog

def test_shipped_catalog_lists_the_starting_checkpoints():
    catalog = Catalog.load(CATALOG_FILE)
    assert catalog.default.filename == "v1-5-pruned-emaonly.safetensors"
    assert catalog.default.sha256 == "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"
    by_file = {e.filename: e for e in catalog.entries}
    assert {"v1-5-pruned-emaonly.safetensors", "v2-1_768-ema-pruned.safetensors", "sd_xl_base_1.0.safetensors"} <= set(by_file)
    assert by_file["sd_xl_base_1.0.safetensors"].shorthash == "31e35c80fc"
    checkpoints = [e for e in catalog.entries if e.folder == "Stable-diffusion"]  # the rest: postprocessing models (upscalers, faces, interrogate)
    assert {e.architecture for e in checkpoints} == {"sd1", "sd2", "sdxl"}
    for entry in checkpoints:
        assert entry.size > 10**9
        assert not entry.url.startswith("http")  # relative to the hub, so HF_ENDPOINT applies
        assert entry.resolved_url("https://mirror.example").startswith("https://mirror.example/")
    assert catalog.find("SD15") is catalog.find("v1-5-pruned-emaonly") is catalog.default
    # TAESD's decoders, under the names the TAESD live preview looks for, pinned by Git blob id.
    for name in ("taesd_decoder.pth", "taesdxl_decoder.pth"):
        source, folder = resolve_request(name, catalog)
        assert folder == "VAE-approx" and len(source.git_blob) == 40 and source.pinned


def write_catalog(path: Path, payload: bytes, url: str = "org/repo/resolve/main/tiny.safetensors") -> Catalog:
    path.write_text(json.dumps({"default": "tiny", "checkpoints": [{
        "name": "tiny", "title": "Tiny", "architecture": "tiny-sd1", "filename": "tiny.safetensors",
        "size": len(payload), "sha256": sha(payload), "url": url, "folder": "Stable-diffusion",
    }]}))
    return Catalog.load(path)


def test_a_catalog_entry_is_fetched_through_hf_endpoint_following_the_cdn_redirect(base, served, folder, payload, tmp_path, monkeypatch):
    served.redirects["/org/repo/resolve/main/tiny.safetensors"] = "/cdn/blob-1234"
    served.files["/cdn/blob-1234"] = payload
    catalog = write_catalog(tmp_path / "catalog.json", payload)
    monkeypatch.setenv("HF_ENDPOINT", base + "/")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    source, target = resolve_request("tiny", catalog)
    assert (source.url, target) == (base + "/org/repo/resolve/main/tiny.safetensors", "Stable-diffusion")
    path = fetch_file(source, folder, console=False)
    assert path == folder / "tiny.safetensors" and path.read_bytes() == payload
    assert served.requests[0] == ("/org/repo/resolve/main/tiny.safetensors", None, "Bearer hf_test")  # the token goes to the hub only


def test_resolve_request_refuses_what_is_neither_a_name_nor_a_url(tmp_path, payload):
    catalog = write_catalog(tmp_path / "catalog.json", payload)
    with pytest.raises(ValueError, match=r"neither a known checkpoint \(tiny\) nor an http\(s\) URL"):
        resolve_request("ftp://example/x.safetensors", catalog)
    with pytest.raises(ValueError, match="Unknown models folder"):
        resolve_request("https://example/x.safetensors", catalog, folder="../etc")
    assert resolve_request("https://example/x.safetensors", catalog, folder="Lora")[1] == "Lora"


def test_a_broken_catalog_is_a_readable_error(tmp_path):
    (tmp_path / "bad.json").write_text('{"checkpoints": [{"name": "x"}]}')
    with pytest.raises(ValueError, match="Cannot read the checkpoint catalog"):
        Catalog.load(tmp_path / "bad.json")


# --------------------------------------------------------------------------- in the background

def test_background_download_reports_progress_and_refuses_a_second_writer(base, served, tmp_path, payload):
    from modules.models.catalog import HashCache
    from modules.options import Paths, parse_args

    paths = Paths.from_args(parse_args(["--data-dir", str(tmp_path)]))
    gate = threading.Event()
    served.hold[FILE] = gate
    finished = []
    hashes = HashCache(tmp_path / "cache.json")
    catalog = write_catalog(tmp_path / "catalog.json", payload, url="files/tiny.safetensors")
    downloads = Downloads(model_folders(paths), catalog, console=False, hashes=hashes, on_finished=lambda f, s: finished.append((f, s)))
    progress = downloads.start(base + FILE, folder="Lora")
    assert downloads.start(base + FILE, folder="Lora") is progress  # the same download, not a second one
    assert progress.status().state in ("waiting", "connecting") and not progress.wait(0.2)
    gate.set()
    assert progress.wait(30)
    status = progress.status()
    assert status.state == "done" and status.path == paths.loras / "tiny.safetensors"
    assert finished == [("Lora", status)] and downloads.running() == []
    assert downloads.statuses() == [status]


def test_background_catalog_download_records_the_verified_hash(base, tmp_path, payload, monkeypatch):
    from modules.models.catalog import HashCache
    from modules.options import Paths, parse_args

    monkeypatch.setenv("HF_ENDPOINT", base)
    paths = Paths.from_args(parse_args(["--data-dir", str(tmp_path)]))
    hashes = HashCache(tmp_path / "cache.json", hashing=False)  # --no-hashing: only what is recorded is known
    downloads = Downloads(model_folders(paths), write_catalog(tmp_path / "catalog.json", payload, url="files/tiny.safetensors"),
                          console=False, hashes=hashes)
    progress = downloads.start("tiny")
    assert progress.wait(30) and progress.status().state == "done"
    assert hashes.sha256(progress.status().path, compute=False) == sha(payload)


def test_background_failure_is_in_the_status_not_raised(tmp_path, payload):
    downloads = Downloads({"Stable-diffusion": tmp_path}, write_catalog(tmp_path / "catalog.json", payload), console=False)
    progress = downloads.start(f"http://127.0.0.1:{closed_port()}/x.safetensors")
    assert progress.wait(10)
    assert progress.status().state == "failed" and "could not connect" in progress.status().error
    with pytest.raises(ValueError, match="neither a known checkpoint"):
        downloads.start("not-a-thing")
