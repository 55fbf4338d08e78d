"""Checkpoints are listed, named and hashed the way A1111 users and API clients expect."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
from pathlib import Path

import pytest

from modules.models import catalog
from modules.models.catalog import CheckpointInfo, HashCache, compute_sha256, find_checkpoints, resolve


def write(path: Path, data: bytes = b"weights") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_diffusers_folder(folder: Path) -> Path:
    write(folder / "model_index.json", b"{}")
    write(folder / "unet" / "diffusion_pytorch_model.safetensors", b"unet")
    write(folder / "vae" / "diffusion_pytorch_model.safetensors", b"vae")
    write(folder / "text_encoder" / "model.safetensors", b"te")
    write(folder / "unet" / "config.json", b"{}")
    return folder


@pytest.fixture
def open_counter(monkeypatch):
    """Counts files the catalog opens for reading weights."""
    opened: list[str] = []

    def counting_open(file, mode="r", *args, **kwargs):
        if "b" in mode and "r" in mode:
            opened.append(str(file))
        return builtins.open(file, mode, *args, **kwargs)

    monkeypatch.setattr(catalog, "open", counting_open, raising=False)
    return opened


def test_finds_files_and_folders_sorted_case_insensitively(tmp_path):
    root = tmp_path / "Stable-diffusion"
    write(root / "b_model.safetensors")
    write(root / "A_model.ckpt")
    write(root / "model10.safetensors")
    write(root / "model2.safetensors")
    write(root / "sub" / "nested.safetensors")
    make_diffusers_folder(root / "diffusers-model")
    write(root / "notes.txt")
    write(root / "vae.pt")
    infos = find_checkpoints([root])
    assert [i.name for i in infos] == [
        "A_model", "b_model", "diffusers-model", "model2", "model10", "sub/nested",
    ]
    nested = infos[-1]
    assert nested == CheckpointInfo(path=root / "sub" / "nested.safetensors", name="sub/nested", model_name="nested")
    assert nested.filename == "sub/nested.safetensors"
    folder = infos[2]
    assert folder.is_folder and folder.model_name == "diffusers-model" and folder.filename == "diffusers-model"


def test_skips_hidden_partial_and_inner_folder_weights(tmp_path):
    root = tmp_path / "models"
    write(root / "good.safetensors")
    write(root / ".hidden.safetensors")
    write(root / ".cache" / "x.safetensors")
    write(root / "down.safetensors.part")
    write(root / "down2.safetensors.tmp")
    write(root / "down3.safetensors.partial")
    write(root / "aria.safetensors")
    write(root / "aria.safetensors.aria2")
    make_diffusers_folder(root / "pipe")
    assert [i.name for i in find_checkpoints([root])] == ["good", "pipe"]


def test_multiple_dirs_missing_dir_single_file_and_dedupe(tmp_path):
    a = write(tmp_path / "a" / "one.safetensors")
    write(tmp_path / "b" / "two.ckpt")
    extra = write(tmp_path / "elsewhere" / "three.safetensors")
    infos = find_checkpoints([tmp_path / "a", tmp_path / "missing", tmp_path / "b", tmp_path / "a", extra, a])
    assert [i.name for i in infos] == ["one", "three", "two"]


def test_dir_that_is_itself_a_diffusers_folder(tmp_path):
    folder = make_diffusers_folder(tmp_path / "my-pipe")
    infos = find_checkpoints([folder])
    assert len(infos) == 1 and infos[0].is_folder and infos[0].name == "my-pipe"


def test_title_before_and_after_hash(tmp_path):
    info = CheckpointInfo(path=tmp_path / "v1-5-pruned-emaonly.safetensors", name="v1-5-pruned-emaonly",
                          model_name="v1-5-pruned-emaonly")
    assert info.title == "v1-5-pruned-emaonly.safetensors"
    assert info.shorthash is None
    hashed = info.with_sha256("6CE0161689B3853ACAA03779EC93EAFE75A02F4CED659BEE03F50797806FA2FA")
    assert hashed.shorthash == "6ce0161689"
    assert hashed.title == "v1-5-pruned-emaonly.safetensors [6ce0161689]"
    assert hashed.short_title == "v1-5-pruned-emaonly [6ce0161689]"
    assert info.sha256 is None  # frozen: the original is unchanged


def test_hash_matches_hashlib_and_is_computed_once(tmp_path, open_counter):
    data = os.urandom(3 * 1024 * 1024 + 17)  # several 1 MiB chunks plus a tail
    model = write(tmp_path / "m.safetensors", data)
    cache = HashCache(tmp_path / "cache.json")
    expected = hashlib.sha256(data).hexdigest()
    assert cache.sha256(model) == expected
    assert cache.shorthash(model) == expected[:10]
    assert open_counter == [str(model)]
    assert cache.sha256(model) == expected
    assert open_counter == [str(model)]  # second call served from the cache

    stored = json.loads((tmp_path / "cache.json").read_text())
    entry = stored["checkpoint-sha256"][str(model.resolve())]
    assert entry["sha256"] == expected and entry["size"] == len(data)


def test_cache_file_survives_restart_without_reading_the_model(tmp_path, open_counter):
    model = write(tmp_path / "m.safetensors", b"first version")
    first = HashCache(tmp_path / "cache.json").sha256(model)
    open_counter.clear()
    restarted = HashCache(tmp_path / "cache.json")
    assert restarted.sha256(model) == first
    assert open_counter == []


def test_changed_file_is_rehashed(tmp_path):
    model = write(tmp_path / "m.safetensors", b"first version")
    cache = HashCache(tmp_path / "cache.json")
    old = cache.sha256(model)
    model.write_bytes(b"second version!!")
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert cache.sha256(model) == hashlib.sha256(b"second version!!").hexdigest() != old
    # same size, only the mtime moved: still rehashed
    model.write_bytes(b"third  version!!")
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 9_000_000_000))
    assert HashCache(tmp_path / "cache.json").sha256(model) == hashlib.sha256(b"third  version!!").hexdigest()


def test_no_hashing_mode_returns_only_cached(tmp_path, open_counter):
    model = write(tmp_path / "m.safetensors", b"abc")
    lazy = HashCache(tmp_path / "cache.json", hashing=False)
    assert lazy.sha256(model) is None
    assert open_counter == []
    HashCache(tmp_path / "cache.json").sha256(model)
    assert HashCache(tmp_path / "cache.json", hashing=False).sha256(model) == hashlib.sha256(b"abc").hexdigest()


def test_cache_keeps_other_sections_and_tolerates_garbage(tmp_path):
    cache_file = tmp_path / "cache.json"
    cache_file.write_text(json.dumps({"safetensors-metadata": {"x": {"y": 1}}}))
    model = write(tmp_path / "m.safetensors", b"abc")
    HashCache(cache_file).sha256(model)
    data = json.loads(cache_file.read_text())
    assert data["safetensors-metadata"] == {"x": {"y": 1}}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    cache_file.write_text("{not json")
    assert HashCache(cache_file).sha256(model) == hashlib.sha256(b"abc").hexdigest()


def test_missing_file_hash_is_none(tmp_path):
    assert HashCache(None).sha256(tmp_path / "gone.safetensors") is None


def test_diffusers_folder_hash_is_sorted_concatenation_of_weights(tmp_path):
    folder = make_diffusers_folder(tmp_path / "pipe")
    # sorted relative paths: text_encoder/model..., unet/diffusion..., vae/diffusion...
    expected = hashlib.sha256(b"te" + b"unet" + b"vae").hexdigest()
    assert compute_sha256(folder) == expected
    cache = HashCache(tmp_path / "cache.json")
    assert cache.sha256(folder) == expected
    write(folder / "vae" / "diffusion_pytorch_model.safetensors", b"vae2")
    assert cache.sha256(folder) == hashlib.sha256(b"te" + b"unet" + b"vae2").hexdigest()


def test_find_checkpoints_fills_cached_hashes_without_hashing(tmp_path, open_counter):
    root = tmp_path / "models"
    known = write(root / "known.safetensors", b"k")
    write(root / "unknown.safetensors", b"u")
    cache = HashCache(tmp_path / "cache.json")
    cache.sha256(known)
    open_counter.clear()
    infos = find_checkpoints([root], hashes=cache)
    assert open_counter == []
    assert infos[0].title == f"known.safetensors [{hashlib.sha256(b'k').hexdigest()[:10]}]"
    assert infos[1].title == "unknown.safetensors"


def test_resolve_accepts_what_a1111_accepts(tmp_path):
    root = tmp_path / "models"
    write(root / "v1-5-pruned-emaonly.safetensors", b"sd15")
    write(root / "sdxl" / "juggernaut.safetensors", b"jug")
    write(root / "v1-5-pruned-emaonly-inpainting.ckpt", b"inp")
    cache = HashCache(None)
    infos = [cache.attach(i) for i in find_checkpoints([root])]
    sd15 = next(i for i in infos if i.name == "v1-5-pruned-emaonly")
    jug = next(i for i in infos if i.name == "sdxl/juggernaut")
    sha = hashlib.sha256(b"sd15").hexdigest()

    for query in (
        f"v1-5-pruned-emaonly.safetensors [{sha[:10]}]",  # title
        "v1-5-pruned-emaonly",  # name
        "v1-5-pruned-emaonly.safetensors",  # name with extension
        f"v1-5-pruned-emaonly [{sha[:10]}]",  # short title
        sha[:10],  # shorthash
        sha,  # full sha256
        sha.upper(),
        "  v1-5-pruned-emaonly.safetensors  ",
    ):
        assert resolve(query, infos) is sd15, query

    assert resolve("sdxl/juggernaut", infos) is jug
    assert resolve("sdxl/juggernaut.safetensors", infos) is jug
    assert resolve("sdxl_juggernaut", infos) is jug  # A1111's model_name form
    assert resolve("juggernaut", infos) is jug
    # a renamed file is still found by the hash in a stored title
    assert resolve(f"old-name.safetensors [{sha[:10]}]", infos) is sd15
    # an unknown hash in a title falls back to the name
    assert resolve("v1-5-pruned-emaonly.safetensors [0123456789]", infos) is sd15
    # A1111's closest match: shortest title containing the text
    assert resolve("pruned", infos) is sd15
    assert resolve("inpainting", infos).name == "v1-5-pruned-emaonly-inpainting"
    assert resolve("nothing-like-this", infos) is None
    assert resolve("", infos) is None


def test_a_sidecar_config_folder_is_not_listed_as_a_model(tmp_path):
    (tmp_path / "custom.safetensors").write_bytes(b"x")
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "model_index.json").write_text("{}")
    (tmp_path / "real-diffusers").mkdir()
    (tmp_path / "real-diffusers" / "model_index.json").write_text("{}")
    assert [c.name for c in find_checkpoints([tmp_path])] == ["custom", "real-diffusers"]
    assert [c.is_folder for c in find_checkpoints([tmp_path])] == [False, True]


def test_gguf_transformers_are_listed_as_checkpoints(tmp_path):
    """Quantized Flux / SD 3.5 transformers (city96's .gguf files) sit in models/Stable-diffusion,
    as in Forge; their side-car config folder is theirs, not a model of its own."""
    root = tmp_path / "Stable-diffusion"
    gguf = write(root / "flux" / "flux1-dev-Q4_K_S.gguf")
    (root / "flux" / "flux1-dev-Q4_K_S").mkdir()
    write(root / "flux" / "flux1-dev-Q4_K_S" / "model_index.json", b"{}")
    write(root / "notes.ggml")
    infos = find_checkpoints([root])
    assert [(i.name, i.filename, i.is_folder) for i in infos] == [
        ("flux/flux1-dev-Q4_K_S", "flux/flux1-dev-Q4_K_S.gguf", False)
    ]
    assert [i.name for i in find_checkpoints([gguf])] == ["flux1-dev-Q4_K_S"]  # --ckpt naming a .gguf
