"""Textual-inversion files in every layout users bring, read back value for value, and the
files that must never be loaded (pickled objects, garbage) reported instead of run."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from modules.models.catalog import HashCache
from modules.models.embeddings import Embedding, EmbeddingLibrary, load_embedding


@dataclass
class TrainingNotes:
    """Stands in for any custom class a pickled file might carry."""

    text: str


class WritesAFile:
    """Unpickling this with plain pickle would create `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def vectors(n: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def write_a1111_pt(path: Path, vec: torch.Tensor, step: int = 1500, **extra) -> Path:
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": vec},
            "name": path.stem,
            "step": step,
            "sd_checkpoint": "cc6cb27103",
            "sd_checkpoint_name": "v1-5-pruned-emaonly",
            **extra,
        },
        path,
    )
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "embeddings"
    d.mkdir()
    return d


def library(folder: Path, tmp_path: Path) -> EmbeddingLibrary:
    return EmbeddingLibrary((folder,), HashCache(tmp_path / "cache.json", section="textual_inversion"))


def test_a1111_pt_is_read_with_its_training_facts(folder):
    vec = vectors(1, 768, seed=1)
    emb = load_embedding(write_a1111_pt(folder / "style.pt", vec))
    assert emb.name == "style" and emb.vector_count == 1 and emb.step == 1500
    assert torch.equal(emb.for_width(768), vec)
    assert emb.for_width(1024) is None
    assert emb.info == {"step": 1500, "sd_checkpoint": "cc6cb27103", "sd_checkpoint_name": "v1-5-pruned-emaonly"}


def test_old_a1111_pt_with_a_parameter_dict_is_read(folder):
    vec = vectors(3, 1024, seed=2)
    path = folder / "old.pt"
    torch.save({"string_to_param": torch.nn.ParameterDict({"*": torch.nn.Parameter(vec.clone())}), "step": 7}, path)
    emb = load_embedding(path)
    assert torch.equal(emb.for_width(1024), vec) and emb.vector_count == 3 and emb.step == 7
    assert not emb.for_width(1024).requires_grad


def test_a1111_safetensors_emb_params_multi_vector(folder):
    vec = vectors(8, 768, seed=3)
    save_file({"emb_params": vec}, str(folder / "eight.safetensors"))
    emb = load_embedding(folder / "eight.safetensors")
    assert emb.vector_count == 8 and emb.step is None
    assert torch.equal(emb.for_width(768), vec)


def test_sdxl_safetensors_holds_both_encoders(folder):
    clip_l, clip_g = vectors(2, 768, seed=4), vectors(2, 1280, seed=5)
    save_file({"clip_l": clip_l.half(), "clip_g": clip_g.half()}, str(folder / "xl.safetensors"))
    emb = load_embedding(folder / "xl.safetensors")
    assert set(emb.vectors) == {"clip_l", "clip_g"} and emb.vector_count == 2
    assert emb.for_width(768).dtype == torch.float32
    assert torch.equal(emb.for_width(768), clip_l.half().float())
    assert torch.equal(emb.for_width(1280), clip_g.half().float())


def test_diffusers_bin_single_vector_and_matrix(folder):
    one = vectors(1, 768, seed=6)[0]
    torch.save({"<cat-toy>": one}, folder / "cat.bin")
    emb = load_embedding(folder / "cat.bin")
    assert emb.for_width(768).shape == (1, 768) and torch.equal(emb.for_width(768)[0], one)

    many = vectors(4, 1024, seed=7)
    torch.save({"<dog>": many}, folder / "dog.bin")
    assert torch.equal(load_embedding(folder / "dog.bin").for_width(1024), many)


def test_a_pickled_custom_object_is_skipped_and_never_run(folder, tmp_path):
    marker = tmp_path / "code-ran"
    write_a1111_pt(folder / "notes.pt", vectors(1, 768, seed=8), notes=TrainingNotes("hello"))
    torch.save({"string_to_param": {"*": vectors(1, 768, seed=9)}, "payload": WritesAFile(marker)}, folder / "evil.pt")
    lib = library(folder, tmp_path)
    assert lib.names == ["evil", "notes"]
    assert lib.get("evil") is None and lib.get("notes") is None
    assert not marker.exists(), "loading an embedding ran code from the file"
    skipped = lib.skipped
    assert "TrainingNotes" in skipped["notes"] and "arbitrary code" in skipped["notes"]
    assert "mkdir" in skipped["evil"] and "arbitrary code" in skipped["evil"]


def test_unusable_files_are_skipped_with_a_reason(folder, tmp_path):
    (folder / "garbage.pt").write_bytes(b"\x00\x01 definitely not a pickle")
    (folder / "garbage2.safetensors").write_bytes(b"nope")
    (folder / "empty.bin").write_bytes(b"")
    torch.save({"a": torch.zeros(2, 768), "b": torch.zeros(2, 768)}, folder / "two-tokens.bin")
    torch.save({"string_to_param": {"*": torch.zeros(1, 768), "x": torch.zeros(1, 768)}}, folder / "two-terms.pt")
    torch.save({"string_to_param": {"*": torch.zeros(2, 3, 768)}}, folder / "cube.pt")
    save_file({"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(2, 1280)}, str(folder / "uneven.safetensors"))
    save_file({"emb_params": vectors(1, 768, seed=10)}, str(folder / "good.safetensors"))
    lib = library(folder, tmp_path)
    skipped = lib.skipped
    assert set(skipped) == {"garbage", "garbage2", "empty", "two-tokens", "two-terms", "cube", "uneven"}
    assert "not a readable PyTorch file" in skipped["garbage"]
    assert "safetensors" in skipped["garbage2"]
    assert skipped["empty"] == "the file is empty"
    assert "unknown layout" in skipped["two-tokens"]
    assert "2 terms" in skipped["two-terms"]
    assert "[2, 3, 768]" in skipped["cube"]
    assert "different numbers of vectors" in skipped["uneven"]
    assert [e.name for e in lib.loaded()] == ["good"]


def test_scanning_is_recursive_first_name_wins_and_hidden_or_partial_files_are_ignored(folder, tmp_path):
    save_file({"emb_params": vectors(1, 768, seed=11)}, str(folder / "a.safetensors"))
    (folder / "sub").mkdir()
    save_file({"emb_params": vectors(1, 768, seed=12)}, str(folder / "sub" / "a.safetensors"))
    save_file({"emb_params": vectors(1, 768, seed=13)}, str(folder / "sub" / "b.safetensors"))
    save_file({"emb_params": vectors(1, 768, seed=14)}, str(folder / ".hidden.safetensors"))
    save_file({"emb_params": vectors(1, 768, seed=15)}, str(folder / "c.safetensors.part"))
    (folder / "notes.txt").write_text("not an embedding")
    lib = library(folder, tmp_path)
    assert lib.names == ["a", "b"]
    assert torch.equal(lib.get("a").for_width(768), vectors(1, 768, seed=11))
    assert "found first" in lib.skipped["sub/a.safetensors"]
    assert lib.get("missing") is None


def test_embeddings_are_cached_until_refresh_sees_the_file_change(folder, tmp_path):
    path = folder / "word.safetensors"
    save_file({"emb_params": vectors(1, 768, seed=16)}, str(path))
    lib = library(folder, tmp_path)
    first = lib.get("word")
    assert lib.get("word") is first

    save_file({"emb_params": vectors(2, 768, seed=17)}, str(path))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert lib.get("word") is first, "get() alone must not reread the file"
    lib.refresh()
    assert torch.equal(lib.get("word").for_width(768), vectors(2, 768, seed=17))

    save_file({"emb_params": vectors(1, 768, seed=18)}, str(folder / "new.safetensors"))
    path.unlink()
    lib.refresh()
    assert lib.names == ["new"] and lib.get("word") is None


def test_shorthash_is_the_first_12_hex_digits_of_the_file_sha256(folder, tmp_path):
    path = write_a1111_pt(folder / "style.pt", vectors(1, 768, seed=19))
    lib = library(folder, tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert lib.shorthash(lib.get("style")) == digest[:12]
    no_hashing = EmbeddingLibrary((folder,), HashCache(None, hashing=False))
    assert no_hashing.shorthash(no_hashing.get("style")) is None


def test_describe_splits_loaded_and_skipped_by_the_model_encoder_widths(folder, tmp_path):
    write_a1111_pt(folder / "sd1.pt", vectors(2, 768, seed=20))
    save_file({"emb_params": vectors(3, 1024, seed=21)}, str(folder / "sd2.safetensors"))
    save_file({"clip_l": vectors(1, 768, seed=22), "clip_g": vectors(1, 1280, seed=23)}, str(folder / "xl.safetensors"))
    (folder / "broken.pt").write_bytes(b"junk")
    lib = library(folder, tmp_path)

    sd1 = lib.describe({768})
    assert set(sd1["loaded"]) == {"sd1", "xl"} and set(sd1["skipped"]) == {"sd2"}
    assert sd1["loaded"]["sd1"] == {
        "step": 1500,
        "sd_checkpoint": "cc6cb27103",
        "sd_checkpoint_name": "v1-5-pruned-emaonly",
        "shape": 768,
        "vectors": 2,
    }
    assert sd1["skipped"]["sd2"] == {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 1024, "vectors": 3}

    sd2 = lib.describe({1024})
    assert set(sd2["loaded"]) == {"sd2"} and set(sd2["skipped"]) == {"sd1", "xl"}
    assert sd2["skipped"]["xl"]["shape"] == 768 + 1280

    sdxl = lib.describe({768, 1280})
    assert set(sdxl["loaded"]) == {"xl"} and set(sdxl["skipped"]) == {"sd1", "sd2"}


def test_embedding_value_api():
    emb = Embedding("w", Path("w.pt"), {"clip_l": torch.zeros(2, 768), "clip_g": torch.ones(2, 1280)}, {"step": 3})
    assert emb.vector_count == 2 and emb.step == 3 and emb.shape == 2048
    assert torch.equal(emb.for_width(1280), torch.ones(2, 1280))
