"""Models of several files in the catalog: an entry's `also` entries download with it (a tagger's
graph and its label table), and the non-weight files they need (.onnx, .csv, .txt, .json) are
accepted only when their SHA-256 is pinned."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from modules.models.downloadable import Catalog
from modules.models.downloads import Downloads
from modules.models.fetch import FetchSource, fetch_file
from tests.fileserver import Served, file_server

GRAPH, TABLE = b"onnx graph bytes" * 100, b"tag_id,name,category,count\n1,smile,0,5\n"


def entry(name: str, filename: str, data: bytes, **extra) -> dict:
    return {"name": name, "title": name, "architecture": "wd14", "filename": filename, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "url": f"files/{filename}", "folder": "deepbooru", **extra}


def test_an_entry_brings_its_companions_into_the_same_folder(tmp_path, monkeypatch):
    served = Served(files={"/files/tagger.onnx": GRAPH, "/files/tagger.csv": TABLE})
    (tmp_path / "catalog.json").write_text(json.dumps({"checkpoints": [
        entry("tagger", "tagger.onnx", GRAPH, also=["tagger-tags"]), entry("tagger-tags", "tagger.csv", TABLE)]}))
    catalog = Catalog.load(tmp_path / "catalog.json")
    assert catalog.find("tagger").also == ("tagger-tags",)
    with file_server(served) as base:
        monkeypatch.setenv("HF_ENDPOINT", base)
        downloads = Downloads({"deepbooru": tmp_path / "deepbooru"}, catalog, console=False)
        downloads.start("tagger")
        deadline = time.monotonic() + 30
        while any(not s.finished for s in downloads.statuses()) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert (tmp_path / "deepbooru" / "tagger.onnx").read_bytes() == GRAPH
    assert (tmp_path / "deepbooru" / "tagger.csv").read_bytes() == TABLE
    assert sorted(s.state for s in downloads.statuses()) == ["done", "done"]


def test_an_also_naming_no_entry_is_a_readable_catalog_error(tmp_path):
    (tmp_path / "catalog.json").write_text(json.dumps({"checkpoints": [entry("tagger", "tagger.onnx", GRAPH, also=["gone"])]}))
    with pytest.raises(ValueError, match="gone"):
        Catalog.load(tmp_path / "catalog.json")


def test_a_label_table_is_fetched_only_with_a_pinned_hash(tmp_path):
    served = Served(files={"/files/tagger.csv": TABLE})
    with file_server(served) as base:
        with pytest.raises(ValueError, match="not a model file"):
            fetch_file(FetchSource(base + "/files/tagger.csv", filename="tagger.csv"), tmp_path, console=False)
        path = fetch_file(FetchSource(base + "/files/tagger.csv", filename="tagger.csv", sha256=hashlib.sha256(TABLE).hexdigest()),
                          tmp_path, console=False)
    assert path.read_bytes() == TABLE
