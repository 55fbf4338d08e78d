"""The build script's phases: seeded, resumable, and ending in a file the app loads."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors import safe_open

from modules.demo import training
from modules.models.arch import detect_architecture, read_checkpoint_shapes
from modules.models.loader import load_checkpoint

RECIPE = dataclasses.replace(
    training.Recipe(), vae_steps=4, vae_batch=4, latent_pictures=24, unet_steps=4, unet_batch=4, checkpoint_every=2,
    validation_pictures=8,
)
CPU = torch.device("cpu")


class Stop(Exception):
    pass


class StopAfter:
    """A progress bar that raises after ``n`` steps, like a build killed mid-phase."""

    def __init__(self, n: int):
        self.n, self.count = n, 0

    def __call__(self, description, total):
        return self

    def update(self, k):
        self.count += k
        if self.count >= self.n:
            raise Stop

    def set_postfix(self, **_):
        pass

    def close(self):
        pass


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def build(work, configs_dir, stop_vae_at=None, stop_unet_at=None):
    if stop_vae_at:
        with pytest.raises(Stop):
            training.train_vae(RECIPE, work, CPU, progress=StopAfter(stop_vae_at))
    vae = training.train_vae(RECIPE, work, CPU).eval()
    latents = training.encode_latents(RECIPE, work, vae, CPU)
    if stop_unet_at:
        with pytest.raises(Stop):
            training.train_unet(RECIPE, work, latents, vae.config.scaling_factor, configs_dir, CPU, progress=StopAfter(stop_unet_at))
    text_encoder, unet = training.train_unet(RECIPE, work, latents, vae.config.scaling_factor, configs_dir, CPU)
    return vae, text_encoder, unet


def test_an_interrupted_build_resumes_to_the_same_weights(tmp_path, configs_dir):
    straight = build(tmp_path / "straight", configs_dir)
    resumed = build(tmp_path / "resumed", configs_dir, stop_vae_at=3, stop_unet_at=3)
    assert (tmp_path / "resumed" / "vae" / "state.pt").is_file()
    for a, b in zip(straight, resumed):
        assert same_weights(a.state_dict(), b.state_dict())
    # and the finished phases are reused, not retrained
    again = build(tmp_path / "resumed", configs_dir)
    assert same_weights(again[2].state_dict(), resumed[2].state_dict())


def test_the_written_model_is_an_fp16_a1111_file_the_app_loads(tmp_path, configs_dir):
    vae, text_encoder, unet = build(tmp_path / "work", configs_dir)
    configs = tmp_path / "configs"
    (configs / "clip-tokenizer").mkdir(parents=True)
    for name in ("vocab.json", "merges.txt"):
        (configs / "clip-tokenizer" / name).write_bytes((configs_dir / "clip-tokenizer" / name).read_bytes())
    path = tmp_path / "demo.safetensors"
    training.write_model(path, configs / training.ARCH, vae, text_encoder, unet, RECIPE)

    assert detect_architecture(read_checkpoint_shapes(path)) == training.ARCH
    with safe_open(str(path), framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys() if k.startswith("model.diffusion_model.")}
        assert '"vae_steps": 4' in f.metadata()["demo_model_recipe"]
    assert dtypes == {"F16"}
    loaded = load_checkpoint(path, configs_dir=configs, device=CPU, dtype=torch.float32, vae_dtype=torch.float32)
    assert loaded.arch == training.ARCH
    assert loaded.vae.config.scaling_factor == pytest.approx(vae.config.scaling_factor)
    expected = unet.state_dict()["conv_in.weight"].half().float()
    assert torch.equal(loaded.unet.state_dict()["conv_in.weight"], expected)
