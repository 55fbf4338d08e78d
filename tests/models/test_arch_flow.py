"""Flux.1 and SD 3/3.5 files are told apart by what they hold, at the released layouts
(tiny widths) and in every packaging users download: BFL's transformer alone, Comfy/Forge
all-in-one, SAI's files, GGUF quantizations; other families get a sentence naming them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
from safetensors.torch import load_file

from modules.models.arch import (
    SUPPORTED,
    detect_architecture,
    file_parts,
    read_checkpoint_shapes,
    text_encoder_file_kind,
)
from tests.models import flow_tiny

FLUX_DEV = "flux1-dev-tiny.safetensors"
FLUX_SCHNELL = "flux1-schnell-tiny.safetensors"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("arch")
    flow_tiny.write_flux(root / FLUX_DEV)
    flow_tiny.write_flux(root / FLUX_SCHNELL, variant="schnell", layout="transformer")
    flow_tiny.write_flux_parts(root / "text_encoder")
    for variant in flow_tiny.SD3_VARIANTS:
        flow_tiny.write_sd3(root / f"{variant}.safetensors", variant)
    flow_tiny.write_sd3(root / "sd35-large-base.safetensors", "sd35-large", layout="base")
    flow_tiny.write_sd3_parts(root / "sd3_text_encoders")
    return root


@pytest.mark.parametrize(
    "file,arch,parts",
    [
        (FLUX_DEV, "flux-dev", {"transformer", "clip_l", "t5xxl", "vae"}),  # Comfy/Forge all-in-one
        (FLUX_SCHNELL, "flux-schnell", {"transformer"}),  # BFL's release
        ("sd3.safetensors", "sd3", {"transformer", "clip_l", "clip_g", "t5xxl", "vae"}),
        ("sd35-medium.safetensors", "sd35-medium", {"transformer", "clip_l", "clip_g", "t5xxl", "vae"}),
        ("sd35-large.safetensors", "sd35-large", {"transformer", "clip_l", "clip_g", "t5xxl", "vae"}),
        ("sd35-large-base.safetensors", "sd35-large", {"transformer", "vae"}),  # SAI's 3.5 release
    ],
)
def test_tiny_released_layouts_are_detected(root, file, arch, parts):
    shapes = read_checkpoint_shapes(root / file)
    assert detect_architecture(shapes) == arch
    assert file_parts(shapes) == parts


def test_gguf_transformer_is_read_and_detected(root):
    gguf = pytest.importorskip("gguf")
    checkpoint = load_file(str(root / FLUX_DEV))
    path = root / "flux1-dev-tiny-F16.gguf"
    writer = gguf.GGUFWriter(str(path), "flux")
    for key, tensor in checkpoint.items():
        if key.startswith(flow_tiny.TRANSFORMER_PREFIX):  # city96's files: the transformer, BFL's names
            writer.add_tensor(key.removeprefix(flow_tiny.TRANSFORMER_PREFIX), tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    shapes = read_checkpoint_shapes(path)
    expected = {k.removeprefix(flow_tiny.TRANSFORMER_PREFIX): tuple(v.shape) for k, v in checkpoint.items()
                if k.startswith(flow_tiny.TRANSFORMER_PREFIX)}
    assert shapes == expected  # torch order, not GGUF's innermost-first
    assert detect_architecture(shapes) == "flux-dev" and file_parts(shapes) == {"transformer"}
    # Quantized tensors are stored as blocks of bytes; the reader still gives their logical shape.
    from gguf.quants import quantize

    quantized = quantize(checkpoint[flow_tiny.TRANSFORMER_PREFIX + "img_in.weight"].float().numpy(),
                         gguf.GGMLQuantizationType.Q8_0)
    writer = gguf.GGUFWriter(str(root / "q8.gguf"), "flux")
    writer.add_tensor("img_in.weight", quantized, raw_shape=quantized.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert quantized.shape != expected["img_in.weight"]
    assert read_checkpoint_shapes(root / "q8.gguf") == {"img_in.weight": expected["img_in.weight"]}
    (root / "broken.gguf").write_bytes(b"GGUF\x03\x00")
    with pytest.raises(ValueError, match="broken.gguf: file is truncated or not a GGUF file"):
        read_checkpoint_shapes(root / "broken.gguf")


def test_released_sizes_are_detected_through_diffusers():
    with init_empty_weights():
        dev = FluxTransformer2DModel(guidance_embeds=True)  # FLUX.1's own config values
        schnell = FluxTransformer2DModel(guidance_embeds=False)
        large = SD3Transformer2DModel(  # SD 3.5 large: 38 layers of 2432, RMS q/k norms, no pos table needed
            num_layers=38, num_attention_heads=38, caption_projection_dim=2432, qk_norm="rms_norm",
            pooled_projection_dim=2048, joint_attention_dim=4096, pos_embed_max_size=4,
        )
    for model, arch in ((dev, "flux-dev"), (schnell, "flux-schnell")):
        bfl = {k: tuple(v.shape) for k, v in flow_tiny.flux_to_bfl(model.state_dict()).items()}
        assert detect_architecture(bfl) == arch
        assert detect_architecture({flow_tiny.TRANSFORMER_PREFIX + k: v for k, v in bfl.items()}) == arch
    sai = {k: tuple(v.shape) for k, v in flow_tiny.sd3_to_sai(large.state_dict()).items()}
    assert detect_architecture(sai) == "sd35-large"


def _flux_shapes(root, **changes):
    shapes = dict(read_checkpoint_shapes(root / FLUX_DEV))
    shapes.update(changes)
    return shapes


@pytest.mark.parametrize(
    "changes,name",
    [
        ({"model.diffusion_model.img_in.weight": (32, 384)}, "a Flux Fill (inpainting) model"),
        ({"model.diffusion_model.img_in.weight": (32, 128)}, "a Flux Depth model"),
        ({"model.diffusion_model.distilled_guidance_layer.in_proj.bias": (32,)}, "a Chroma model"),
        ({"control_model.time_embed.0.weight": (32, 32)}, "a ControlNet (put it in models/ControlNet)"),
        ({"edm_mean": (1, 4, 1, 1)}, "a Playground v2.5 model"),
    ],
)
def test_other_families_are_named(root, changes, name):
    if "control_model.time_embed.0.weight" in changes or "edm_mean" in changes:
        shapes = dict(changes)
        shapes["model.diffusion_model.input_blocks.0.0.weight"] = (320, 4, 3, 3)
        if "edm_mean" in changes:  # Playground v2.5 has SDXL's layout plus EDM statistics
            shapes["conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"] = (1280,)
    else:
        shapes = _flux_shapes(root, **changes)
    with pytest.raises(ValueError) as error:
        detect_architecture(shapes)
    assert str(error.value) == f"this file is {name}; {SUPPORTED}"


def test_part_files_are_recognised_and_pointed_to_their_folder(root):
    te = root / "text_encoder"
    assert text_encoder_file_kind(read_checkpoint_shapes(te / "clip_l.safetensors")) == ("clip", flow_tiny.CLIP_L_WIDTH)
    assert text_encoder_file_kind(read_checkpoint_shapes(te / "t5xxl.safetensors")) == ("t5xxl", flow_tiny.T5_WIDTH)
    clip_g = read_checkpoint_shapes(root / "sd3_text_encoders" / "clip_g.safetensors")
    assert text_encoder_file_kind(clip_g) == ("clip", flow_tiny.CLIP_G_WIDTH)
    assert file_parts(read_checkpoint_shapes(te / "ae.safetensors")) == {"vae"}
    with pytest.raises(ValueError, match="T5 text encoder file: put it in models/text_encoder"):
        detect_architecture(read_checkpoint_shapes(te / "t5xxl.safetensors"))
    with pytest.raises(ValueError, match="CLIP text encoder file: put it in models/text_encoder"):
        detect_architecture(clip_g)
    with pytest.raises(ValueError, match="VAE file: put it in models/VAE"):
        detect_architecture(read_checkpoint_shapes(te / "ae.safetensors"))
    with pytest.raises(ValueError, match="not a text encoder file"):
        text_encoder_file_kind(read_checkpoint_shapes(te / "ae.safetensors"))


def test_sd_files_report_their_parts():
    assert file_parts({
        "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
        "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
        "conditioner.embedders.1.model.positional_embedding": (77, 1280),
        "first_stage_model.decoder.conv_in.weight": (512, 4, 3, 3),
    }) == {"unet", "clip_l", "clip_g", "vae"}
    assert file_parts({"model.diffusion_model.out.2.weight": (4, 384, 3, 3),
                       "conditioner.embedders.0.model.text_projection": (1280, 1280)}) == {"unet", "clip_g"}


@pytest.mark.parametrize("arch", ["flux-dev", "flux-schnell", "sd3", "sd35-medium", "sd35-large"])
def test_config_folders_describe_the_released_models(arch):
    """configs/<arch>/ builds the released denoiser, whose file layout is detected as <arch>,
    and its parts fit together (text widths into the transformer, latent channels)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from transformers import AutoConfig

    folder = Path(__file__).resolve().parents[2] / "configs" / arch
    index = json.loads((folder / "model_index.json").read_text())
    flux = arch.startswith("flux")
    assert index["_class_name"] == ("FluxPipeline" if flux else "StableDiffusion3Pipeline")
    cls = FluxTransformer2DModel if flux else SD3Transformer2DModel
    with torch.device("meta"):  # no weights, and no positional table computed
        model = cls.from_config(cls.load_config(folder / "transformer"))
    to_released = flow_tiny.flux_to_bfl if flux else flow_tiny.sd3_to_sai
    shapes = {k: tuple(v.shape) for k, v in to_released(model.state_dict()).items()}
    assert detect_architecture(shapes) == arch

    encoders = {n: AutoConfig.from_pretrained(folder / n) for n in index if n.startswith("text_encoder")}
    t5 = encoders["text_encoder_2" if flux else "text_encoder_3"]
    assert (t5.model_type, t5.d_model, t5.vocab_size, t5.feed_forward_proj) == ("t5", 4096, 32128, "gated-gelu")
    assert model.config.joint_attention_dim == t5.d_model
    if flux:
        assert model.config.pooled_projection_dim == encoders["text_encoder"].hidden_size == 768
    else:
        pooled = encoders["text_encoder"].projection_dim + encoders["text_encoder_2"].projection_dim
        assert model.config.pooled_projection_dim == pooled == 2048
    vae = json.loads((folder / "vae" / "config.json").read_text())
    assert vae["latent_channels"] * (4 if flux else 1) == model.config.in_channels
    assert (vae["scaling_factor"], vae["shift_factor"]) == ((0.3611, 0.1159) if flux else (1.5305, 0.0609))
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler")
    assert scheduler.config.use_dynamic_shifting == (arch == "flux-dev")
    assert scheduler.config.shift == (1.0 if arch == "flux-schnell" else 3.0)
