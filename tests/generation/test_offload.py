"""--medvram/--lowvram: the offload hooks must not change a single pixel. Here the execution
device is the CPU (no GPU on this machine), so the hooks move nothing and group offloading runs
without CUDA streams, but every path they wrap runs: text encoder, the UNet layer group by
layer group, VAE decode and encode (img2img), a LoRA injected into the offloaded model, and the
app's model manager and service choosing the mode and tiled-VAE cap from a memory plan. The GPU
side (time, peak memory, same images, streams and pinned memory) is bench/gpu_smoke.py --offload."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modules.generation.devices import DeviceSettings, MemoryPlan, device_settings
from modules.generation.offload import is_streamed, offload
from modules.generation.params import GenerationParams, Img2ImgParams
from modules.generation.runner import InitImages, PromptSetup, Runner
from modules.models.catalog import HashCache
from modules.models.loader import load_checkpoint
from modules.models.lora import LoraLibrary
from tests.conftest import CONFIGS
from tests.models.test_lora import write_test_lora

pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute")


def load(path):
    return load_checkpoint(path, configs_dir=CONFIGS, device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)


def pictures(model, setup: PromptSetup | None = None, prompt: str = "a (red:1.2) circle", img2img: bool = True) -> list[np.ndarray]:
    runner = Runner(model, setup) if setup is not None else Runner(model)
    params = GenerationParams.create(prompt=prompt, width=64, height=64, steps=3, seed=3, sampler_name="Euler", clip_skip=2)
    made = [im for b in runner.txt2img(params, 3) for im in b.images]
    if not img2img:
        return [np.asarray(im) for im in made]
    again = Img2ImgParams.create(prompt="a blue square", width=64, height=64, steps=3, seed=4, denoising_strength=0.6)
    made += [im for b in runner.img2img(again, InitImages((Image.new("RGB", (64, 64), (200, 30, 30)),)), 4) for im in b.images]
    return [np.asarray(im) for im in made]


@pytest.fixture(scope="module")
def plain(tiny_checkpoint):
    return pictures(load(tiny_checkpoint))


@pytest.mark.parametrize("mode", ["model", "blocks"])
def test_offloaded_model_makes_the_same_images(tiny_checkpoint, plain, mode):
    model = load(tiny_checkpoint)
    offload(model, torch.device("cpu"), mode)
    # text encoder and VAE take turns through accelerate's hook (diffusers' VAE encode/decode call it);
    # --lowvram streams the UNet by diffusers' group offloading instead
    assert hasattr(model.text_encoder, "_hf_hook") and hasattr(model.vae, "_hf_hook")
    assert is_streamed(model.unet) == (mode == "blocks") and hasattr(model.unet, "_hf_hook") == (mode == "model")
    for made, expected in zip(pictures(model), plain, strict=True):
        assert np.array_equal(made, expected)


def test_a_lora_on_a_streamed_unet_gives_the_lora_image(tiny_checkpoint, tiny_model, tmp_path, plain):
    folder = tmp_path / "Lora"
    write_test_lora(folder / "shiny.safetensors", tiny_model, strength=0.5)  # copies of its UNet and text encoder
    setup = lambda: PromptSetup(loras=LoraLibrary((folder,), HashCache(None)))  # noqa: E731
    prompt = "a (red:1.2) circle <lora:shiny:1>"
    expected = pictures(load(tiny_checkpoint), setup(), prompt, img2img=False)
    model = load(tiny_checkpoint)
    offload(model, torch.device("cpu"), "blocks")
    made = pictures(model, setup(), prompt, img2img=False)
    assert not np.array_equal(made[0], plain[0])  # the LoRA did something
    for got, want in zip(made, expected, strict=True):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_the_manager_offloads_by_the_plan_and_the_service_caps_the_tiled_vae(tmp_path, tiny_checkpoint, plain):
    from modules.jobs.generation_task import GenerationService
    from modules.jobs.queue import Job
    from modules.models.manager import ModelManager
    from modules.options import OutputSettings

    ckpts = tmp_path / "Stable-diffusion"
    ckpts.mkdir()
    (ckpts / tiny_checkpoint.name).write_bytes(tiny_checkpoint.read_bytes())
    plan = MemoryPlan(sd="blocks", sdxl="model", tiling_sd=0.002)  # a 64x64 picture (0.004 MP) is above the cap
    cpu = DeviceSettings(torch.device("cpu"), torch.float32, torch.float32, memory=plan)
    models = ModelManager((ckpts,), CONFIGS, lambda: cpu, HashCache(None))
    service = GenerationService(models, OutputSettings(), tmp_path, console_progress=False)
    service.use_settings({"vae_tiling_megapixels": 2.0})
    params = GenerationParams.create(prompt="a (red:1.2) circle", width=64, height=64, steps=3, seed=3, sampler_name="Euler", clip_skip=2)
    result = service.run_txt2img(Job(id="task(t)", kind="test", task=lambda j: None), params, save=False)
    assert is_streamed(models.active.model.unet)
    assert service.runner()[1].vae_tiling.megapixels == 0.002
    # tiled (bands, whole-picture GroupNorm statistics) equals untiled up to float rounding
    assert np.abs(np.asarray(result.images[0]).astype(int) - plain[0].astype(int)).max() <= 1


def test_unknown_mode_and_the_cpu_ignores_the_flags():
    cpu = device_settings(use_cpu=True, medvram=True, lowvram=True, always_low_vram=True)  # nothing to save on the CPU
    assert not cpu.offloads and "vram" not in cpu.describe()
    with pytest.raises(ValueError, match="Unknown offload mode"):
        offload(None, torch.device("cpu"), "half")
