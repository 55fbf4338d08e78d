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


def test_start_up_prefers_the_users_checkpoints_then_the_demo_model_then_the_tiny_one(tmp_path, tiny_checkpoint):
    from modules.demo.embedded import EMBEDDED_PATH

    d = tmp_path / "Stable-diffusion"
    d.mkdir()
    (d / tiny.FILE_NAME).write_bytes(tiny_checkpoint.read_bytes())  # left behind by an older version
    m = ModelManager((d,), CONFIGS, lambda: device_settings(use_cpu=True), HashCache(tmp_path / "cache.json"), builtin=(EMBEDDED_PATH,))
    assert [c.path.name for c in m.startup_order()] == [EMBEDDED_PATH.name, tiny.FILE_NAME]
    m.ensure_default()  # the demo model is there, so nothing is written
    assert sorted(p.name for p in d.iterdir()) == [tiny.FILE_NAME]

    (d / "zz-mine.safetensors").write_bytes(tiny_checkpoint.read_bytes())
    m.refresh()
    assert [c.path.name for c in m.startup_order()] == ["zz-mine.safetensors", EMBEDDED_PATH.name, tiny.FILE_NAME]


def test_the_demo_model_comes_with_its_guide_and_defaults(tmp_path):
    from modules.demo.embedded import EMBEDDED_PATH

    m = ModelManager((), CONFIGS, lambda: device_settings(use_cpu=True), HashCache(tmp_path / "cache.json"), builtin=(EMBEDDED_PATH,))
    active = m.load()
    assert active.model.arch == "demo-shapes" and not active.is_tiny_random
    assert {k: active.hints.defaults[k] for k in ("width", "height", "cfg_scale")} == {"width": 64, "height": 64, "cfg_scale": 5}
    assert "a COLOUR SHAPE on a COLOUR background" in active.hints.guide
    assert "a red circle on a blue background" in active.hints.examples


def test_model_hints_are_checked_and_a_bad_file_is_ignored(tmp_path):
    from modules.models.hints import ModelHints

    assert ModelHints.read(tmp_path) == ModelHints()  # no file: no hints
    (tmp_path / "webui.json").write_text('{"defaults": {"width": 63}}')
    assert ModelHints.read(tmp_path) == ModelHints()
    with pytest.raises(ValueError, match="multiple of 8"):
        ModelHints.parse({"defaults": {"width": 63}})
    with pytest.raises(ValueError, match="unknown keys"):
        ModelHints.parse({"default": {}})
    good = ModelHints.parse({"guide": "g", "examples": ["a"], "defaults": {"steps": 12}})
    assert good.defaults["steps"] == 12 and good.examples == ("a",)
