"""The "Available" list: an index in A1111's index.json format, from a URL, a file:// URL or a
path; installed entries marked by URL; clear messages when it does not parse or cannot be reached."""

from __future__ import annotations

import json

import pytest

from modules.extensions.index import load_index, parse_index
from tests.fileserver import Served, closed_port, file_server

INDEX = {
    "tags": {"script": "a script", "tab": "adds a tab"},
    "extensions": [
        {"name": "Hello", "url": "https://github.com/someone/sd-webui-hello.git", "description": "says <b>hello</b>",
         "tags": ["script"], "added": "2023-01-02", "created_at": "2022-12-30T10:00:00Z", "stars": 12},
        {"name": "Tabby", "url": "https://github.com/someone/tabby", "description": "a tab", "tags": ["tab"], "stars": 3},
        {"name": "no url"},
        {"name": "Sneaky", "url": "ext::sh -c touch% /tmp/pwned"},
        "not an object",
    ],
}


def test_an_index_file_is_read_and_installed_entries_marked(tmp_path):
    path = tmp_path / "index.json"
    path.write_text(json.dumps(INDEX))
    for source in (path.as_uri(), str(path)):
        index = load_index(source, installed_urls=["https://github.com/someone/tabby.git/", "file:///elsewhere/x"])
        assert index.tags == {"script": "a script", "tab": "adds a tab"}
        assert [(e.name, e.installed) for e in index.entries] == [("Hello", False), ("Tabby", True)]
        hello = index.entries[0]
        assert (hello.description, hello.tags, hello.added, hello.created_at, hello.stars) == (
            "says <b>hello</b>", ("script",), "2023-01-02", "2022-12-30T10:00:00Z", 12)
    marked = index.mark_installed(["https://github.com/someone/sd-webui-hello"])
    assert [e.installed for e in marked.entries] == [True, False]


def test_an_index_over_http(no_network):
    with file_server(Served(files={"/index.json": json.dumps(INDEX).encode()})) as base:
        index = load_index(f"{base}/index.json")
    assert [e.name for e in index.entries] == ["Hello", "Tabby"]


@pytest.mark.parametrize("text, why", [
    ("{not json", "Expecting property name"),
    ("[1, 2]", 'not an object with an "extensions" list'),
    ('{"tags": {}}', 'not an object with an "extensions" list'),
])
def test_an_index_that_does_not_parse_says_so(tmp_path, text, why):
    path = tmp_path / "index.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"The index at {path.as_uri()} does not parse: .*{why}"):
        load_index(path.as_uri())
    with pytest.raises(ValueError, match="does not parse"):
        parse_index(text)


def test_an_unreachable_index_says_offline(no_network, tmp_path):
    url = "https://raw.githubusercontent.com/AUTOMATIC1111/stable-diffusion-webui-extensions/master/index.json"
    with pytest.raises(ValueError, match=rf"Could not load the index from {url} \(offline\?\): .*network disabled"):
        load_index(url)
    local = f"http://127.0.0.1:{closed_port()}/index.json"
    with pytest.raises(ValueError, match=r"Could not load the index from .* \(offline\?\): .*refused"):
        load_index(local, timeout=5)
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match=r"Could not load the index from .*missing.json \(offline\?\)"):
        load_index(missing.as_uri())
    with pytest.raises(ValueError, match="must be an http"):
        load_index("ftp://example.com/index.json")
