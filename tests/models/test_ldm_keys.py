"""The diffusers -> LDM key converter, the shape map, the random-file writer, and
architecture detection, checked against exact A1111 key names and against diffusers'
own LDM -> diffusers conversion functions (the inverse of ours)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from modules.models.arch import detect_architecture, read_checkpoint_shapes, unet_in_channels
from modules.models.ldm_keys import (
    ddpm_buffers,
    ldm_required_shapes,
    ldm_shapes,
    open_clip_to_ldm,
    to_ldm_state_dict,
    unet_to_ldm,
    vae_to_ldm,
    write_random_safetensors,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DDPM_KEYS = {
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "model_ema.decay",
    "model_ema.num_updates",
}


@pytest.fixture(scope="module")
def sd1() -> dict[str, tuple[int, ...]]:
    return ldm_shapes("sd1", CONFIGS / "sd1")


@pytest.fixture(scope="module")
def sd2() -> dict[str, tuple[int, ...]]:
    return ldm_shapes("sd2", CONFIGS / "sd2")


@pytest.fixture(scope="module")
def sdxl() -> dict[str, tuple[int, ...]]:
    return ldm_shapes("sdxl", CONFIGS / "sdxl")


def count(shapes: dict, prefix: str) -> int:
    return sum(k.startswith(prefix) for k in shapes)


# --------------------------------------------------------------------------- real layouts


def test_sd15_layout(sd1):
    """Key names and shapes of A1111's v1-5-pruned-emaonly.safetensors."""
    assert count(sd1, "model.diffusion_model.") == 686
    assert count(sd1, "first_stage_model.") == 248
    assert count(sd1, "cond_stage_model.transformer.text_model.") == 197
    assert {k for k in sd1 if "." not in k or k.startswith("model_ema.")} == DDPM_KEYS
    assert len(sd1) == 686 + 248 + 197 + 14
    expected = {
        "model.diffusion_model.time_embed.0.weight": (1280, 320),
        "model.diffusion_model.time_embed.2.bias": (1280,),
        "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
        "model.diffusion_model.input_blocks.1.0.in_layers.0.weight": (320,),
        "model.diffusion_model.input_blocks.1.0.in_layers.2.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.1.0.emb_layers.1.weight": (320, 1280),
        "model.diffusion_model.input_blocks.1.0.out_layers.3.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight": (2560, 320),
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
        "model.diffusion_model.input_blocks.11.0.out_layers.3.bias": (1280,),
        "model.diffusion_model.middle_block.0.in_layers.2.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.middle_block.1.proj_in.weight": (1280, 1280, 1, 1),
        "model.diffusion_model.middle_block.2.emb_layers.1.bias": (1280,),
        "model.diffusion_model.output_blocks.0.0.skip_connection.weight": (1280, 2560, 1, 1),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        "model.diffusion_model.output_blocks.11.1.proj_out.weight": (320, 320, 1, 1),
        "model.diffusion_model.out.0.weight": (320,),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3),
        "first_stage_model.encoder.down.0.block.1.conv2.weight": (128, 128, 3, 3),
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "first_stage_model.encoder.down.2.downsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.encoder.mid.block_2.norm1.weight": (512,),
        "first_stage_model.encoder.mid.attn_1.norm.weight": (512,),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.encoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
        "first_stage_model.encoder.norm_out.weight": (512,),
        "first_stage_model.encoder.conv_out.weight": (8, 512, 3, 3),
        "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
        "first_stage_model.post_quant_conv.weight": (4, 4, 1, 1),
        "first_stage_model.decoder.conv_in.weight": (512, 4, 3, 3),
        "first_stage_model.decoder.mid.attn_1.v.bias": (512,),
        "first_stage_model.decoder.up.3.block.2.conv1.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.up.1.block.0.nin_shortcut.weight": (256, 512, 1, 1),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "first_stage_model.decoder.conv_out.weight": (3, 128, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": (1, 77),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
        "cond_stage_model.transformer.text_model.encoder.layers.11.self_attn.q_proj.weight": (768, 768),
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
        "cond_stage_model.transformer.text_model.final_layer_norm.bias": (768,),
        "betas": (1000,),
        "model_ema.decay": (),
    }
    assert {k: sd1.get(k) for k in expected} == expected
    assert "model.diffusion_model.input_blocks.12.0.in_layers.0.weight" not in sd1
    assert "model.diffusion_model.output_blocks.12.0.in_layers.0.weight" not in sd1
    assert "first_stage_model.encoder.down.3.downsample.conv.weight" not in sd1
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in sd1
    assert detect_architecture(sd1) == "sd1"


def test_sd2_layout(sd2):
    """v2-1_768-ema-pruned: OpenCLIP ViT-H with all 24 resblocks, linear proj_in/out."""
    assert count(sd2, "model.diffusion_model.") == 686
    assert count(sd2, "first_stage_model.") == 248
    assert count(sd2, "cond_stage_model.model.transformer.resblocks.") == 24 * 12
    expected = {
        "cond_stage_model.model.token_embedding.weight": (49408, 1024),
        "cond_stage_model.model.positional_embedding": (77, 1024),
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": (3072, 1024),
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias": (3072,),
        "cond_stage_model.model.transformer.resblocks.22.attn.out_proj.weight": (1024, 1024),
        "cond_stage_model.model.transformer.resblocks.23.mlp.c_fc.weight": (4096, 1024),
        "cond_stage_model.model.transformer.resblocks.23.mlp.c_proj.weight": (1024, 4096),
        "cond_stage_model.model.transformer.resblocks.23.ln_2.bias": (1024,),
        "cond_stage_model.model.ln_final.weight": (1024,),
        "cond_stage_model.model.text_projection": (1024, 1024),
        "cond_stage_model.model.logit_scale": (),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
        "model.diffusion_model.middle_block.1.proj_out.weight": (1280, 1280),
    }
    assert {k: sd2.get(k) for k in expected} == expected
    assert DDPM_KEYS <= sd2.keys()
    assert "cond_stage_model.model.transformer.resblocks.24.ln_1.weight" not in sd2
    assert detect_architecture(sd2) == "sd2"


def test_sdxl_layout(sdxl):
    """sd_xl_base_1.0: 2515 tensors, two embedders, label_emb, per-level transformer depth."""
    assert len(sdxl) == 2515
    assert count(sdxl, "model.diffusion_model.") == 1680
    assert count(sdxl, "first_stage_model.") == 248
    assert count(sdxl, "conditioner.embedders.0.transformer.text_model.") == 197
    assert count(sdxl, "conditioner.embedders.1.model.") == 32 * 12 + 6
    expected = {
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "model.diffusion_model.label_emb.0.2.weight": (1280, 1280),
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight": (640, 2048),
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.ff.net.2.weight": (1280, 5120),
        "model.diffusion_model.middle_block.1.transformer_blocks.9.norm3.bias": (1280,),
        "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.output_blocks.8.0.skip_connection.weight": (320, 640, 1, 1),
        "conditioner.embedders.0.transformer.text_model.embeddings.position_ids": (1, 77),
        "conditioner.embedders.1.model.positional_embedding": (77, 1280),
        "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
        "conditioner.embedders.1.model.text_projection": (1280, 1280),
        "conditioner.embedders.1.model.logit_scale": (),
    }
    assert {k: sdxl.get(k) for k in expected} == expected
    assert "model.diffusion_model.input_blocks.9.0.in_layers.0.weight" not in sdxl
    assert "model.diffusion_model.input_blocks.2.1.proj_in.weight" not in sdxl  # level 0 has no attention
    assert "conditioner.embedders.1.model.transformer.resblocks.32.ln_1.weight" not in sdxl
    assert not DDPM_KEYS & sdxl.keys()
    assert detect_architecture(sdxl) == "sdxl"


def test_required_shapes_leave_out_what_loaders_ignore(sd2):
    required = ldm_required_shapes("sd2", CONFIGS / "sd2")
    ignored = set(sd2) - set(required)
    assert ignored == DDPM_KEYS | {
        "cond_stage_model.model.text_projection",
        "cond_stage_model.model.logit_scale",
        *(k for k in sd2 if k.startswith("cond_stage_model.model.transformer.resblocks.23.")),
    }


def test_ddpm_buffers_follow_scaled_linear_schedule():
    b = ddpm_buffers()
    assert all(v.dtype == torch.float32 for k, v in b.items() if k != "model_ema.num_updates")
    assert b["model_ema.num_updates"].dtype == torch.int32
    assert math.isclose(b["betas"][0].item(), 0.00085, rel_tol=1e-6)
    assert math.isclose(b["betas"][-1].item(), 0.012, rel_tol=1e-6)
    assert b["alphas_cumprod_prev"][0].item() == 1.0
    assert torch.equal(b["alphas_cumprod_prev"][1:], b["alphas_cumprod"][:-1])
    assert b["posterior_variance"][0].item() == 0.0
    assert math.isclose(b["posterior_log_variance_clipped"][0].item(), math.log(1e-20), rel_tol=1e-6)
    # sqrt(1/a - 1) * sqrt(a) == sqrt(1 - a)
    lhs = b["sqrt_recipm1_alphas_cumprod"] * b["sqrt_alphas_cumprod"]
    assert torch.allclose(lhs, b["sqrt_one_minus_alphas_cumprod"], rtol=1e-5)
    # the schedule matches diffusers' scaled_linear betas
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert torch.allclose(scheduler.betas, b["betas"])


# --------------------------------------------------------------------------- against diffusers' inverse


def _clip(hidden, layers=2, projection=None):
    return CLIPTextConfig(
        vocab_size=1000, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=projection or hidden,
    )


UNET_VARIANTS = {
    "two-levels-one-layer": dict(
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=16, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ),
    "three-layers-deep-transformers": dict(
        block_out_channels=(32, 32, 64), layers_per_block=3, cross_attention_dim=16, attention_head_dim=4,
        transformer_layers_per_block=(1, 2, 3), use_linear_projection=True,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        addition_embed_type="text_time", addition_time_embed_dim=4, projection_class_embeddings_input_dim=40,
    ),
}


@pytest.mark.parametrize("variant", sorted(UNET_VARIANTS))
def test_unet_inverse_of_diffusers(variant):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET_VARIANTS[variant], sample_size=8)
    ldm = {"model.diffusion_model." + k: v for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()}
    back = convert_ldm_unet_checkpoint(ldm, dict(unet.config))
    original = unet.state_dict()
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)


def test_vae_inverse_of_diffusers():
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(32, 64, 64), layers_per_block=2, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    )
    ldm = {"first_stage_model." + k: v for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()}
    assert ldm["first_stage_model.decoder.mid.attn_1.k.weight"].shape == (64, 64, 1, 1)
    assert "first_stage_model.decoder.up.0.block.2.conv2.weight" in ldm
    back = convert_ldm_vae_checkpoint(ldm, dict(vae.config))
    original = vae.state_dict()
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)


def test_text_encoders_inverse_of_diffusers():
    torch.manual_seed(0)
    clip_l, big_g = CLIPTextModel(_clip(32)), CLIPTextModelWithProjection(_clip(48, layers=3, projection=24))

    sd1 = to_ldm_state_dict("tiny-sd1", UNet2DConditionModel(**UNET_VARIANTS["two-levels-one-layer"]),
                            AutoencoderKL(norm_num_groups=8, block_out_channels=(8,)), clip_l)
    back = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(sd1).items()}
    assert back.pop("embeddings.position_ids").tolist() == [list(range(77))]
    assert back.keys() == clip_l.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in clip_l.state_dict().items())

    prefix = "conditioner.embedders.1.model."
    ldm = open_clip_to_ldm(big_g.state_dict(), prefix)
    assert ldm[prefix + "transformer.resblocks.2.attn.in_proj_weight"].shape == (3 * 48, 48)
    back = convert_open_clip_checkpoint(big_g, ldm, prefix=prefix)
    assert back.keys() == big_g.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in big_g.state_dict().items())


def test_unknown_keys_are_an_error():
    with pytest.raises(ValueError, match="no LDM name for diffusers key 'mystery.weight'"):
        unet_to_ldm({"mystery.weight": torch.zeros(1)}, {"block_out_channels": [32], "layers_per_block": 1})


def test_sd2_extra_resblock_is_seeded():
    torch.manual_seed(0)
    te = CLIPTextModel(_clip(32))
    unet = UNet2DConditionModel(**UNET_VARIANTS["two-levels-one-layer"])
    vae = AutoencoderKL(norm_num_groups=8, block_out_channels=(8,))
    a = to_ldm_state_dict("sd2", unet, vae, te, seed=7)
    b = to_ldm_state_dict("sd2", unet, vae, te, seed=7)
    c = to_ldm_state_dict("sd2", unet, vae, te, seed=8)
    key = "cond_stage_model.model.transformer.resblocks.2.attn.in_proj_weight"
    assert a[key].shape == (96, 32)
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])
    assert "cond_stage_model.model.transformer.resblocks.3.ln_1.weight" not in a


# --------------------------------------------------------------------------- writer and detection


def test_write_random_safetensors(tmp_path):
    with torch.device("meta"):
        unet = UNet2DConditionModel(**UNET_VARIANTS["two-levels-one-layer"])
        vae = AutoencoderKL(norm_num_groups=8, block_out_channels=(8,))
        te = CLIPTextModel(_clip(32))
    tensors = to_ldm_state_dict("tiny-sd1", unet, vae, te)
    assert tensors["model.diffusion_model.out.2.weight"].is_meta and not tensors["betas"].is_meta
    path = tmp_path / "random.safetensors"
    write_random_safetensors(path, tensors, dtype=torch.float16, seed=3)
    write_random_safetensors(tmp_path / "again.safetensors", tensors, dtype=torch.float16, seed=3)
    assert path.read_bytes() == (tmp_path / "again.safetensors").read_bytes()

    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(tensors)
        for key, meta in tensors.items():
            t = f.get_tensor(key)
            assert t.shape == meta.shape, key
            assert t.dtype == (torch.float16 if meta.is_floating_point() else meta.dtype), key
        assert torch.equal(f.get_tensor("betas"), ddpm_buffers()["betas"].half())
        position_ids = f.get_tensor("cond_stage_model.transformer.text_model.embeddings.position_ids")
        assert position_ids.tolist() == [list(range(77))]
        weight = f.get_tensor("model.diffusion_model.input_blocks.1.1.proj_in.weight").float()
        assert not torch.equal(weight, f.get_tensor("model.diffusion_model.input_blocks.1.1.proj_out.weight").float())
        assert 0.01 < weight.std().item() < 0.03
    assert detect_architecture(read_checkpoint_shapes(path)) == "tiny-sd1"


def test_detection_errors(sd1):
    with pytest.raises(ValueError, match="not a Stable Diffusion checkpoint: no UNet weights"):
        detect_architecture({"encoder.weight": (4, 4)})
    with pytest.raises(ValueError, match="no text encoder"):
        detect_architecture({k: v for k, v in sd1.items() if not k.startswith("cond_stage_model.")})
    odd = dict(sd1, **{"cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 512)})
    with pytest.raises(ValueError, match="SD1-style text encoder of width 512"):
        detect_architecture(odd)
    refiner = {
        "model.diffusion_model.out.2.weight": (4, 384, 3, 3),
        "conditioner.embedders.0.model.text_projection": (1280, 1280),
    }
    assert detect_architecture(refiner) == "sdxl-refiner"  # its one embedder is OpenCLIP bigG
    # Inpainting UNets (9 input channels) are SD1 too; instruct-pix2pix's 8 are refused.
    inpaint = dict(sd1, **{"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)})
    assert unet_in_channels(inpaint) == 9
    assert detect_architecture(inpaint) == "sd1"
    pix2pix = dict(sd1, **{"model.diffusion_model.input_blocks.0.0.weight": (320, 8, 3, 3)})
    with pytest.raises(ValueError, match="8 input channels"):
        detect_architecture(pix2pix)


def test_read_shapes_of_ckpt_without_loading(tmp_path):
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": {"a": torch.zeros(2, 3), "b": torch.zeros(5)}, "global_step": 7}, path)
    assert read_checkpoint_shapes(path) == {"a": (2, 3), "b": (5,)}
    with pytest.raises(ValueError, match="file does not exist"):
        read_checkpoint_shapes(tmp_path / "nope.ckpt")
