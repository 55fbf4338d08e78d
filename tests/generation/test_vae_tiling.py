"""Tiled VAE (modules/generation/vae_tiling.py): above the vae_tiling_megapixels threshold a
picture is decoded and encoded band by band with the whole picture's GroupNorm statistics,
and comes out as the untiled one does; below it the VAE's own decode runs, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.generation import vae_tiling
from modules.generation.runner import Runner
from modules.generation.vae_tiling import VaeTiling

BANDS = VaeTiling(megapixels=0.1, band_pixels=512 * 64)  # 512 px wide: bands of 64 rows, 8 at full size


def _mosaic(side: int) -> torch.Tensor:
    """Demo-model pictures (a shape on a background) tiled side x side, as VAE input in [-1, 1]."""
    from modules.demo import shapes

    rng = np.random.default_rng(7)
    scenes = shapes.all_scenes()
    tiles = [shapes.random_picture(scenes[(i * 5) % len(scenes)], rng) for i in range(side * side)]
    rows = [np.concatenate(tiles[r * side:(r + 1) * side], axis=1) for r in range(side)]
    picture = np.ascontiguousarray(np.concatenate(rows, axis=0))
    return torch.from_numpy(picture).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.fixture(scope="module")
def demo_latent_512(demo_model):
    """A 512-px demo latent (64x64), scaled as the sampler holds it."""
    with torch.inference_mode():
        raw = demo_model.vae.encode(_mosaic(8)).latent_dist.mode()
    return raw * demo_model.vae.config.scaling_factor


def _pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


def test_tiled_decode_of_a_512px_demo_latent_matches_the_untiled_one(demo_model, demo_latent_512):
    runner = Runner(demo_model)
    with torch.inference_mode():
        plain = runner.decode(demo_latent_512)
        runner.vae_tiling = BANDS
        tiled = runner.decode(demo_latent_512)
    assert tiled[0].size == plain[0].size == (512, 512)
    diff = np.abs(_pixels(tiled) - _pixels(plain))
    # Measured: at most 1/255 (float rounding at a few pixels), mean below 0.001/255.
    assert diff.max() <= 2 and diff.mean() < 0.01, (diff.max(), diff.mean())


def test_below_the_threshold_the_vae_runs_untouched(demo_model, demo_latent_512, monkeypatch):
    runner = Runner(demo_model)
    latent = demo_latent_512[..., :32, :32]  # 256 px: 0.066 MP
    with torch.inference_mode():
        plain = runner.decode(latent)
        runner.vae_tiling = VaeTiling(megapixels=0.07, band_pixels=64 * 64)
        monkeypatch.setattr(vae_tiling._Banded, "decode", lambda *a: pytest.fail("tiled below the threshold"))
        below = runner.decode(latent)
    assert np.array_equal(_pixels(below), _pixels(plain))
    assert VaeTiling(0.07).applies(256, 274) and not VaeTiling(0.07).applies(256, 256) and not VaeTiling(0).applies(10**5, 10**5)


def test_tiled_encode_gives_the_untiled_latents(demo_model):
    pixels = _mosaic(4)  # 256 px
    vae = demo_model.vae
    with torch.inference_mode():
        plain = vae.encode(pixels).latent_dist.mode()
        tiled = vae_tiling.encode_mode(vae, pixels, VaeTiling(megapixels=0.01, band_pixels=64 * 64))
    assert tiled.shape == plain.shape == (1, 4, 32, 32)
    assert (tiled - plain).abs().max().item() < 1e-3 * plain.abs().max().item()


def test_runner_img2img_encode_uses_the_tiling(demo_model, monkeypatch):
    """img2img's encode goes through the tiled path above the threshold (and nowhere else)."""
    from PIL import Image

    runner = Runner(demo_model)
    calls = []
    real = vae_tiling._Banded.encode
    monkeypatch.setattr(vae_tiling._Banded, "encode", lambda self, x: calls.append(x.shape) or real(self, x))
    picture = Image.fromarray(((_mosaic(2)[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy())
    with torch.inference_mode():
        plain = runner.encode([picture])
        runner.vae_tiling = VaeTiling(megapixels=0.01, band_pixels=32 * 32)
        tiled = runner.encode([picture])
    assert calls == [(1, 3, 128, 128)]
    assert torch.allclose(plain, tiled, atol=1e-3 * plain.abs().max().item())
