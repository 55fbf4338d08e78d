"""Loading A1111 single files and diffusers folders offline, checked weight by weight.

Models are built from small configs with fixed seeds, written in the LDM layout by our
own converter, read back through diffusers' single-file loader, and compared with
torch.equal against the originals. One test does the same at full SD 1.5 size.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from modules.models.arch import detect_architecture, read_checkpoint_shapes
from modules.models.ldm_keys import ldm_meta_state_dict, to_ldm_state_dict, write_random_safetensors
from modules.models.loader import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
F32 = torch.float32

SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}
VAE = {
    "block_out_channels": [32, 32, 32, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 64,
}
SD1_UNET = {
    "block_out_channels": [32, 64, 64, 64],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "layers_per_block": 2,
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "sample_size": 8,
}
SD2_UNET = {
    "block_out_channels": [32, 64, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 2,
    "cross_attention_dim": 64,
    "attention_head_dim": [2, 4, 4],
    "use_linear_projection": True,
    "upcast_attention": True,
    "sample_size": 8,
}
SDXL_UNET = {
    "block_out_channels": [32, 64],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2],
    "attention_head_dim": [2, 4],
    "cross_attention_dim": 32 + 48,  # CLIP-L width + bigG width, concatenated
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 40 + 6 * 8,  # pooled bigG projection + 6 time ids
    "sample_size": 8,
}


def clip_config(hidden: int, act: str, layers: int = 2, projection: int | None = None) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection or hidden,
    )


def build_models(arch: str, seed: int = 0) -> dict:
    """Seeded diffusers/transformers modules in the given architecture's real layout."""
    torch.manual_seed(seed)
    unet_config = {"sd1": SD1_UNET, "tiny-sd1": SD1_UNET, "sd2": SD2_UNET, "sdxl": SDXL_UNET}[arch]
    models = {"unet": UNet2DConditionModel(**unet_config), "vae": AutoencoderKL(**VAE)}
    if arch == "tiny-sd1":
        models["text_encoder"] = CLIPTextModel(clip_config(32, "quick_gelu"))
    elif arch == "sd2":
        models["text_encoder"] = CLIPTextModel(clip_config(64, "gelu"))
    else:
        models["text_encoder"] = CLIPTextModel(clip_config(32, "quick_gelu"))
        # bigG: its projection differs from its width, so a missing transpose would show.
        models["text_encoder_2"] = CLIPTextModelWithProjection(clip_config(48, "gelu", projection=40))
    for m in models.values():
        m.eval()
    return models


def write_config_folder(folder: Path, arch: str, models: dict, prediction_type: str = "epsilon") -> Path:
    """A config-only diffusers folder (no weights, no tokenizer files) matching ``models``."""
    folder.mkdir(parents=True, exist_ok=True)
    sdxl = arch == "sdxl"
    index = {
        "_class_name": "StableDiffusionXLPipeline" if sdxl else "StableDiffusionPipeline",
        "scheduler": ["diffusers", "EulerDiscreteScheduler" if sdxl else "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if sdxl:
        index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
        index["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    (folder / "model_index.json").write_text(json.dumps(index))
    for name, module in models.items():
        if name.startswith("text_encoder"):
            module.config.save_pretrained(folder / name)
        else:
            module.save_config(folder / name)
    PNDMScheduler.from_config({**SCHEDULER, "prediction_type": prediction_type}).save_config(folder / "scheduler")
    return folder


@pytest.fixture
def configs_dir(tmp_path: Path) -> Path:
    """A configs/ folder of the test's own, sharing the repo's tokenizer vocab."""
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "clip-tokenizer").symlink_to(REPO / "configs" / "clip-tokenizer")
    return configs


@pytest.fixture(scope="module")
def tiny() -> dict:
    return build_models("tiny-sd1")


def save_single_file(path: Path, state_dict: dict) -> Path:
    if path.suffix == ".ckpt":
        torch.save({"state_dict": state_dict, "global_step": 0}, path)
    else:
        save_file(state_dict, path)
    return path


def assert_same_weights(original: torch.nn.Module, loaded: torch.nn.Module, dtype=None) -> None:
    expected, actual = original.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        value = value.to(dtype) if dtype is not None and value.is_floating_point() else value
        assert actual[key].dtype == value.dtype, key
        assert torch.equal(actual[key], value), key


def assert_model_equal(models: dict, loaded) -> None:
    for name, original in models.items():
        assert_same_weights(original, getattr(loaded, name))


def render(unet, vae, text_encoder, tokenizer) -> torch.Tensor:
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(1)
    out = pipe("a photo of a cat", height=64, width=64, num_inference_steps=2, generator=generator, output_type="pt")
    return out.images


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_tiny_sd1_round_trip(tmp_path, configs_dir, tiny, suffix):
    write_config_folder(configs_dir / "tiny-sd1", "tiny-sd1", tiny)
    path = save_single_file(tmp_path / f"tiny{suffix}", to_ldm_state_dict("tiny-sd1", **tiny))

    assert detect_architecture(read_checkpoint_shapes(path)) == "tiny-sd1"
    loaded = load_checkpoint(path, configs_dir=configs_dir, device=CPU, dtype=F32, vae_dtype=F32)

    assert loaded.arch == "tiny-sd1" and not loaded.is_sdxl
    assert loaded.source == path
    assert loaded.extra["config_source"] == "detected"
    assert_model_equal(tiny, loaded)
    assert loaded.prediction_type == "epsilon"
    assert loaded.scheduler_config["beta_schedule"] == "scaled_linear"
    assert loaded.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert loaded.tokenizer.pad_token == "<|endoftext|>"

    expected = render(tiny["unet"], tiny["vae"], tiny["text_encoder"], loaded.tokenizer)
    actual = render(loaded.unet, loaded.vae, loaded.text_encoder, loaded.tokenizer)
    assert expected.shape == (1, 3, 64, 64)
    # Same weights (checked above), so the same picture; not bit for bit: with one thread the
    # loaded copy's memory layout can pick another kernel path, a difference of float rounding
    assert (actual - expected).abs().max() < 1e-5


def test_fp16_file_mixed_dtypes(tmp_path, configs_dir, tiny):
    """fp16 on disk, bf16 UNet/text encoder and fp32 VAE in memory: each cast exactly once."""
    write_config_folder(configs_dir / "tiny-sd1", "tiny-sd1", tiny)
    ldm = {k: v.half() if v.is_floating_point() else v for k, v in to_ldm_state_dict("tiny-sd1", **tiny).items()}
    path = save_single_file(tmp_path / "tiny-fp16.safetensors", ldm)

    loaded = load_checkpoint(path, configs_dir=configs_dir, device=CPU, dtype=torch.bfloat16, vae_dtype=F32)

    assert loaded.dtype == torch.bfloat16 and loaded.vae_dtype == F32
    for name in ("unet", "text_encoder"):
        for key, value in tiny[name].state_dict().items():
            got = getattr(loaded, name).state_dict()[key]
            assert got.dtype == torch.bfloat16
            assert torch.equal(got, value.half().to(torch.bfloat16)), key
    for key, value in tiny["vae"].state_dict().items():
        got = loaded.vae.state_dict()[key]
        assert got.dtype == F32
        assert torch.equal(got, value.half().float()), key


def test_sd2_round_trip_with_side_car_folder(tmp_path, configs_dir):
    models = build_models("sd2", seed=2)
    ldm = to_ldm_state_dict("sd2", **models)
    path = save_single_file(tmp_path / "sd2-small.safetensors", ldm)
    write_config_folder(tmp_path / "sd2-small", "sd2", models, prediction_type="v_prediction")

    # The real SD2 layout: OpenCLIP names, one resblock more than diffusers uses.
    prefix = "cond_stage_model.model."
    assert ldm[prefix + "transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * 64, 64)
    assert prefix + "transformer.resblocks.2.mlp.c_proj.bias" in ldm
    assert prefix + "transformer.resblocks.3.ln_1.weight" not in ldm
    assert ldm[prefix + "text_projection"].shape == (64, 64)
    assert ldm["model.diffusion_model.input_blocks.1.1.proj_in.weight"].ndim == 2  # linear projection
    assert detect_architecture(read_checkpoint_shapes(path)) == "sd2"

    loaded = load_checkpoint(path, configs_dir=configs_dir, device=CPU, dtype=F32, vae_dtype=F32)

    assert loaded.arch == "sd2"
    assert loaded.extra["config_source"] == "side-car folder"
    assert loaded.prediction_type == "v_prediction"
    assert loaded.tokenizer.pad_token == "!" and loaded.tokenizer.pad_token_id == 0
    assert_model_equal(models, loaded)


def test_sdxl_round_trip_with_side_car_folder(tmp_path, configs_dir):
    models = build_models("sdxl", seed=3)
    ldm = to_ldm_state_dict("sdxl", **models)
    path = save_single_file(tmp_path / "xl-small.ckpt", ldm)
    write_config_folder(tmp_path / "xl-small", "sdxl", models)

    bigg = "conditioner.embedders.1.model."
    # OpenCLIP multiplies x @ text_projection, so it is stored [width, projection].
    assert torch.equal(ldm[bigg + "text_projection"], models["text_encoder_2"].text_projection.weight.T)
    assert ldm[bigg + "text_projection"].shape == (48, 40)
    assert "conditioner.embedders.0.transformer.text_model.embeddings.position_ids" in ldm
    assert ldm["model.diffusion_model.label_emb.0.0.weight"].shape == (4 * 32, 88)  # time_embed_dim x (40 + 6 * 8)
    assert "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight" in ldm
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in ldm  # upsampler after attention
    assert "betas" not in ldm
    assert detect_architecture(read_checkpoint_shapes(path)) == "sdxl"

    loaded = load_checkpoint(path, configs_dir=configs_dir, device=CPU, dtype=F32, vae_dtype=F32)

    assert loaded.arch == "sdxl" and loaded.is_sdxl
    assert_model_equal(models, loaded)
    assert loaded.tokenizer.pad_token == "<|endoftext|>"
    assert loaded.tokenizer_2.pad_token == "!"
    assert loaded.extra["force_zeros_for_empty_prompt"] is True


def test_diffusers_folder(tmp_path, configs_dir, tiny):
    pipe = StableDiffusionPipeline(
        **tiny,
        tokenizer=None,
        scheduler=PNDMScheduler.from_config(SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(tmp_path / "tiny-diffusers")

    loaded = load_checkpoint(tmp_path / "tiny-diffusers", configs_dir=configs_dir, device=CPU, dtype=F32, vae_dtype=F32)

    assert loaded.arch == "tiny-sd1"
    assert loaded.extra["config_source"] == "diffusers folder"
    assert loaded.tokenizer.model_max_length == 77
    assert_model_equal(tiny, loaded)


# --------------------------------------------------------------------------- side-car yaml


def test_yaml_side_car(tmp_path, configs_dir, tiny):
    write_config_folder(configs_dir / "tiny-sd1", "tiny-sd1", tiny)
    write_config_folder(configs_dir / "other", "tiny-sd1", tiny)
    path = save_single_file(tmp_path / "m.safetensors", to_ldm_state_dict("tiny-sd1", **tiny))
    load = lambda: load_checkpoint(path, configs_dir=configs_dir, device=CPU, dtype=F32, vae_dtype=F32)  # noqa: E731

    (tmp_path / "m.yaml").write_text('parameterization: "v"\ndiffusers_config: other\n')
    loaded = load()
    assert loaded.prediction_type == "v_prediction"
    assert loaded.extra["config_folder"] == configs_dir / "other"
    assert loaded.extra["config_source"] == "yaml"

    # An A1111/LDM-style yaml without parameterization means epsilon, as in LDM.
    (tmp_path / "m.yaml").write_text("model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params: {}\n")
    (configs_dir / "tiny-sd1" / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({**SCHEDULER, "_class_name": "PNDMScheduler", "prediction_type": "v_prediction"})
    )
    assert load().prediction_type == "epsilon"

    # A side-car folder wins over the yaml.
    write_config_folder(tmp_path / "m", "tiny-sd1", tiny, prediction_type="v_prediction")
    loaded = load()
    assert loaded.extra["config_source"] == "side-car folder"
    assert loaded.prediction_type == "v_prediction"

    (tmp_path / "m.yaml").write_text("diffusers_config: ../elsewhere\n")
    (tmp_path / "m" / "model_index.json").unlink()
    with pytest.raises(ValueError, match="diffusers_config must be a folder name"):
        load()


# --------------------------------------------------------------------------- errors


def test_errors_are_readable(tmp_path, configs_dir, tiny):
    load = lambda p: load_checkpoint(p, configs_dir=configs_dir, device=CPU, dtype=F32, vae_dtype=F32)  # noqa: E731
    write_config_folder(configs_dir / "tiny-sd1", "tiny-sd1", tiny)

    with pytest.raises(ValueError, match=r"Could not load checkpoint .*missing\.safetensors: file does not exist"):
        load(tmp_path / "missing.safetensors")

    foreign = tmp_path / "foreign.safetensors"
    save_file({"encoder.weight": torch.randn(4, 4), "decoder.bias": torch.randn(4)}, foreign)
    with pytest.raises(ValueError, match="Could not load checkpoint .*: not a Stable Diffusion checkpoint"):
        load(foreign)

    good = save_single_file(tmp_path / "good.safetensors", to_ldm_state_dict("tiny-sd1", **tiny))
    for name, cut in (("truncated.safetensors", 0.5), ("header-only.safetensors", 0.0001)):
        data = good.read_bytes()
        (tmp_path / name).write_bytes(data[: int(len(data) * cut)])
        with pytest.raises(ValueError, match="file is truncated or not a safetensors file"):
            load(tmp_path / name)

    text = tmp_path / "notes.safetensors"
    text.write_text("hello, this is not a model")
    with pytest.raises(ValueError, match="truncated or not a safetensors file"):
        load(text)

    ckpt = save_single_file(tmp_path / "good.ckpt", to_ldm_state_dict("tiny-sd1", **tiny))
    data = ckpt.read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not a PyTorch checkpoint"):
        load(tmp_path / "truncated.ckpt")

    torch.save({"state_dict": {}, "callback": socket.AddressFamily}, tmp_path / "pickled.ckpt")
    with pytest.raises(ValueError, match="only weights-only checkpoints are loaded"):
        load(tmp_path / "pickled.ckpt")

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type"):
        load(tmp_path / "notes.txt")

    # Right layout, wrong sizes: the tiny file against a config of other widths.
    bigger = build_models("sd2", seed=5)
    write_config_folder(configs_dir / "wide", "sd2", bigger)
    (tmp_path / "good.yaml").write_text("diffusers_config: wide\n")
    mismatch = r"does not fit the tiny-sd1 config in .*wide: model\.diffusion_model\.\S+ has shape"
    with pytest.raises(ValueError, match=mismatch):
        load(good)
    (tmp_path / "good.yaml").write_text("diffusers_config: nowhere\n")
    with pytest.raises(ValueError, match="no config folder for this tiny-sd1 checkpoint"):
        load(good)

    # A file missing one tensor must not load with that weight left uninitialised.
    partial = to_ldm_state_dict("tiny-sd1", **tiny)
    del partial["model.diffusion_model.out.2.bias"]
    path = save_single_file(tmp_path / "partial.safetensors", partial)
    with pytest.raises(ValueError, match=r"lacks 1 of the tensors .* \(e\.g\. model\.diffusion_model\.out\.2\.bias\)"):
        load(path)

    with pytest.raises(ValueError, match="model_index.json"):
        load(tmp_path)


def test_no_network_needed(tmp_path, configs_dir, tiny, monkeypatch):
    """With sockets disabled the whole load still works: nothing reaches for the hub."""
    write_config_folder(configs_dir / "tiny-sd1", "tiny-sd1", tiny)
    path = save_single_file(tmp_path / "offline.safetensors", to_ldm_state_dict("tiny-sd1", **tiny))

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)

    loaded = load_checkpoint(path, configs_dir=configs_dir, device=CPU, dtype=F32, vae_dtype=F32)
    assert_model_equal(tiny, loaded)


# --------------------------------------------------------------------------- full size


@pytest.mark.slow
def test_full_size_sd15_file(tmp_path):
    """A 2 GB fp16 file with exactly the key names and shapes of v1-5-pruned-emaonly."""
    configs = REPO / "configs"
    tensors = ldm_meta_state_dict("sd1", configs / "sd1")
    prefixes = {"model.diffusion_model.": 686, "first_stage_model.": 248, "cond_stage_model.transformer.": 197}
    for prefix, count in prefixes.items():
        assert sum(k.startswith(prefix) for k in tensors) == count, prefix
    assert len(tensors) == sum(prefixes.values()) + 14  # 12 DDPM buffers + model_ema.{decay,num_updates}

    path = tmp_path / "v1-5-random-fp16.safetensors"
    try:
        write_random_safetensors(path, tensors, dtype=torch.float16, seed=0)
        assert 2.0e9 < path.stat().st_size < 2.2e9
        assert detect_architecture(read_checkpoint_shapes(path)) == "sd1"

        loaded = load_checkpoint(path, configs_dir=configs, device=CPU, dtype=F32, vae_dtype=F32)

        assert loaded.arch == "sd1"
        assert tuple(loaded.unet.config.block_out_channels) == (320, 640, 1280, 1280)
        assert loaded.unet.conv_in.out_channels == 320
        assert loaded.unet.mid_block.resnets[0].conv1.out_channels == 1280
        assert loaded.text_encoder.config.hidden_size == 768
        assert loaded.vae.decoder.conv_in.out_channels == 512
        assert loaded.unet.dtype == F32 and loaded.vae.dtype == F32
        pairs = {
            "model.diffusion_model.input_blocks.0.0.weight": loaded.unet.conv_in.weight,
            "model.diffusion_model.output_blocks.5.2.conv.weight": loaded.unet.up_blocks[1].upsamplers[0].conv.weight,
            "model.diffusion_model.middle_block.1.proj_in.weight": loaded.unet.mid_block.attentions[0].proj_in.weight,
            "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (
                loaded.unet.down_blocks[1].resnets[0].conv_shortcut.weight
            ),
            "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (
                loaded.vae.decoder.up_blocks[3].resnets[0].conv_shortcut.weight
            ),
            "first_stage_model.encoder.mid.attn_1.q.weight": loaded.vae.encoder.mid_block.attentions[0].to_q.weight,
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (
                loaded.text_encoder.embeddings.token_embedding.weight
            ),
        }
        with safe_open(str(path), framework="pt") as f:
            for key, param in pairs.items():
                stored = f.get_tensor(key).float()
                assert torch.equal(param.detach(), stored.reshape(param.shape)), key
            assert torch.equal(
                f.get_tensor("cond_stage_model.transformer.text_model.embeddings.position_ids"),
                torch.arange(77).unsqueeze(0),
            )
    finally:
        path.unlink(missing_ok=True)  # pytest keeps old tmp dirs; don't keep 2 GB in them


def test_an_inpainting_checkpoint_loads_with_nine_input_channels(tiny_inpainting_model):
    """A 9-channel UNet (sd-v1-5-inpainting's layout) loads with its architecture's config."""
    assert tiny_inpainting_model.arch == "tiny-sd1"
    assert tiny_inpainting_model.unet.config.in_channels == 9
    assert tiny_inpainting_model.unet.conv_in.weight.shape[1] == 9
