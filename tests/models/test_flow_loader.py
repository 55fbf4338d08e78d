"""Flux.1 and SD 3/3.5 load from every layout users download (full single files, transformer-only
files with their parts in models/text_encoder + models/VAE, fp8 and GGUF transformers, diffusers
folders) to the very weights written, as diffusers loads them; what is missing is named."""

from __future__ import annotations

import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.models import flow_loader
from modules.models.flow_loader import PartFolders, load_flow_file
from modules.models.loader import build_tokenizer, load_checkpoint
from tests.models import flow_tiny

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CPU = torch.device("cpu")
MODULES = {"transformer": "unet", "text_encoder": "text_encoder", "text_encoder_2": "text_encoder_2",
           "text_encoder_3": "text_encoder_3", "vae": "vae"}


@pytest.fixture(scope="module", autouse=True)
def tiny_flux_split():
    """diffusers' Flux converter splits single blocks' linear1 at the released width (3072, 4x
    MLP); give it the same four-way split at the tiny width (2 heads x 16)."""
    from diffusers.loaders import single_file_utils as sfu

    inner = flow_tiny.FLUX["num_attention_heads"] * flow_tiny.FLUX["attention_head_dim"]
    real = torch.split

    def split(t, sizes, dim=0):
        if isinstance(sizes, tuple) and sizes == (3072, 3072, 3072, 12288):
            sizes = (inner, inner, inner, 4 * inner)
        return real(t, sizes, dim=dim)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sfu, "torch", types.SimpleNamespace(**{**vars(torch), "split": split}))
        yield


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("flow-models")


@pytest.fixture(scope="module")
def flux_full(root):
    path = root / "Stable-diffusion" / "flux1-dev-tiny.safetensors"
    return path, flow_tiny.write_flux(path, "dev", "full")


@pytest.fixture(scope="module")
def forge_parts(root):
    """models/text_encoder with clip_l + t5xxl, models/VAE with ae.safetensors (Forge's layout)."""
    text, vaes = root / "text_encoder", root / "VAE"
    made = flow_tiny.write_flux_parts(text)
    vaes.mkdir()
    shutil.move(text / "ae.safetensors", vaes / "ae.safetensors")
    return PartFolders((text,), (vaes,)), made


def _load(path, arch, parts=PartFolders(), dtype=torch.bfloat16, vae_dtype=None, config=None):
    """Through load_checkpoint (detection, the side-car `<stem>/`), or with another config folder."""
    path = Path(path)
    if config is not None:
        return load_flow_file(path, arch, config, configs_dir=CONFIGS, parts=parts, device=CPU, dtype=dtype,
                              vae_dtype=vae_dtype or dtype)
    loaded = load_checkpoint(path, configs_dir=CONFIGS, device=CPU, dtype=dtype, vae_dtype=vae_dtype or dtype, parts=parts)
    assert (loaded.arch, loaded.extra["config_source"]) == (arch, "side-car folder")
    return loaded


def _assert_weights(loaded, expected: dict, names=MODULES) -> None:
    for name, field in names.items():
        if name not in expected:
            continue
        got, want = getattr(loaded, field).state_dict(), expected[name].state_dict()
        assert sorted(got) == sorted(want), name
        for key, value in want.items():
            assert torch.equal(got[key].float(), value.float()), f"{name}.{key}"


def _assert_same_as_diffusers(loaded, pipe) -> None:
    for name, field in MODULES.items():
        theirs = getattr(pipe, name, None)
        if theirs is None:
            continue
        ours = getattr(loaded, field).state_dict()
        for key, value in theirs.state_dict().items():
            if value.device.type == "meta":  # diffusers leaves T5's tied embed_tokens unfilled; transformers ties it
                continue
            if name == "vae":  # ours may be in another dtype (vae_dtype); the values are the same
                ours[key], value = ours[key].float(), value.float()
            assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), f"{name}.{key}"


# --------------------------------------------------------------------------- Flux


def test_full_flux_file_loads_as_diffusers_loads_it(flux_full):
    from diffusers import FluxPipeline

    path, made = flux_full
    loaded = _load(path, "flux-dev", vae_dtype=torch.float32)
    assert (loaded.family, loaded.is_sdxl, type(loaded.unet).__name__) == ("flux", False, "FluxTransformer2DModel")
    assert loaded.unet.config.guidance_embeds and loaded.vae.dtype == torch.float32
    assert loaded.scheduler_config["use_dynamic_shifting"] is True and loaded.extra["parts"] == {}
    _assert_weights(loaded, made)
    pipe = FluxPipeline.from_single_file(str(path), config=str(path.with_suffix("")), local_files_only=True,
                                         dtype=torch.bfloat16, tokenizer=loaded.tokenizer, tokenizer_2=loaded.tokenizer_2)
    _assert_same_as_diffusers(loaded, pipe)
    ids = loaded.tokenizer_2("a red house", return_tensors="pt").input_ids
    assert ids[0, -1].item() == 1 and loaded.tokenizer("a red house").input_ids[0] == 49406  # T5 </s>, CLIP <|startoftext|>


def test_transformer_only_flux_takes_its_parts_from_the_folders(root, forge_parts):
    parts, made_parts = forge_parts
    path = root / "Stable-diffusion" / "flux1-schnell.safetensors"
    made = flow_tiny.write_flux(path, "schnell", "transformer")

    with pytest.raises(ValueError) as missing:
        _load(path, "flux-schnell", PartFolders((root / "empty-te",), (root / "empty-vae",)))
    message = str(missing.value)
    assert message.startswith(f"Could not load checkpoint {path}: it holds only the transformer: put ")
    for words in ("CLIP-L text encoder such as clip_l.safetensors", "T5-XXL text encoder such as t5xxl_fp16.safetensors",
                  f"in {root / 'empty-te'}/", "Flux VAE such as ae.safetensors", f"in {root / 'empty-vae'}/"):
        assert words in message

    loaded = _load(path, "flux-schnell", parts)
    assert not loaded.unet.config.guidance_embeds and loaded.scheduler_config["use_dynamic_shifting"] is False
    assert loaded.extra["parts"] == {"text_encoder": str(parts.text_encoders[0] / "clip_l.safetensors"),
                                     "text_encoder_2": str(parts.text_encoders[0] / "t5xxl.safetensors"),
                                     "vae": str(parts.vaes[0] / "ae.safetensors")}
    _assert_weights(loaded, {"transformer": made["transformer"], **made_parts})


def test_fp8_flux_transformer_keeps_fp8_storage(root, forge_parts):
    from safetensors.torch import load_file, save_file

    parts, made_parts = forge_parts
    path = root / "Stable-diffusion" / "flux1-dev-fp8.safetensors"
    made = flow_tiny.write_flux(path, "dev", "transformer", dtype=torch.float8_e4m3fn)
    t5_fp8 = {k: v.to(torch.float8_e4m3fn) for k, v in load_file(parts.text_encoders[0] / "t5xxl.safetensors").items()}
    fp8_file = root / "fp8-text-encoders" / "t5xxl_fp8_e4m3fn.safetensors"
    fp8_file.parent.mkdir()
    save_file(t5_fp8, str(fp8_file))
    both = PartFolders((*parts.text_encoders, fp8_file.parent), parts.vaes)
    loaded = _load(path, "flux-dev", both)
    assert loaded.extra["weights_fp8"] == "e4m3fn"
    # beside an fp8 transformer the fp8 T5 is taken (the user is saving memory), kept in fp8 and computing in bf16
    assert loaded.extra["parts"]["text_encoder_2"] == str(fp8_file)
    t5 = loaded.text_encoder_2
    assert t5.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float8_e4m3fn
    assert t5.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.bfloat16  # T5 casts its input to wo's dtype
    from transformers import T5EncoderModel

    plain = T5EncoderModel.from_pretrained(None, config=t5.config, state_dict=dict(t5_fp8), dtype=torch.bfloat16).eval()
    ids = torch.tensor([[5, 9, 17, 1]])
    with torch.no_grad():
        assert torch.equal(t5(ids).last_hidden_state, plain(ids).last_hidden_state)
    assert flow_loader._pick(flow_loader._candidates(both.text_encoders), "t5xxl", flow_tiny.T5_WIDTH, False).path.name == "t5xxl.safetensors"
    assert loaded.unet.transformer_blocks[0].attn.to_q.weight.dtype == torch.float8_e4m3fn  # stored as the file has it
    _assert_weights(loaded, {"transformer": made["transformer"]})
    hidden = torch.randn(1, 16, 64, dtype=torch.bfloat16)
    out = loaded.unet(hidden_states=hidden, encoder_hidden_states=torch.randn(1, 8, flow_tiny.T5_WIDTH, dtype=torch.bfloat16),
                      pooled_projections=torch.randn(1, flow_tiny.CLIP_L_WIDTH, dtype=torch.bfloat16),
                      timestep=torch.tensor([0.5]), img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(8, 3),
                      guidance=torch.tensor([3.5])).sample
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()  # computes in bf16
    from modules.generation.speed import SpeedOptions, apply

    assert apply(loaded, SpeedOptions(fp8_storage="Enable")) == ()  # the fp8 option finds it stored in fp8 already


def test_lowvram_streams_a_flow_transformer_to_the_same_result(flux_full):
    from modules.generation.offload import is_streamed, offload

    path, _ = flux_full
    whole, streamed = _load(path, "flux-dev"), _load(path, "flux-dev")
    offload(streamed, CPU, "blocks")
    assert is_streamed(streamed.unet)
    torch.manual_seed(0)
    inputs = dict(hidden_states=torch.randn(1, 16, 64, dtype=torch.bfloat16), timestep=torch.tensor([0.5]),
                  encoder_hidden_states=torch.randn(1, 8, flow_tiny.T5_WIDTH, dtype=torch.bfloat16),
                  pooled_projections=torch.randn(1, flow_tiny.CLIP_L_WIDTH, dtype=torch.bfloat16),
                  img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(8, 3), guidance=torch.tensor([3.5]))
    with torch.no_grad():
        assert torch.equal(streamed.unet(**inputs).sample, whole.unet(**inputs).sample)


def test_model_manager_loads_a_flux_file_with_its_parts_as_the_loader_does(root, forge_parts):
    """The app's path: the manager passes the part folders, and the attention setup leaves the
    transformer's own processors (a UNet processor on it fails)."""
    from modules.generation.devices import device_settings
    from modules.models.catalog import HashCache
    from modules.models.manager import ModelManager

    parts, _ = forge_parts
    ckpts = root / "manager-ckpts"
    flow_tiny.write_flux(ckpts / "flux1-schnell.safetensors", "schnell", "transformer", seed=2)
    manager = ModelManager((ckpts,), CONFIGS, lambda: device_settings(use_cpu=True), HashCache(None, hashing=False), parts=parts)
    model = manager.load("flux1-schnell").model
    direct = _load(ckpts / "flux1-schnell.safetensors", "flux-schnell", parts, dtype=torch.float32)
    assert model.arch == "flux-schnell" and model.extra["parts"] == direct.extra["parts"]
    inputs = dict(hidden_states=torch.randn(1, 16, 64), timestep=torch.tensor([0.5]), img_ids=torch.randn(16, 3),
                  encoder_hidden_states=torch.randn(1, 8, flow_tiny.T5_WIDTH), txt_ids=torch.zeros(8, 3),
                  pooled_projections=torch.randn(1, flow_tiny.CLIP_L_WIDTH))
    with torch.no_grad():
        assert torch.equal(model.unet(**inputs).sample, direct.unet(**inputs).sample)


def _write_gguf_q8(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A city96-style GGUF: BFL keys, 2-D weights in Q8_0, the rest in F32."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "flux")
    for key, value in state.items():
        array = value.float().numpy()
        if array.ndim == 2 and array.shape[1] % 32 == 0:
            writer.add_tensor(key, gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(key, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_q8_flux_transformer_stays_quantized(root, forge_parts):
    import gguf
    from diffusers.quantizers.gguf.utils import GGUFParameter

    parts, _ = forge_parts
    path = root / "Stable-diffusion" / "flux1-dev-Q8_0.gguf"
    config = root / "Stable-diffusion" / "flux1-dev-Q8_0"
    made = flow_tiny.write_flux(root / "scratch" / "flux1-dev-Q8_0.safetensors", "dev", "transformer", dtype=torch.float32)
    shutil.copytree(root / "scratch" / "flux1-dev-Q8_0", config)
    bfl = flow_tiny.flux_to_bfl(made["transformer"].state_dict())
    _write_gguf_q8(path, bfl)

    loaded = _load(path, "flux-dev", parts)
    assert loaded.extra["weights_quantized"] == "gguf"
    weight = loaded.unet.x_embedder.weight
    assert isinstance(weight, GGUFParameter) and weight.quant_type == gguf.GGMLQuantizationType.Q8_0
    q8 = gguf.quants.quantize(bfl["img_in.weight"].numpy(), gguf.GGMLQuantizationType.Q8_0)
    expected = torch.from_numpy(gguf.quants.dequantize(q8, gguf.GGMLQuantizationType.Q8_0))
    from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

    assert (dequantize_gguf_tensor(weight).float() - expected).abs().max() < 1e-3  # the file's Q8_0 blocks (diffusers dequantizes in fp16)
    torch.manual_seed(0)
    inputs = dict(hidden_states=torch.randn(1, 16, 64), encoder_hidden_states=torch.randn(1, 8, flow_tiny.T5_WIDTH),
                  pooled_projections=torch.randn(1, flow_tiny.CLIP_L_WIDTH), timestep=torch.tensor([0.5]),
                  img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(8, 3), guidance=torch.tensor([3.5]))
    with torch.no_grad():
        want = made["transformer"](**inputs).sample
        got = loaded.unet(**{k: v.to(torch.bfloat16) if v.is_floating_point() and k != "timestep" else v
                             for k, v in inputs.items()}).sample.float()
    assert (got - want).abs().max() < 0.05 * want.abs().max()  # Q8_0 and bf16 rounding only


def test_without_a_t5_tokenizer_of_its_own_the_shipped_one_is_used_and_the_users_wins(root, flux_full):
    path, _ = flux_full
    config = root / "no-t5-tokenizer"
    shutil.copytree(path.with_suffix(""), config)
    shutil.rmtree(config / "tokenizer_2")
    parts = PartFolders((root / "te-for-tokenizer",), ())
    loaded = _load(path, "flux-dev", parts, config=config)
    assert loaded.tokenizer_2("Hello world").input_ids == [8774, 296, 1]  # configs/t5-tokenizer: T5's own ids

    flow_tiny.tiny_t5_tokenizer(parts.t5_tokenizer)
    loaded = _load(path, "flux-dev", parts, config=config)
    assert loaded.tokenizer_2("a cat", return_tensors="pt").input_ids.tolist() == [[_piece(loaded, "\u2581a"), _piece(loaded, "\u2581cat"), 1]]


def _piece(loaded, piece: str) -> int:
    return loaded.tokenizer_2.convert_tokens_to_ids(piece)


# --------------------------------------------------------------------------- SD 3 / 3.5


@pytest.mark.parametrize("variant", ["sd35-medium"])  # SD3.5 large: the base-file test below
def test_full_sd35_file_loads_as_diffusers_loads_it(root, variant):
    from diffusers import StableDiffusion3Pipeline

    path = root / "Stable-diffusion" / f"{variant}-full.safetensors"
    made = flow_tiny.write_sd3(path, variant, "full")
    loaded = _load(path, variant, dtype=torch.float16, vae_dtype=torch.float32)
    assert (loaded.family, type(loaded.unet).__name__, type(loaded.text_encoder_3).__name__) == ("sd3", "SD3Transformer2DModel", "T5EncoderModel")
    assert loaded.tokenizer_2.pad_token == "!" and loaded.tokenizer.pad_token == "<|endoftext|>"
    assert bool(loaded.unet.config.dual_attention_layers) == (variant == "sd35-medium")
    made["text_encoder"].text_projection.weight.data = torch.eye(flow_tiny.CLIP_L_WIDTH, dtype=torch.float16)  # SD3 pools CLIP-L unprojected
    _assert_weights(loaded, made)
    assert loaded.text_encoder_3.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32  # T5 under fp16, as transformers keeps it
    pipe = StableDiffusion3Pipeline.from_single_file(str(path), config=str(path.with_suffix("")), local_files_only=True,
                                                     dtype=torch.float16, tokenizer=loaded.tokenizer, tokenizer_2=loaded.tokenizer_2,
                                                     tokenizer_3=loaded.tokenizer_3)
    _assert_same_as_diffusers(loaded, pipe)


def test_sd35_base_file_takes_its_text_encoders_from_the_folder(root):
    path = root / "Stable-diffusion" / "sd3.5_large.safetensors"
    made = flow_tiny.write_sd3(path, "sd35-large", "base", seed=1)
    text = root / "sd3-text-encoders"
    with pytest.raises(ValueError, match="it lacks some parts: put a CLIP-L .* CLIP-G text encoder such as clip_g.safetensors"):
        _load(path, "sd35-large", PartFolders((text,)), dtype=torch.float16)
    parts = flow_tiny.write_sd3_parts(text, "sd35-large", seed=1)
    loaded = _load(path, "sd35-large", PartFolders((text,)), dtype=torch.float16)
    assert set(loaded.extra["parts"]) == {"text_encoder", "text_encoder_2", "text_encoder_3"}  # the VAE is the file's
    parts["text_encoder"].text_projection.weight.data = torch.eye(flow_tiny.CLIP_L_WIDTH, dtype=torch.float16)
    _assert_weights(loaded, {"transformer": made["transformer"], "vae": made["vae"], **{k: v for k, v in parts.items() if k.startswith("text")}})


# --------------------------------------------------------------------------- diffusers folders


def test_diffusers_folders_load_through_load_checkpoint(root, flux_full):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusion3Pipeline
    from transformers import T5TokenizerFast

    _, made = flux_full
    t5 = T5TokenizerFast.from_pretrained(str(flow_tiny.tiny_t5_tokenizer(root / "t5tok")))
    scheduler = FlowMatchEulerDiscreteScheduler(**flow_tiny.FLUX_SCHEDULERS["dev"])
    FluxPipeline(scheduler=scheduler, tokenizer=build_tokenizer(CONFIGS), tokenizer_2=t5, **made).save_pretrained(root / "FLUX.1-dev")
    sd3 = flow_tiny.build_sd3("sd3")
    StableDiffusion3Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), tokenizer=build_tokenizer(CONFIGS),
                             tokenizer_2=build_tokenizer(CONFIGS, "!"), tokenizer_3=t5, **sd3).save_pretrained(root / "sd3-medium")
    for folder in ("FLUX.1-dev/tokenizer", "sd3-medium/tokenizer", "sd3-medium/tokenizer_2", "sd3-medium/tokenizer_3"):
        shutil.rmtree(root / folder)  # CLIP: the shared vocab; SD3's T5: models/text_encoder/t5-tokenizer
    parts = PartFolders((root / "te-folder",), ())
    flow_tiny.tiny_t5_tokenizer(parts.t5_tokenizer)

    flux = load_checkpoint(root / "FLUX.1-dev", configs_dir=CONFIGS, device=CPU, dtype=torch.bfloat16, vae_dtype=torch.bfloat16, parts=parts)
    assert (flux.arch, flux.extra["config_source"]) == ("flux-dev", "diffusers folder")
    _assert_weights(flux, made)
    loaded = load_checkpoint(root / "sd3-medium", configs_dir=CONFIGS, device=CPU, dtype=torch.float16, vae_dtype=torch.float32, parts=parts)
    assert loaded.arch == "sd3" and loaded.vae.dtype == torch.float32 and loaded.tokenizer_3 is not None
    assert (loaded.tokenizer.pad_token, loaded.tokenizer_2.pad_token) == ("<|endoftext|>", "!")  # CLIP-G pads as SDXL's
    _assert_weights(loaded, sd3)


def test_part_files_are_told_apart_by_their_tensors(root, forge_parts):
    parts, _ = forge_parts
    found = {c.path.name: (c.kind, c.width, c.fp8) for c in flow_loader._candidates((*parts.text_encoders, *parts.vaes))}
    assert found == {"clip_l.safetensors": ("clip", flow_tiny.CLIP_L_WIDTH, False),
                     "t5xxl.safetensors": ("t5xxl", flow_tiny.T5_WIDTH, False), "ae.safetensors": ("vae", 16, False)}
    vaes = root / "two-vaes"
    vaes.mkdir()
    for name in ("ae.safetensors", "sd3_vae.safetensors"):  # one shape, two families' weights: the name decides
        shutil.copy(parts.vaes[0] / "ae.safetensors", vaes / name)
    both = flow_loader._candidates((vaes,))
    assert flow_loader._pick(both, "vae", 16, False, "flux").path.name == "ae.safetensors"
    assert flow_loader._pick(both, "vae", 16, False, "sd3").path.name == "sd3_vae.safetensors"


@pytest.mark.parametrize("arch", ["flux-dev", "flux-schnell", "sd3", "sd35-medium", "sd35-large"])
def test_shipped_configs_ask_for_the_released_part_widths(arch, tmp_path):
    """Part files are matched against configs/<arch>: CLIP-L 768, CLIP-G 1280, T5-XXL 4096 wide;
    with no T5 tokenizer in the model's folder, models/text_encoder/t5-tokenizer or the shipped
    configs/t5-tokenizer (left out here), the sentence says where to put one."""
    family = flow_loader.FAMILIES["flux" if arch.startswith("flux") else "sd3"]
    widths = {e.part: flow_loader._encoder_width(CONFIGS / arch, e) for e in family.encoders}
    assert widths == {"clip_l": 768, "t5xxl": 4096, **({"clip_g": 1280} if "clip_g" in widths else {})}
    assert flow_loader._config(CONFIGS / arch, "vae")["latent_channels"] == 16
    tokenizer = CONFIGS / arch / family.t5_slot.replace("text_encoder", "tokenizer")
    with pytest.raises(ValueError, match=f"no T5 tokenizer: put .* in {tmp_path / 't5-tokenizer'}/"):
        flow_loader.t5_tokenizer([tokenizer], PartFolders((tmp_path,)))


def test_the_shipped_t5_tokenizer_is_t5s_vocabulary(tmp_path):
    """With no tokenizer in the model's folder or models/text_encoder, configs/t5-tokenizer answers:
    the ids a T5 v1.1 encoder (and so Flux and SD 3) was trained on, end-of-text 1, padding 0."""
    tokenizer = flow_loader.t5_tokenizer([tmp_path / "none"], PartFolders((tmp_path,)), CONFIGS / "t5-tokenizer")
    assert tokenizer("Hello world").input_ids == [8774, 296, 1]
    assert tokenizer("a photo of a cat", padding="max_length", max_length=10).input_ids == [3, 9, 1202, 13, 3, 9, 1712, 1, 0, 0]


# --------------------------------------------------------------------------- precision, scaled fp8, SD 3 without T5


def test_fp16_on_a_card_with_bf16_loads_flow_models_in_bf16(flux_full):
    """Flux and SD 3.5 are bf16 models (fp16 overflows in SD 3's joint blocks: black pictures)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.cuda, "is_available", lambda: True)
        mp.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        assert flow_loader.flow_dtype("cuda", torch.float16) == torch.bfloat16
        assert flow_loader.flow_dtype(torch.device("cuda:0"), torch.float32) == torch.float32  # --no-half as asked
        assert flow_loader.flow_dtype(CPU, torch.float16) == torch.float16
        mp.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # Turing and older keep fp16
        assert flow_loader.flow_dtype("cuda", torch.float16) == torch.float16
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(flow_loader, "_bf16_device", lambda device: True)  # as on such a card, here on the CPU
        loaded = _load(flux_full[0], "flux-dev", dtype=torch.float16, vae_dtype=torch.float16)
    assert loaded.dtype == loaded.vae_dtype == torch.bfloat16
    assert {loaded.unet.dtype, loaded.text_encoder.dtype, loaded.vae.dtype} == {torch.bfloat16}


def test_a_scaled_fp8_checkpoint_is_refused_naming_the_file(root, flux_full):
    from safetensors.torch import load_file, save_file

    path = root / "Stable-diffusion" / "flux1-dev-fp8-scaled.safetensors"
    state = load_file(str(flux_full[0]))
    state["model.diffusion_model.scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    state["model.diffusion_model.double_blocks.0.img_attn.proj.scale_weight"] = torch.ones(1)
    save_file(state, str(path))
    shutil.copytree(flow_tiny.side_car(flux_full[0]), flow_tiny.side_car(path))
    with pytest.raises(ValueError, match=r"flux1-dev-fp8-scaled.safetensors: it is a \"scaled fp8\" file .* plain fp8 .* or a GGUF"):
        _load(path, "flux-dev")


def test_sd3_with_its_clips_but_no_t5_runs_on_the_clips_and_says_so(root):
    """SAI's sd3_medium_incl_clips.safetensors: no T5 in the file nor in models/text_encoder."""
    from safetensors.torch import load_file, save_file

    from modules.generation.flow_runner import NO_T5_NOTE, runner_for
    from modules.generation.params import GenerationParams

    path = root / "Stable-diffusion" / "sd3_medium_incl_clips.safetensors"
    flow_tiny.write_sd3(path, "sd3", "full", dtype=torch.float32, seed=2)
    save_file({k: v for k, v in load_file(str(path)).items() if not k.startswith("text_encoders.t5xxl.")}, str(path))
    loaded = _load(path, "sd3", PartFolders((root / "no-text-encoders",)), dtype=torch.float32)
    assert loaded.text_encoder_3 is None and loaded.text_encoder_2 is not None and "text_encoder_3" not in loaded.extra["parts"]
    runner = runner_for(loaded)
    params = GenerationParams(prompt="a red square", sampler_name="Euler", width=64, height=64, steps=2, cfg_scale=4.0)
    assert NO_T5_NOTE in runner.job_params(params)[1]
    picture = next(iter(runner.txt2img(params, 1))).images[0]
    assert picture.size == (64, 64) and np.asarray(picture).std() > 1  # a picture, not NaN-black
    flux_transformer_only = root / "Stable-diffusion" / "flux1-dev-no-t5.safetensors"
    flow_tiny.write_flux(flux_transformer_only, "dev", "transformer")
    with pytest.raises(ValueError, match="T5-XXL text encoder such as t5xxl_fp16"):  # Flux cannot do without
        _load(flux_transformer_only, "flux-dev", PartFolders((root / "no-text-encoders",), (root / "no-vae",)))
