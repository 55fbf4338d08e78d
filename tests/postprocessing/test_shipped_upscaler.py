"""The shipped 4× upscaler (models/ESRGAN/4x-demo-shapes-compact.safetensors): spandrel reads
it as a 4× super-resolution model, it is small, it beats Lanczos on held-out demo pictures,
and its training script is seeded and resumable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import spandrel
import torch
from PIL import Image
from safetensors import safe_open

from modules.demo import upscaler_eval, upscaler_training

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "ESRGAN" / upscaler_training.FILE_NAME
MAX_BYTES = 5 * 2**20
# The goal. bench/upscaler_psnr.py measures +1.76 dB on all 64 held-out scenes; these
# 16 (fixed, so the result is too) give +1.95 dB.
MIN_GAIN_DB = 1.5


@pytest.fixture(scope="module")
def shipped():
    return upscaler_eval.load_model(SHIPPED)


def test_the_shipped_file_is_a_small_4x_super_resolution_model(shipped):
    assert SHIPPED.stat().st_size <= MAX_BYTES
    assert isinstance(shipped, spandrel.ImageModelDescriptor)
    assert (shipped.architecture.id, shipped.scale, shipped.purpose) == ("Compact", 4, "SR")
    assert (shipped.input_channels, shipped.output_channels) == (3, 3)
    with safe_open(str(SHIPPED), "pt") as f:  # plain tensors, nothing to unpickle
        assert f.metadata()["architecture"] == "Compact"
        assert all(f.get_tensor(k).dtype == torch.float32 for k in f.keys())
    small = np.zeros((24, 40, 3), np.uint8)
    assert upscaler_eval.model_upscaler(shipped)(small).shape == (96, 160, 3)


def test_it_beats_lanczos_and_bicubic_on_held_out_pictures(shipped):
    pairs = upscaler_eval.held_out_pairs(16)
    upscalers = {"model": upscaler_eval.model_upscaler(shipped)}
    upscalers.update({name: upscaler_eval.pil_upscaler(name) for name in upscaler_eval.PIL_FILTERS})
    scores = upscaler_eval.compare(upscalers, pairs)
    assert scores.gain("model") >= MIN_GAIN_DB, scores.psnr
    assert scores.gain("model", "Bicubic") >= MIN_GAIN_DB, scores.psnr


def test_held_out_pairs_are_the_same_scene_at_two_sizes():
    pairs = upscaler_eval.held_out_pairs(4)
    assert [(s.shape, b.shape) for s, b in pairs] == [((64, 64, 3), (256, 256, 3))] * 4
    assert all((a == b).all() for (a, _), (b, _) in zip(pairs, upscaler_eval.held_out_pairs(4)))  # seeded
    for small, large in pairs:  # the large drawing box-filtered back down is the small one, nearly
        down = large.reshape(64, 4, 64, 4, 3).mean(axis=(1, 3))
        assert np.abs(down - small).mean() < 1.0
    # a perfect upscaler scores the cap, Lanczos does not
    small, large = pairs[0]
    assert upscaler_eval.psnr(large, large) == 100.0
    assert 20 < upscaler_eval.psnr(upscaler_eval.pil_upscaler("Lanczos")(small), large) < 45


RECIPE = dataclasses.replace(upscaler_training.Recipe(), steps=4, batch=2, checkpoint_every=2)


class Stop(Exception):
    pass


def test_training_is_seeded_and_resumes_to_the_same_weights(tmp_path):
    straight = upscaler_training.train(RECIPE, tmp_path / "straight", torch.device("cpu"))

    def stop_after_two(step, loss):
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        upscaler_training.train(RECIPE, tmp_path / "resumed", torch.device("cpu"), stop_after_two)
    assert torch.load(tmp_path / "resumed" / upscaler_training.STATE_FILE, weights_only=True)["step"] == 2
    resumed = upscaler_training.train(RECIPE, tmp_path / "resumed", torch.device("cpu"))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name

    path = upscaler_training.write_model(resumed, tmp_path / "4x-trial.safetensors", RECIPE)
    descriptor = upscaler_eval.load_model(path)
    assert (descriptor.architecture.id, descriptor.scale) == ("Compact", 4)
    small, large = upscaler_training.training_batch(RECIPE, 0)
    assert small.shape == (2, 3, RECIPE.lr_size, RECIPE.lr_size) and large.shape == (2, 3, 4 * RECIPE.lr_size, 4 * RECIPE.lr_size)
    assert torch.equal(small, upscaler_training.training_batch(RECIPE, 0)[0])
    assert not torch.equal(small, upscaler_training.training_batch(RECIPE, 1)[0])


def test_load_model_refuses_a_model_of_another_scale(tmp_path):
    from spandrel.architectures.Compact import Compact
    from safetensors.torch import save_file

    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=1, upscale=2)
    path = tmp_path / "2x.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="not a 4x image upscaler"):
        upscaler_eval.load_model(path)


def transition_share(image) -> float:
    """The share of pixels caught between the background and the shape's colour (a third to
    two thirds of the way): the band along the outline, wider the blurrier the picture."""
    a = np.asarray(image.convert("RGB"), dtype=np.float64)
    background = np.median(np.concatenate([a[:8].reshape(-1, 3), a[-8:].reshape(-1, 3)]), axis=0)
    h, w = a.shape[:2]
    shape = np.median(a[h * 7 // 16: h * 9 // 16, w * 7 // 16: w * 9 // 16].reshape(-1, 3), axis=0)
    d = shape - background
    t = ((a - background) @ d) / (d @ d)
    return float(((t > 1 / 3) & (t < 2 / 3)).mean())


def mean_gradient(image) -> float:
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def test_hires_fix_with_the_shipped_model_is_sharper_than_with_lanczos(demo_model, tmp_path):
    """The demo model's 64-px pictures, 4× by Hires. fix to 256 px, same seeds: the outline's
    blur band is narrower through the shipped model than through Lanczos.

    The denoising strength is low because the 64-px demo model repaints a 256-px picture at
    higher ones, and the demo VAE's 256-px round trip (which every hires pass makes) hides
    much of the difference: the upscaled first pass is far sharper than Lanczos's, the
    hires result's blur band only a few per cent narrower."""
    from modules.demo import judge
    from modules.generation.params import GenerationParams
    from modules.generation.runner import Runner
    from modules.postprocessing.upscalers import UpscalerLibrary, UpscalerModels

    folder = tmp_path / "ESRGAN"
    folder.mkdir()
    (folder / SHIPPED.name).write_bytes(SHIPPED.read_bytes())
    library = UpscalerLibrary([("ESRGAN", folder)], UpscalerModels("cpu", console=False))
    name = SHIPPED.stem
    assert library.model_names == (name,)
    runner = Runner(demo_model)
    runner.upscalers = library.registry
    values = dict(prompt="a red circle on a blue background", width=64, height=64, steps=12, cfg_scale=5, batch_size=2)

    first = [im for b in runner.txt2img(GenerationParams.create(**values), 7) for im in b.images]
    for im in first:  # what the hires pass starts from, upscaled by each
        model_up, lanczos_up = (library.registry.get(u).upscale(im, 4) for u in (name, "Lanczos"))
        assert model_up.size == lanczos_up.size == (256, 256)
        assert mean_gradient(model_up) > 1.5 * mean_gradient(lanczos_up)

    bands = {}
    for upscaler in (name, "Lanczos"):
        params = GenerationParams.create(
            library.model_names, **values, enable_hr=True, hr_upscaler=upscaler, hr_scale=4, denoising_strength=0.1,
        )
        images = [im for b in runner.txt2img(params, 7) for im in b.images]
        assert [im.size for im in images] == [(256, 256)] * 2
        for im in images:  # the band is measured on the asked-for scene
            read = judge.read_picture(im.resize((64, 64), Image.Resampling.BOX))
            assert (read.background, read.colour) == ("blue", "red"), upscaler
        bands[upscaler] = [transition_share(im) for im in images]
    assert all(m < lz for m, lz in zip(bands[name], bands["Lanczos"])), bands
    assert sum(bands[name]) < 0.97 * sum(bands["Lanczos"]), bands
