import gc
import weakref

import pytest
import torch

from modules.generation.devices import device_settings
from modules.models import tiny
from modules.models.catalog import HashCache, compute_sha256
from modules.models.manager import ModelManager
from tests.conftest import CONFIGS


@pytest.fixture
def ckpt_dir(tmp_path, tiny_checkpoint):
    d = tmp_path / "Stable-diffusion"
    d.mkdir()
    (d / "first.safetensors").write_bytes(tiny_checkpoint.read_bytes())
    tiny.write_tiny_checkpoint(d / "second.safetensors", CONFIGS, seed=99)
    return d


def manager(ckpt_dir, tmp_path):
    return ModelManager((ckpt_dir,), CONFIGS, lambda: device_settings(use_cpu=True), HashCache(tmp_path / "cache.json"))


def test_lists_checkpoints_as_name_and_shorthash_once_loaded(ckpt_dir, tmp_path):
    m = manager(ckpt_dir, tmp_path)
    assert m.titles() == ["first.safetensors", "second.safetensors"]
    m.load("second")
    short = compute_sha256(ckpt_dir / "second.safetensors")[:10]
    assert f"second.safetensors [{short}]" in m.titles()
    assert m.active.info.shorthash == short


def test_switching_checkpoints_frees_the_old_one(ckpt_dir, tmp_path):
    m = manager(ckpt_dir, tmp_path)
    first = m.load("first.safetensors")
    old_unet = weakref.ref(first.model.unet)
    old_weight = next(first.model.unet.parameters()).detach().clone()
    del first
    second = m.load("second.safetensors")
    gc.collect()
    assert old_unet() is None, "the old UNet is still referenced after switching"
    assert not torch.equal(next(second.model.unet.parameters()), old_weight)


def test_a_corrupt_checkpoint_gives_a_readable_error_and_keeps_the_current_model(ckpt_dir, tmp_path):
    (ckpt_dir / "broken.safetensors").write_bytes(b"this is not a checkpoint")
    m = manager(ckpt_dir, tmp_path)
    m.load("first")
    with pytest.raises(ValueError, match="broken"):
        m.load("broken.safetensors")
    assert m.active is not None and m.active.info.name == "first"
    with pytest.raises(ValueError, match="Checkpoint not found: 'missing'"):
        m.load("missing")


def test_with_no_checkpoint_the_tiny_model_is_written_and_byte_identical(tmp_path, tiny_checkpoint):
    empty = tmp_path / "Stable-diffusion"
    empty.mkdir()
    m = manager(empty, tmp_path)
    m.ensure_default()
    written = empty / tiny.FILE_NAME
    assert m.titles() == [tiny.FILE_NAME]
    assert written.read_bytes() == tiny_checkpoint.read_bytes()
    assert m.load().is_tiny_random
