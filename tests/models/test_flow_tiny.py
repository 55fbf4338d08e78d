"""The tiny Flux / SD3 test files have the released key layouts: diffusers' own converters
read them back to the very tensors they were written from, and at full size our key maps
give exactly the keys and shapes diffusers' converters expect."""

from __future__ import annotations

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel
from diffusers.loaders import single_file_utils as sfu
from safetensors import safe_open
from safetensors.torch import load_file

from tests.models import flow_tiny


def _assert_same(module, expected: dict[str, torch.Tensor]) -> None:
    got = module.state_dict()
    assert sorted(got) == sorted(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v), k


def _keys(path) -> list[str]:
    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    made = {
        "flux-full": flow_tiny.write_flux(root / "flux1-dev-tiny.safetensors"),
        "flux-transformer": flow_tiny.write_flux(
            root / "flux1-schnell-tiny.safetensors", variant="schnell", layout="transformer"
        ),
        "flux-parts": flow_tiny.write_flux_parts(root / "text_encoder"),
        "sd35-medium": flow_tiny.write_sd3(root / "sd3.5_medium_tiny.safetensors", "sd35-medium"),
        "sd3-base": flow_tiny.write_sd3(root / "sd3_medium_tiny.safetensors", "sd3", layout="base"),
    }
    return root, made


@pytest.mark.parametrize("name,file", [("flux-full", "flux1-dev-tiny"), ("flux-transformer", "flux1-schnell-tiny")])
def test_flux_files_read_back_through_diffusers(files, name, file):
    root, made = files
    models = made[name]
    path = root / f"{file}.safetensors"
    keys = _keys(path)
    if name == "flux-full":
        assert {k.split(".")[0] for k in keys} == {"model", "text_encoders", "vae"}
        assert "model.diffusion_model.double_blocks.0.img_attn.qkv.weight" in keys
        assert "model.diffusion_model.guidance_in.in_layer.weight" in keys
        assert "text_encoders.t5xxl.transformer.shared.weight" in keys
    else:
        assert "single_blocks.1.linear1.weight" in keys and not any(k.startswith("model.") for k in keys)
        assert not any(k.startswith("guidance_in.") for k in keys)  # schnell has no guidance embedder
    checkpoint = load_file(str(path))
    with flow_tiny.tiny_flux_conversion():
        transformer = FluxTransformer2DModel.from_single_file(
            str(path), config=str(root / file), subfolder="transformer", local_files_only=True,
            torch_dtype=torch.bfloat16,
        )
    _assert_same(transformer, models["transformer"].state_dict())
    with pytest.raises(RuntimeError, match="split"):  # outside the block: the released width
        sfu.convert_flux_transformer_checkpoint_to_diffusers(dict(checkpoint))
    if name == "flux-full":
        config = models["vae"].config
        _assert_same(models["vae"], sfu.convert_ldm_vae_checkpoint(checkpoint, config))
        clip = sfu.convert_ldm_clip_checkpoint(checkpoint, flow_tiny.CLIP_L_PREFIX)
        clip = {k.removeprefix("text_model."): v for k, v in clip.items() if "position_ids" not in k}
        _assert_same(models["text_encoder"], clip)
        t5 = sfu.convert_sd3_t5_checkpoint_to_diffusers(checkpoint)
        module = flow_tiny.build_t5().to(torch.bfloat16)
        module.load_state_dict(t5)
        _assert_same(module, models["text_encoder_2"].state_dict())
        assert "encoder.embed_tokens.weight" in t5  # all-in-one files carry the tied copy


def test_flux_parts_hold_the_same_encoders_and_vae(files):
    root, made = files
    parts = made["flux-parts"]
    full = made["flux-full"]  # same seed: same encoders and VAE
    clip = load_file(str(root / "text_encoder" / "clip_l.safetensors"))
    assert clip.pop("text_projection.weight").shape == (flow_tiny.CLIP_L_WIDTH, flow_tiny.CLIP_L_WIDTH)
    _assert_same(full["text_encoder"], {k.removeprefix("text_model."): v for k, v in clip.items()})
    t5 = load_file(str(root / "text_encoder" / "t5xxl.safetensors"))
    assert "shared.weight" in t5 and "encoder.block.1.layer.1.DenseReluDense.wi_1.weight" in t5
    assert "encoder.embed_tokens.weight" not in t5  # transformers saves the tied embedding once
    for k, v in t5.items():
        assert torch.equal(v, full["text_encoder_2"].state_dict()[k]), k
    ae = root / "text_encoder" / "ae.safetensors"
    assert "decoder.up.0.block.0.conv1.weight" in _keys(ae)
    vae = AutoencoderKL.from_single_file(
        str(ae), config=str(root / "flux1-dev-tiny"), subfolder="vae", local_files_only=True,
        torch_dtype=torch.bfloat16,
    )
    _assert_same(vae, parts["vae"].state_dict())
    assert vae.config.scaling_factor == pytest.approx(0.3611) and vae.config.shift_factor == pytest.approx(0.1159)


@pytest.mark.parametrize("name,file", [("sd35-medium", "sd3.5_medium_tiny"), ("sd3-base", "sd3_medium_tiny")])
def test_sd3_files_load_with_diffusers_single_file(files, name, file):
    root, made = files
    models = made[name]
    path = root / f"{file}.safetensors"
    keys = _keys(path)
    prefixes = {"model", "first_stage_model"} | ({"text_encoders"} if name == "sd35-medium" else set())
    assert {k.split(".")[0] for k in keys} == prefixes
    common = dict(config=str(root / file), local_files_only=True, torch_dtype=torch.float16)
    transformer = SD3Transformer2DModel.from_single_file(str(path), subfolder="transformer", **common)
    _assert_same(transformer, models["transformer"].state_dict())
    vae = AutoencoderKL.from_single_file(str(path), subfolder="vae", **common)
    _assert_same(vae, models["vae"].state_dict())
    if name == "sd35-medium":
        assert "model.diffusion_model.joint_blocks.0.x_block.attn2.qkv.weight" in keys
        assert "model.diffusion_model.joint_blocks.0.x_block.attn.ln_q.weight" in keys
        checkpoint = load_file(str(path))
        for prefix, slot in ((flow_tiny.CLIP_L_PREFIX, "text_encoder"), (flow_tiny.CLIP_G_PREFIX, "text_encoder_2")):
            clip = sfu.convert_ldm_clip_checkpoint(checkpoint, prefix)
            clip = {k: v for k, v in clip.items() if "position_ids" not in k}
            _assert_same(models[slot], clip)
    else:
        assert not any(".ln_q." in k or ".attn2." in k for k in keys)


def _meta_roundtrip(model, to_released, to_diffusers, state=None) -> None:
    state = state or model.state_dict()
    expected = {k: tuple(v.shape) for k, v in state.items()}
    back = to_diffusers(to_released(state))
    assert {k: tuple(v.shape) for k, v in back.items()} == expected


@pytest.mark.parametrize("guidance", [True, False])
def test_flux_key_map_matches_diffusers_at_released_size(guidance):
    with init_empty_weights():
        model = FluxTransformer2DModel(guidance_embeds=guidance)  # FLUX.1's own config values
    bfl = flow_tiny.flux_to_bfl(model.state_dict())
    assert len(bfl) == (780 if guidance else 776)  # flux1-dev.safetensors holds 780 tensors
    _meta_roundtrip(model, flow_tiny.flux_to_bfl, sfu.convert_flux_transformer_checkpoint_to_diffusers)


@pytest.mark.parametrize(
    "config",
    [
        dict(num_layers=24, attention_head_dim=64, num_attention_heads=24, caption_projection_dim=1536,
             pos_embed_max_size=192),  # SD3 medium
        dict(num_layers=24, attention_head_dim=64, num_attention_heads=24, caption_projection_dim=1536,
             pos_embed_max_size=384, qk_norm="rms_norm", dual_attention_layers=tuple(range(13))),  # 3.5 medium
    ],
)
def test_sd3_key_map_matches_diffusers_at_released_size(config):
    config = dict(config)
    size = config.pop("pos_embed_max_size")
    with init_empty_weights():  # a small pos_embed table: computing the released one takes seconds
        model = SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, joint_attention_dim=4096,
                                      pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=8, **config)
    state = dict(model.state_dict())
    state["pos_embed.pos_embed"] = torch.empty((1, size * size, 1536), device="meta")
    _meta_roundtrip(model, flow_tiny.sd3_to_sai, sfu.convert_sd3_transformer_checkpoint_to_diffusers, state)
    released = {flow_tiny.TRANSFORMER_PREFIX + k: v for k, v in flow_tiny.sd3_to_sai(state).items()}
    assert sfu.infer_diffusers_model_type(released) == ("sd35_medium" if "qk_norm" in config else "sd3")


def test_tiny_t5_tokenizer_loads_offline(tmp_path):
    from transformers import T5TokenizerFast

    tokenizer = T5TokenizerFast.from_pretrained(flow_tiny.tiny_t5_tokenizer(tmp_path / "t5"))
    ids = tokenizer("a red cat, 42").input_ids
    assert ids[-1] == tokenizer.eos_token_id == 1 and tokenizer.pad_token_id == 0
    assert tokenizer.unk_token_id not in ids and max(ids) < flow_tiny.T5_VOCAB
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a red cat, 42"


def test_all_in_one_files_load_as_diffusers_pipelines(files):
    """What a loader gets from diffusers' pipeline-level single-file loading: every part of
    the Comfy/Forge Flux file and of SAI's SD 3.5 file, tensor for tensor."""
    from diffusers import FluxPipeline, StableDiffusion3Pipeline
    from transformers import CLIPTokenizer, T5TokenizerFast

    root, made = files
    vocab = flow_tiny.REPO / "configs" / "clip-tokenizer"
    clip = CLIPTokenizer(str(vocab / "vocab.json"), str(vocab / "merges.txt"), model_max_length=77)
    cases = (
        (FluxPipeline, "flux1-dev-tiny", made["flux-full"], torch.bfloat16, {"tokenizer_2": "tokenizer_2"}),
        (StableDiffusion3Pipeline, "sd3.5_medium_tiny", made["sd35-medium"], torch.float16,
         {"tokenizer_2": None, "tokenizer_3": "tokenizer_3"}),
    )
    for cls, stem, models, dtype, tokenizers in cases:
        kwargs = {name: T5TokenizerFast.from_pretrained(root / stem / sub) if sub else clip
                  for name, sub in tokenizers.items()}
        with flow_tiny.tiny_flux_conversion():
            pipe = cls.from_single_file(str(root / f"{stem}.safetensors"), config=str(root / stem),
                                        local_files_only=True, torch_dtype=dtype, tokenizer=clip, **kwargs)
        for name, module in models.items():
            _assert_same(getattr(pipe, name), module.state_dict())
