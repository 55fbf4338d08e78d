"""--medvram/--lowvram: the offload hooks must not change a single pixel. Here the execution
device is the CPU (no GPU on this machine), so the hooks move nothing, but every path they
wrap runs: text encoder, UNet block by block, VAE decode and encode (img2img). The GPU side
(peak memory, same images) is bench/gpu_smoke.py --offload."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modules.generation.devices import device_settings
from modules.generation.offload import mode_for, offload
from modules.generation.params import GenerationParams, Img2ImgParams
from modules.generation.runner import InitImages, Runner
from modules.models.loader import load_checkpoint
from tests.conftest import CONFIGS


def pictures(model) -> list[np.ndarray]:
    runner = Runner(model)
    params = GenerationParams.create(prompt="a (red:1.2) circle", width=64, height=64, steps=3, seed=3, sampler_name="Euler")
    made = [im for b in runner.txt2img(params, 3) for im in b.images]
    again = Img2ImgParams.create(prompt="a blue square", width=64, height=64, steps=3, seed=4, denoising_strength=0.6)
    made += [im for b in runner.img2img(again, InitImages((Image.new("RGB", (64, 64), (200, 30, 30)),)), 4) for im in b.images]
    return [np.asarray(im) for im in made]


@pytest.fixture(scope="module")
def plain(tiny_checkpoint):
    return pictures(load_checkpoint(tiny_checkpoint, configs_dir=CONFIGS, device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32))


@pytest.mark.parametrize("mode", ["model", "blocks"])
def test_offloaded_model_makes_the_same_images(tiny_checkpoint, plain, mode):
    model = load_checkpoint(tiny_checkpoint, configs_dir=CONFIGS, device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)
    offload(model, torch.device("cpu"), mode)
    hooked = [m for m in (model.text_encoder, model.unet.down_blocks[0], model.vae) if hasattr(m, "_hf_hook")]
    assert len(hooked) == (3 if mode == "blocks" else 2)  # blocks: the UNet's blocks carry the hooks, not the UNet
    for made, expected in zip(pictures(model), plain, strict=True):
        assert np.array_equal(made, expected)


def test_which_models_offload_and_where_the_flags_count():
    assert mode_for("sd1", medvram=True) == "model" and mode_for("sd1", medvram_sdxl=True) == "none"
    assert mode_for("sdxl", medvram_sdxl=True) == "model" and mode_for("sd1", medvram=True, lowvram=True) == "blocks"
    cpu = device_settings(use_cpu=True, medvram=True, lowvram=True)  # nothing to save on the CPU: ignored
    assert not cpu.offloads and "vram" not in cpu.describe()
    with pytest.raises(ValueError, match="Unknown offload mode"):
        offload(None, torch.device("cpu"), "half")
