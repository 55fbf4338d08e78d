"""External VAE files: finding the one a setting means, and swapping it into a loaded model.

VAE files are made from the tiny model's own VAE with perturbed weights, written in the LDM
layout A1111 users have (via our converter, under `first_stage_model.`, with extras) and in
diffusers' layout; decoding fixed latents shows which VAE is in use.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from modules.models.catalog import HashCache
from modules.models.ldm_keys import vae_to_ldm
from modules.models.loader import load_checkpoint
from modules.models.tiny import build_components
from modules.models.vae import VaeLibrary, VaeSwitch

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model(tiny_checkpoint, configs_dir):
    """Our own instance: these tests swap its VAE."""
    return load_checkpoint(tiny_checkpoint, configs_dir=configs_dir, device=CPU, dtype=torch.float32, vae_dtype=torch.float32)


@pytest.fixture(scope="module")
def latents() -> torch.Tensor:
    return torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))  # 32 px: enough to tell VAEs apart


@pytest.fixture(scope="module")
def perturbed(configs_dir) -> AutoencoderKL:
    """The tiny VAE with every weight moved: decodes visibly differently."""
    vae = build_components(configs_dir)[1]
    generator = torch.Generator().manual_seed(42)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    return vae


@torch.no_grad()
def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    return vae.decode(latents.to(vae.dtype), return_dict=False)[0].float()


def ldm_state(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    """The VAE as an A1111 VAE file has it: LDM names, checkpoint prefix, training leftovers."""
    state = {"first_stage_model." + k: v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()}
    state["model_ema.decay"] = torch.tensor(0.9999)
    state["loss.logvar"] = torch.zeros(())
    return state


@pytest.fixture(scope="module")
def vae_files(tmp_path_factory, perturbed) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("VAE")
    ldm = d / "ldm-style.safetensors"
    save_file(ldm_state(perturbed), str(ldm))
    diffusers = d / "diffusers-style.safetensors"
    save_file({k: v.contiguous() for k, v in perturbed.state_dict().items()}, str(diffusers))
    ckpt = d / "pickled.ckpt"  # a Lightning-style .ckpt: LDM names without prefix under "state_dict"
    prefix = "first_stage_model."
    torch.save({"state_dict": {k[len(prefix) :]: v for k, v in ldm_state(perturbed).items() if k.startswith(prefix)}}, ckpt)
    old_names = d / "old-diffusers.safetensors"  # diffusers before 0.14 named the attention layers differently
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    state = {}
    for k, v in perturbed.state_dict().items():
        for new, old in renames.items():
            k = k.replace(new, old)
        state[k] = v.contiguous()
    save_file(state, str(old_names))
    return {"ldm": ldm, "diffusers": diffusers, "ckpt": ckpt, "old-diffusers": old_names}


@pytest.fixture
def switch(model):
    s = VaeSwitch(model)
    yield s
    s.apply(None)


@pytest.mark.parametrize("kind", ["ldm", "diffusers", "ckpt", "old-diffusers"])
def test_a_vae_file_changes_decoding_and_none_restores_it_bit_for_bit(switch, model, latents, perturbed, vae_files, kind):
    own = model.vae
    before = decode(model.vae, latents)
    switch.apply(vae_files[kind])
    assert switch.current == vae_files[kind].resolve()
    assert model.vae is not own and model.vae.dtype == model.vae_dtype and model.vae.device == model.device
    after = decode(model.vae, latents)
    assert (after - before).abs().max() > 0.01
    assert torch.equal(after, decode(perturbed, latents)), "the file's weights were not loaded exactly"
    assert model.vae.config.scaling_factor == own.config.scaling_factor

    switch.apply(None)
    assert model.vae is own and switch.current is None
    assert torch.equal(decode(model.vae, latents), before)


def test_applying_the_same_file_again_does_not_reload(switch, model, vae_files):
    switch.apply(vae_files["ldm"])
    loaded = model.vae
    switch.apply(vae_files["ldm"])
    assert model.vae is loaded
    switch.apply(vae_files["diffusers"])
    assert model.vae is not loaded
    switch.apply(None)
    switch.apply(None)  # nothing to restore: still fine


def test_the_vae_is_built_in_the_model_vae_dtype(model, latents, vae_files, perturbed):
    bf16_model = dataclasses.replace(model, vae_dtype=torch.bfloat16)
    own = bf16_model.vae
    s = VaeSwitch(bf16_model)
    s.apply(vae_files["diffusers"])
    assert bf16_model.vae.dtype == torch.bfloat16
    assert torch.equal(next(bf16_model.vae.parameters()), next(perturbed.parameters()).bfloat16())
    s.apply(None)
    assert bf16_model.vae is own


def test_a_vae_that_does_not_fit_raises_and_leaves_decoding_alone(switch, model, latents, tmp_path, perturbed):
    before = decode(model.vae, latents)
    torch.manual_seed(0)
    wide = AutoencoderKL.from_config({**dict(perturbed.config), "block_out_channels": [64, 64, 64, 64]})
    save_file(ldm_state(wide), str(tmp_path / "wide.safetensors"))
    with pytest.raises(ValueError, match=r"wide\.safetensors does not fit this model: .* has shape \[64"):
        switch.apply(tmp_path / "wide.safetensors")

    partial = {k: v for k, v in ldm_state(perturbed).items() if "decoder.up.0" not in k}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match=r"partial\.safetensors does not fit this model: it lacks \d+ tensors"):
        switch.apply(tmp_path / "partial.safetensors")

    save_file({"emb_params": torch.zeros(1, 768)}, str(tmp_path / "embedding.safetensors"))
    with pytest.raises(ValueError, match="holds no VAE weights"):
        switch.apply(tmp_path / "embedding.safetensors")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pt cannot be read"):
        switch.apply(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="does not exist"):
        switch.apply(tmp_path / "missing.safetensors")

    assert switch.current is None
    assert torch.equal(decode(model.vae, latents), before)


def test_a_failed_switch_keeps_the_file_vae_that_was_in_use(switch, model, latents, tmp_path, vae_files):
    switch.apply(vae_files["ldm"])
    in_use = model.vae
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(ValueError, match="bad.safetensors"):
        switch.apply(tmp_path / "bad.safetensors")
    assert model.vae is in_use and switch.current == vae_files["ldm"].resolve()


# --------------------------------------------------------------------------- the library


@pytest.fixture
def model_dirs(tmp_path):
    """models/Stable-diffusion with two checkpoints, models/VAE with three files."""
    ckpts, vaes = tmp_path / "Stable-diffusion", tmp_path / "VAE"
    (vaes / "sub").mkdir(parents=True)
    ckpts.mkdir()
    for name in ("dreamy.safetensors", "plain.safetensors", "dreamy.vae.safetensors"):
        (ckpts / name).write_bytes(name.encode())
    for name in ("vae-ft-mse.safetensors", "sub/plain.pt", "anime.vae.ckpt", ".hidden.safetensors", "notes.txt", "big.safetensors.part"):
        (vaes / name).write_bytes(name.encode())
    return ckpts, vaes


def test_files_choices_and_describe(model_dirs, tmp_path):
    _, vaes = model_dirs
    lib = VaeLibrary((vaes,), HashCache(None))
    assert [p.name for p in lib.files] == ["anime.vae.ckpt", "plain.pt", "vae-ft-mse.safetensors"]
    assert lib.choices() == ["Automatic", "None", "anime.vae.ckpt", "plain.pt", "vae-ft-mse.safetensors"]
    assert lib.describe() == [{"model_name": p.name, "filename": str(p)} for p in lib.files]
    assert lib.find("vae-ft-mse.safetensors") == vaes / "vae-ft-mse.safetensors"
    assert lib.find("VAE-FT-MSE.safetensors") == vaes / "vae-ft-mse.safetensors"
    assert lib.find("sub/plain.pt") == vaes / "sub" / "plain.pt"
    assert lib.find("vae-ft-mse") == vaes / "vae-ft-mse.safetensors"
    assert lib.find("nothing") is None

    (vaes / "new.safetensors").write_bytes(b"new")
    assert "new.safetensors" not in lib.choices()
    lib.refresh()
    assert "new.safetensors" in lib.choices()


def test_resolve_none_a_file_name_and_unknown(model_dirs):
    ckpts, vaes = model_dirs
    lib = VaeLibrary((vaes,), HashCache(None))
    assert lib.resolve("None", ckpts / "dreamy.safetensors") is None
    assert lib.resolve("anime.vae.ckpt", ckpts / "dreamy.safetensors") == vaes / "anime.vae.ckpt"
    with pytest.raises(ValueError, match=r"VAE not found: 'missing.pt'. Available: Automatic, None, anime.vae.ckpt"):
        lib.resolve("missing.pt", None)


def test_automatic_prefers_the_file_beside_the_checkpoint_then_the_same_stem_in_the_vae_folder(model_dirs):
    ckpts, vaes = model_dirs
    lib = VaeLibrary((vaes,), HashCache(None))
    assert lib.resolve("Automatic", ckpts / "dreamy.safetensors") == ckpts / "dreamy.vae.safetensors"
    assert lib.resolve("Automatic", ckpts / "plain.safetensors") == vaes / "sub" / "plain.pt"
    (ckpts / "anime.ckpt").write_bytes(b"x")
    assert lib.resolve("Automatic", ckpts / "anime.ckpt") == vaes / "anime.vae.ckpt"
    (ckpts / "other.safetensors").write_bytes(b"x")
    assert lib.resolve("Automatic", ckpts / "other.safetensors") is None
    assert lib.resolve("Automatic", None) is None


def test_shorthash_is_the_first_10_hex_digits_of_the_sha256(model_dirs, tmp_path):
    _, vaes = model_dirs
    path = vaes / "vae-ft-mse.safetensors"
    lib = VaeLibrary((vaes,), HashCache(tmp_path / "cache.json", section="vae"))
    assert lib.shorthash(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    assert VaeLibrary((vaes,), HashCache(None, hashing=False)).shorthash(path) is None
