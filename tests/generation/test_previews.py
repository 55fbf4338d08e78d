"""Live preview methods (modules/generation/previews.py, A1111's show_progress_type): Full,
Approx cheap (published factors per family, else a projection fitted to the model's VAE,
else Full where none fits) and TAESD (a decoder from models/VAE-approx, else Approx cheap)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from modules.generation import previews
from modules.generation.previews import FAMILY_PROJECTIONS, MAX_FIT_ERROR, LivePreviews, approximate, fit_projection, load_taesd_decoder
from modules.generation.runner import Runner

LATENT = (12, 16)  # h, w: a 128 x 96 picture


def _latents(seed: int = 0, channels: int = 4) -> torch.Tensor:
    return torch.randn((1, channels, *LATENT), generator=torch.Generator().manual_seed(seed))


def _as_family(model, arch: str):
    """The demo model's VAE (4 latent channels, 8x) under another family's name."""
    return SimpleNamespace(arch=arch, vae=model.vae, device=torch.device("cpu"), vae_dtype=torch.float32)


def _random_taesd(seed: int = 3):
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    return AutoencoderTiny().eval()


def _save_a1111_layout(taesd, path) -> None:
    """madebyollin's taesd_decoder.pth layout: the decoder Sequential's keys, one index ahead (its Clamp is layer 0)."""
    state = {}
    for key, value in taesd.decoder.state_dict().items():
        _, index, rest = key.split(".", 2)
        state[f"{int(index) + 1}.{rest}"] = value
    torch.save(state, path)


def _full(model):
    runner = Runner(model)
    return lambda latents: runner.decode(latents, check=False)[0]


def test_each_method_gives_a_picture_of_the_generation_size(demo_model, tmp_path):
    _save_a1111_layout(_random_taesd(), tmp_path / "taesd_decoder.pth")
    sd1 = _as_family(demo_model, "sd1")
    latents = _latents()
    with torch.inference_mode():
        for method in ("Full", "Approx cheap", "TAESD"):
            image = LivePreviews(tmp_path, method).image(sd1, latents, _full(demo_model))
            assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (128, 96), method


def test_approx_cheap_uses_the_published_factors_of_the_family(demo_model):
    """SD1's first latent channel alone is the colour of its factor row, wherever it is."""
    latents = torch.zeros((1, 4, *LATENT))
    latents[:, 0] = 1.0
    image = LivePreviews(method="Approx cheap").image(_as_family(demo_model, "sd1"), latents, lambda _: pytest.fail("decoded"))
    expected = tuple(round((f + 1) * 127.5) for f in FAMILY_PROJECTIONS["sd1"].factors[0])
    assert image.getpixel((0, 0)) == image.getpixel((127, 95)) == image.getpixel((64, 40)) == expected
    xl = LivePreviews(method="Approx cheap").image(_as_family(demo_model, "sdxl"), latents, lambda _: pytest.fail("decoded"))
    assert xl.getpixel((10, 10)) != expected  # SDXL's own factors and bias


class _LinearVae(torch.nn.Module):
    """A VAE whose latents are a fixed linear map of each 8x8 block's mean colour: the kind a
    projection can invert exactly."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(block_out_channels=(1, 2, 3, 4), scaling_factor=0.5, latent_channels=4, get=lambda k, d=None: d)
        self.mix = torch.nn.Parameter(torch.tensor([[0.9, -0.2, 0.1], [0.3, 0.8, -0.4], [-0.5, 0.2, 0.7], [0.1, 0.1, 0.1]]))
        self.offset = torch.nn.Parameter(torch.tensor([0.1, -0.3, 0.2, 0.05]))

    def encode(self, pixels):
        pooled = F.avg_pool2d(pixels, 8)
        mode = torch.einsum("rc,bchw->brhw", self.mix, pooled) + self.offset[None, :, None, None]
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: mode))


def test_a_fitted_projection_inverts_a_linear_vae_and_previews_with_it():
    vae = _LinearVae()
    fitted = fit_projection(vae)
    assert fitted.error < 0.5
    model = SimpleNamespace(arch="someone-elses", vae=vae, device=torch.device("cpu"), vae_dtype=torch.float32)
    picture = torch.rand((1, 3, 96, 128), generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        latents = vae.encode(picture).latent_dist.mode() * vae.config.scaling_factor
    image = LivePreviews(method="Approx cheap").image(model, latents, lambda _: pytest.fail("decoded"))
    expected = ((F.avg_pool2d(picture, 8)[0].permute(1, 2, 0) + 1) * 127.5).round().numpy()
    small = np.asarray(image.resize((16, 12), Image.Resampling.NEAREST), dtype=float)  # undo the stretch at block centres
    assert image.size == (128, 96) and np.abs(small - expected).max() <= 24  # bilinear stretch, sampled near block centres
    assert np.abs(np.asarray(approximate(latents, fitted), dtype=float) - expected).max() <= 1


def test_the_demo_vae_fits_no_projection_so_its_previews_are_full_decodes(demo_model, caplog):
    """Measured: the best linear fit to the demo VAE is ~33/255 off on its own fitting pictures
    (~60/255 on the sampler's latents): Approx cheap shows the real picture instead, and says so once."""
    assert fit_projection(demo_model.vae).error > MAX_FIT_ERROR
    live = LivePreviews(method="Approx cheap")
    full = _full(demo_model)
    latents = _latents(2)
    with caplog.at_level(logging.WARNING, logger=previews.__name__), torch.inference_mode():
        first = live.image(demo_model, latents, full)
        live.image(demo_model, latents, full)
        assert np.array_equal(np.asarray(first), np.asarray(full(latents)))
    assert len([r for r in caplog.records if "no linear colour projection fits the demo-shapes VAE" in r.getMessage()]) == 1


@pytest.mark.parametrize("layout", ["a1111-pth", "diffusers-safetensors"])
def test_taesd_from_models_vae_approx_decodes_as_diffusers_autoencodertiny(demo_model, tmp_path, layout):
    taesd = _random_taesd()
    if layout == "a1111-pth":
        _save_a1111_layout(taesd, tmp_path / "taesdxl_decoder.pth")
    else:
        from safetensors.torch import save_file

        save_file(taesd.state_dict(), str(tmp_path / "taesdxl_decoder.safetensors"))  # a whole AutoencoderTiny, renamed
    latents = _latents(4)
    with torch.inference_mode():
        image = LivePreviews(tmp_path, "TAESD").image(_as_family(demo_model, "sdxl"), latents, lambda _: pytest.fail("decoded"))
        expected = previews.to_picture(taesd.decode(latents).sample)
    assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_missing_taesd_falls_back_to_approx_cheap_with_one_log_line(demo_model, tmp_path, caplog):
    sd1 = _as_family(demo_model, "sd1")
    live = LivePreviews(tmp_path / "VAE-approx", "TAESD")
    latents = _latents(5)
    with caplog.at_level(logging.WARNING, logger=previews.__name__), torch.inference_mode():
        shown = [live.image(sd1, latents, lambda _: pytest.fail("decoded")) for _ in range(3)]
    expected = approximate(latents, FAMILY_PROJECTIONS["sd1"], (128, 96))
    assert all(np.array_equal(np.asarray(im), np.asarray(expected)) for im in shown)
    told = [r.getMessage() for r in caplog.records if "No TAESD decoder" in r.getMessage()]
    assert len(told) == 1 and "taesd_decoder.pth" in told[0]


def test_unusable_taesd_files_are_named_and_fall_back(demo_model, tmp_path, caplog):
    folder = tmp_path / "VAE-approx"
    folder.mkdir()
    garbage = folder / "taesd_decoder.pth"
    garbage.write_bytes(b"not a pickle at all" * 10)
    with pytest.raises(ValueError, match="taesd_decoder.pth could not be read"):
        load_taesd_decoder(garbage)
    torch.save({"1.weight": torch.zeros(3)}, garbage)  # tensors, but not a decoder's
    with pytest.raises(ValueError, match="does not fit a TAESD decoder"):
        load_taesd_decoder(garbage)
    torch.save({"1.weight": SimpleNamespace(a=1)}, garbage)  # needs more than tensors to unpickle
    with pytest.raises(ValueError, match="could not be read"):
        load_taesd_decoder(garbage)
    with caplog.at_level(logging.WARNING, logger=previews.__name__), torch.inference_mode():
        image = LivePreviews(folder, "TAESD").image(_as_family(demo_model, "sd1"), _latents(), lambda _: pytest.fail("decoded"))
    assert image.size == (128, 96) and any("taesd_decoder.pth" in r.getMessage() for r in caplog.records)


def test_approx_nn_an_a1111_config_value_draws_as_approx_cheap(demo_model):
    latents = _latents(6)
    sd1 = _as_family(demo_model, "sd1")
    nn_image = LivePreviews(method="Approx NN").image(sd1, latents, lambda _: pytest.fail("decoded"))
    cheap = LivePreviews(method="Approx cheap").image(sd1, latents, lambda _: pytest.fail("decoded"))
    assert np.array_equal(np.asarray(nn_image), np.asarray(cheap))
