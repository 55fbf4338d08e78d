"""Each job refreshes the embeddings before it reads its prompts. The refresh skips the folder
walk while no folder changed; these check that a file added, removed, renamed or rewritten
between two jobs is still seen by the next one, with the folders' mtimes old enough for the
skip to apply."""

from __future__ import annotations

import os
import time

import pytest
import torch
from safetensors.torch import save_file

from modules.models.catalog import HashCache
from modules.models.embeddings import EmbeddingLibrary

OLD = time.time() - 3600


def write(path, seed: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.randn(1, 32, generator=torch.Generator().manual_seed(seed))}, str(path))


def age(*folders) -> None:
    """Give the folders an hour-old mtime: the scan then trusts them (no 2-second doubt)."""
    for folder in folders:
        os.utime(folder, (OLD, OLD))


@pytest.fixture
def library(tmp_path):
    root = tmp_path / "embeddings"
    write(root / "cat.safetensors")
    write(root / "styles" / "ink.safetensors")
    age(root, root / "styles")
    lib = EmbeddingLibrary((root,), HashCache(tmp_path / "cache.json"))
    lib.refresh()  # the first refresh's folders are old: the next one may skip the walk
    return lib, root


def test_nothing_changed_keeps_the_same_names_and_version_without_walking_the_folders(library, monkeypatch):
    import modules.models.embeddings as embeddings

    walks = []
    real = embeddings.scan_files
    monkeypatch.setattr(embeddings, "scan_files", lambda *a, **k: walks.append(1) or real(*a, **k))
    lib, root = library
    version = lib.version
    lib.refresh()
    assert sorted(lib.names) == ["cat", "ink"] and lib.version == version
    assert walks == []  # the shortcut this file checks is taken
    write(root / "styles" / "oil.safetensors")
    lib.refresh()
    assert walks == [1] and "oil" in lib.names  # and a change walks again


def test_a_file_added_in_a_subfolder_is_seen(library):
    lib, root = library
    write(root / "styles" / "oil.safetensors")
    lib.refresh()
    assert "oil" in lib.names and lib.get("oil") is not None


def test_a_new_subfolder_and_a_removed_file_are_seen(library):
    lib, root = library
    write(root / "new" / "deep" / "sky.safetensors")
    (root / "cat.safetensors").unlink()
    lib.refresh()
    assert sorted(lib.names) == ["ink", "sky"]


def test_a_renamed_file_is_seen(library):
    lib, root = library
    (root / "styles" / "ink.safetensors").rename(root / "styles" / "pen.safetensors")
    lib.refresh()
    assert sorted(lib.names) == ["cat", "pen"]


def test_a_loaded_file_rewritten_in_place_is_read_again(library):
    lib, root = library
    before = lib.get("cat").for_width(32).clone()
    write(root / "cat.safetensors", seed=1)  # same name: the folder's mtime may not change
    os.utime(root / "cat.safetensors", (OLD + 60, OLD + 60))
    age(root)
    lib.refresh()
    assert not torch.equal(lib.get("cat").for_width(32), before)


def test_the_folder_appearing_later_is_scanned(tmp_path):
    root = tmp_path / "later"
    lib = EmbeddingLibrary((root,), HashCache(tmp_path / "cache.json"))
    lib.refresh()
    assert lib.names == []
    write(root / "cat.safetensors")
    lib.refresh()
    assert lib.names == ["cat"]
