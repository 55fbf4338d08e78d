"""LoRA library and stack on the tiny model: LoRAs are made here with peft, saved in both the
diffusers/peft and the kohya/A1111 layouts, and must reproduce what peft itself computes."""

from __future__ import annotations

import copy
import hashlib
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from modules.models import lora as lora_module
from modules.models.catalog import HashCache
from modules.models.loader import load_checkpoint
from modules.models.lora import LoraFile, LoraLibrary, LoraStack
from tests.conftest import CONFIGS

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in"]  # proj_in is a 1x1 conv in SD 1.x
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
RANK, ALPHA = 4, 8  # scale 2: alpha must be honoured in both layouts

# peft says so for every adapter after the first; several per model is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute")


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    """Our own instance: the stack patches it, the shared `tiny_model` must stay clean."""
    return load_checkpoint(tiny_checkpoint, configs_dir=CONFIGS, device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)


@pytest.fixture(scope="module")
def inputs(model):
    g = torch.Generator().manual_seed(0)
    ids = model.tokenizer("a photo of a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    return {"sample": torch.randn(1, 4, 8, 8, generator=g), "hidden": torch.randn(1, 77, 32, generator=g), "ids": ids}


def outputs(unet, text_encoder, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        u = unet(inputs["sample"], torch.tensor([500]), encoder_hidden_states=inputs["hidden"]).sample
        t = text_encoder(inputs["ids"]).last_hidden_state
    return u, t


def model_outputs(model, inputs):
    return outputs(model.unet, model.text_encoder, inputs)


@pytest.fixture(scope="module")
def base(model, inputs):
    return model_outputs(model, inputs)


def random_lora_copies(model, seed: int, strength: float = 0.2):
    """A random LoRA trained nowhere: peft injected into copies of the base UNet and text
    encoder, lora weights drawn from `seed`. The model itself is not touched."""
    from peft import LoraConfig, inject_adapter_in_model

    unet, text_encoder = copy.deepcopy(model.unet), copy.deepcopy(model.text_encoder)
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=UNET_TARGETS), unet)
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TEXT_TARGETS), text_encoder)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in [*unet.named_parameters(), *text_encoder.named_parameters()]:
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * strength)
    return unet, text_encoder


def peft_lora(model, inputs, seed: int):
    """Returns (unet tensors, text tensors, reference outputs with the random LoRA applied)."""
    from peft import get_peft_model_state_dict

    unet, text_encoder = random_lora_copies(model, seed)
    reference = outputs(unet, text_encoder, inputs)
    return get_peft_model_state_dict(unet), get_peft_model_state_dict(text_encoder), reference


def write_test_lora(path, model, layout: str = "kohya", seed: int = 1, strength: float = 0.2):
    """A random LoRA for `model`'s layout written to `path` in the kohya or diffusers layout."""
    from peft import get_peft_model_state_dict

    unet, text_encoder = random_lora_copies(model, seed, strength)
    unet_sd, text_sd = get_peft_model_state_dict(unet), get_peft_model_state_dict(text_encoder)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "kohya":
        save_file(to_kohya(unet_sd, text_sd), str(path))
        return path
    return save_diffusers_layout(path, unet_sd, text_sd)


def save_diffusers_layout(path, unet_sd, text_sd, alias=None):
    from diffusers import StableDiffusionPipeline

    meta = lambda targets: {"r": RANK, "lora_alpha": ALPHA, "target_modules": targets}  # noqa: E731
    StableDiffusionPipeline.save_lora_weights(
        path.parent, unet_lora_layers=unet_sd, text_encoder_lora_layers=text_sd, weight_name=path.name,
        unet_lora_adapter_metadata=meta(UNET_TARGETS), text_encoder_lora_adapter_metadata=meta(TEXT_TARGETS),
    )
    return path


def to_kohya(unet_sd, text_sd, te_prefix="lora_te_text_model_") -> dict:
    """diffusers/peft keys to kohya's: `lora_unet_<module_with_underscores>.lora_down.weight`."""
    out = {}
    for prefix, sd in (("lora_unet_", unet_sd), (te_prefix, text_sd)):
        for key, tensor in sd.items():
            module, _, leaf = key.partition(".lora_")
            name = prefix + module.replace(".", "_")
            out[f"{name}.{'lora_down' if leaf.startswith('A') else 'lora_up'}.weight"] = tensor.contiguous()
            out[f"{name}.alpha"] = torch.tensor(float(ALPHA))
    return out


@pytest.fixture(scope="module")
def loras(model, inputs, base, tmp_path_factory):
    """Two LoRAs: `one` in both layouts, `two` in the diffusers layout."""
    folder = tmp_path_factory.mktemp("Lora")
    u1, t1, ref1 = peft_lora(model, inputs, seed=1)
    u2, t2, ref2 = peft_lora(model, inputs, seed=2)
    one = save_diffusers_layout(folder / "one.safetensors", u1, t1)
    two = save_diffusers_layout(folder / "two.safetensors", u2, t2)
    kohya = folder / "one_kohya.safetensors"
    save_file(to_kohya(u1, t1), str(kohya), metadata={"ss_output_name": "OneTrained", "ss_tag_frequency": '{"cat": {"x": 1}}'})
    return {
        "one": LoraFile.from_path(one), "two": LoraFile.from_path(two), "kohya": LoraFile.from_path(kohya),
        "ref1": ref1, "ref2": ref2, "u1": u1, "t1": t1, "folder": folder,
    }


@pytest.fixture
def stack(model):
    s = LoraStack(model)
    yield s
    s.clear()


def adapter_names(model) -> set[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    names = set()
    for component in (model.unet, model.text_encoder):
        for layer in component.modules():
            if isinstance(layer, BaseTunerLayer):
                names |= set(layer.lora_A.keys())
    return names


def assert_base(model, inputs, base):
    u, t = model_outputs(model, inputs)
    assert torch.equal(u, base[0]) and torch.equal(t, base[1])


# --------------------------------------------------------------------------- applying


def test_diffusers_layout_reproduces_peft(model, inputs, base, loras, stack):
    assert stack.apply([(loras["one"], 1.0, 1.0)]) == []
    u, t = model_outputs(model, inputs)
    assert not torch.allclose(u, base[0]) and not torch.allclose(t, base[1])
    torch.testing.assert_close(u, loras["ref1"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(t, loras["ref1"][1], rtol=1e-5, atol=1e-5)
    assert [f.name for f, *_ in stack.active] == ["one"]


def test_kohya_layout_with_alpha_reproduces_peft(model, inputs, loras, stack, tmp_path):
    assert stack.apply([(loras["kohya"], 1.0, 1.0)]) == []
    u, t = model_outputs(model, inputs)
    torch.testing.assert_close(u, loras["ref1"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(t, loras["ref1"][1], rtol=1e-5, atol=1e-5)
    # some tools store the 1x1-conv proj_in pair as linear (2-D) weights
    flat = {k: v.flatten(1) if v.ndim == 4 else v for k, v in to_kohya(loras["u1"], loras["t1"]).items()}
    assert any("proj_in.lora_down" in k for k in flat)
    save_file(flat, str(tmp_path / "flat.safetensors"))
    assert stack.apply([(LoraFile.from_path(tmp_path / "flat.safetensors"), 1.0, 1.0)]) == []
    torch.testing.assert_close(model_outputs(model, inputs)[0], loras["ref1"][0], rtol=1e-5, atol=1e-5)


def test_te_zero_leaves_the_text_encoder_exact(model, inputs, base, loras, stack):
    stack.apply([(loras["one"], 0.0, 1.0)])
    u, t = model_outputs(model, inputs)
    assert torch.equal(t, base[1])
    torch.testing.assert_close(u, loras["ref1"][0], rtol=1e-5, atol=1e-5)
    assert stack.text_state() == ()


def test_unet_zero_leaves_the_unet_exact(model, inputs, base, loras, stack):
    stack.apply([(loras["one"], 1.0, 0.0)])
    u, t = model_outputs(model, inputs)
    assert torch.equal(u, base[0])
    torch.testing.assert_close(t, loras["ref1"][1], rtol=1e-5, atol=1e-5)


def test_multiplier_scales_the_effect(model, inputs, base, loras, stack):
    stack.apply([(loras["one"], 0.5, 0.5)])
    half = model_outputs(model, inputs)
    stack.apply([(loras["one"], 1.0, 1.0)])
    full = model_outputs(model, inputs)
    for h, f, b in zip(half, full, base):
        assert not torch.allclose(h, f) and not torch.allclose(h, b)
        # halfway, roughly: closer to each end than the ends are to each other
        assert (h - b).abs().mean() < (f - b).abs().mean()


def test_two_loras_at_once(model, inputs, loras, stack):
    stack.apply([(loras["one"], 1.0, 1.0)])
    one = model_outputs(model, inputs)
    stack.apply([(loras["two"], 1.0, 1.0)])
    two = model_outputs(model, inputs)
    torch.testing.assert_close(two[0], loras["ref2"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(two[1], loras["ref2"][1], rtol=1e-5, atol=1e-5)
    assert stack.apply([(loras["one"], 1.0, 1.0), (loras["two"], 1.0, 1.0)]) == []
    both = model_outputs(model, inputs)
    for b, o, t in zip(both, one, two):
        assert not torch.allclose(b, o) and not torch.allclose(b, t)
    assert sorted(f.name for f, *_ in stack.active) == ["one", "two"]


def test_apply_nothing_restores_the_base_bit_for_bit(model, inputs, base, loras, stack):
    stack.apply([(loras["one"], 1.0, 0.7), (loras["two"], 0.3, 1.0)])
    assert stack.apply([]) == []
    assert_base(model, inputs, base)
    assert adapter_names(model)  # kept loaded for the next job, just inactive
    stack.clear()
    assert adapter_names(model) == set()
    assert_base(model, inputs, base)


# --------------------------------------------------------------------------- SDXL


def tiny_sdxl():
    """An SDXL-shaped model (two text encoders, text_time embedding, linear projections) at
    toy size: enough for the LoRA key layouts, nothing else."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from modules.models.loaded import LoadedModel

    torch.manual_seed(3)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=2, cross_attention_dim=64, attention_head_dim=(2, 4),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        use_linear_projection=True, transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=8 * 6 + 32,
    )
    config = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
              "vocab_size": 1000, "max_position_embeddings": 77, "projection_dim": 32}
    te1, te2 = CLIPTextModel(CLIPTextConfig(**config)), CLIPTextModelWithProjection(CLIPTextConfig(**config))
    return LoadedModel(arch="sdxl", unet=unet.eval(), vae=None, text_encoder=te1.eval(), tokenizer=None, scheduler_config={},
                       device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32, text_encoder_2=te2.eval())


def sdxl_outputs(unet, te1, te2):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 1000, (1, 77), generator=g)
    cond = {"text_embeds": torch.randn(1, 32, generator=g), "time_ids": torch.randn(1, 6, generator=g)}
    sample, hidden = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 64, generator=g)
    with torch.no_grad():
        u = unet(sample, torch.tensor([500]), encoder_hidden_states=hidden, added_cond_kwargs=cond).sample
        return u, te1(ids).last_hidden_state, te2(ids).text_embeds


def to_sgm(module: str) -> str:
    """diffusers UNet module name to the sgm block names kohya uses for SDXL."""
    parts = module.split(".")
    if parts[0] == "mid_block":
        head, rest = "middle_block_1", parts[3:]
    else:
        block, layer = int(parts[1]), int(parts[3])
        index = 1 + block * 3 + layer if parts[0] == "down_blocks" else block * 3 + layer
        head, rest = f"{'input' if parts[0] == 'down_blocks' else 'output'}_blocks_{index}_1", parts[4:]
    return "_".join([head, *rest])


def test_sdxl_kohya_layout_with_uneven_alphas(tmp_path):
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    model = tiny_sdxl()
    base = sdxl_outputs(model.unet, model.text_encoder, model.text_encoder_2)
    unet, te1, te2 = (copy.deepcopy(m) for m in (model.unet, model.text_encoder, model.text_encoder_2))
    unet_targets = r".*(down_blocks\.1|mid_block|up_blocks\.0)\.attentions\.\d+\.transformer_blocks\.\d+\.(attn1\.to_q|attn2\.to_k)"
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, alpha_pattern={"attn1.to_q": 2}, target_modules=unet_targets), unet)
    for te in (te1, te2):
        inject_adapter_in_model(LoraConfig(r=2, lora_alpha=1, target_modules=["q_proj", "v_proj"]), te)
    g = torch.Generator().manual_seed(9)
    alphas = {}
    with torch.no_grad():
        for part in (unet, te1, te2):
            for name, p in part.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    reference = sdxl_outputs(unet, te1, te2)

    state = {}
    for prefix, part, rename in (("lora_unet_", unet, to_sgm), ("lora_te1_", te1, None), ("lora_te2_", te2, None)):
        for key, tensor in get_peft_model_state_dict(part).items():
            module, _, leaf = key.partition(".lora_")
            name = prefix + (rename(module) if rename else module.replace(".", "_"))
            state[f"{name}.{'lora_down' if leaf.startswith('A') else 'lora_up'}.weight"] = tensor.contiguous()
            alphas[name] = 2.0 if "attn1_to_q" in name else 8.0 if prefix == "lora_unet_" else 1.0
    state.update({f"{name}.alpha": torch.tensor(alpha) for name, alpha in alphas.items()})
    assert any(k.startswith("lora_unet_input_blocks_4_1_") for k in state) and any(k.startswith("lora_unet_middle_block_1_") for k in state)
    save_file(state, str(tmp_path / "xl.safetensors"))

    stack = LoraStack(model)
    assert stack.apply([(LoraFile.from_path(tmp_path / "xl.safetensors"), 1.0, 1.0)]) == []
    got = sdxl_outputs(model.unet, model.text_encoder, model.text_encoder_2)
    for g_, r, b in zip(got, reference, base):
        assert not torch.allclose(g_, b)
        torch.testing.assert_close(g_, r, rtol=1e-5, atol=1e-5)
    stack.apply([])
    assert all(torch.equal(g_, b) for g_, b in zip(sdxl_outputs(model.unet, model.text_encoder, model.text_encoder_2), base))


# --------------------------------------------------------------------------- refusing


def test_sdxl_lora_is_refused_before_anything_is_injected(model, inputs, base, loras, stack, tmp_path):
    g = torch.Generator().manual_seed(5)
    sdxl = {  # SDXL's second text encoder, 2048-wide cross-attention
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.randn(4, 1280, generator=g),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.randn(1280, 4, generator=g),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.randn(4, 2048, generator=g),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": torch.randn(64, 4, generator=g),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.alpha": torch.tensor(4.0),
    }
    save_file(sdxl, str(tmp_path / "xl.safetensors"))
    xl = LoraFile.from_path(tmp_path / "xl.safetensors")
    assert stack.apply([(xl, 1.0, 1.0)]) == ["LoRA 'xl' does not fit this model (made for SDXL?): skipped"]
    assert adapter_names(model) == set()
    assert_base(model, inputs, base)
    # the others in the same job still apply
    warnings = stack.apply([(xl, 1.0, 1.0), (loras["one"], 1.0, 1.0)])
    assert len(warnings) == 1 and "'xl'" in warnings[0]
    torch.testing.assert_close(model_outputs(model, inputs)[0], loras["ref1"][0], rtol=1e-5, atol=1e-5)


def test_wrongly_shaped_lora_is_refused_and_leaves_the_model_exact(model, inputs, base, loras, stack, tmp_path):
    stack.apply([(loras["one"], 1.0, 1.0)])
    before = adapter_names(model)
    bad = dict(to_kohya(loras["u1"], loras["t1"]))
    key = next(k for k in bad if k.endswith("attn2_to_k.lora_down.weight"))
    bad[key] = torch.randn(RANK, 768)  # an SD 1.x-width cross-attention on the tiny model
    save_file(bad, str(tmp_path / "bad.safetensors"))
    bad_file = LoraFile.from_path(tmp_path / "bad.safetensors")
    [warning] = stack.apply([(bad_file, 1.0, 1.0)])
    assert warning.startswith("LoRA 'bad' does not fit this model (") and "attn2.to_k" in warning
    assert adapter_names(model) == before
    assert_base(model, inputs, base)


def test_failure_while_injecting_is_cleaned_up(model, inputs, base, loras, stack, monkeypatch):
    from diffusers import StableDiffusionPipeline

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(StableDiffusionPipeline, "load_lora_into_text_encoder", broken)
    [warning] = stack.apply([(loras["one"], 1.0, 1.0)])
    assert warning == "LoRA 'one' could not be applied (disk on fire): skipped"
    assert adapter_names(model) == set()  # the UNet part that went in first came out again
    assert_base(model, inputs, base)


def test_unreadable_and_missing_files_are_warnings(stack, tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    junk = LoraFile.from_path(tmp_path / "junk.safetensors")
    gone = LoraFile(name="gone", path=tmp_path / "gone.safetensors", alias="gone")
    warnings = stack.apply([(junk, 1.0, 1.0), (gone, 1.0, 1.0)])
    assert warnings[0].startswith("LoRA 'gone' was not found")
    assert warnings[1].startswith("LoRA 'junk' could not be read (")


# --------------------------------------------------------------------------- caching


def test_a_file_is_read_once_and_reread_when_it_changes(model, loras, stack, monkeypatch):
    reads = []
    real = lora_module.read_lora_file
    monkeypatch.setattr(lora_module, "read_lora_file", lambda path: reads.append(path) or real(path))
    stack.apply([(loras["two"], 1.0, 1.0)])
    stack.apply([(loras["two"], 0.5, 0.8)])
    stack.apply([])
    stack.apply([(loras["two"], 1.0, 1.0)])
    assert len(reads) == 1
    stat = loras["two"].path.stat()
    os.utime(loras["two"].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    stack.apply([(loras["two"], 1.0, 1.0)])
    assert len(reads) == 2
    assert len(adapter_names(model)) == 1  # the stale adapter was dropped


def test_least_recently_used_adapter_is_deleted_beyond_the_cache(model, loras):
    stack = LoraStack(model, max_cached=1)
    try:
        stack.apply([(loras["one"], 1.0, 1.0)])
        first = adapter_names(model)
        stack.apply([(loras["two"], 1.0, 1.0)])
        assert len(adapter_names(model)) == 1 and adapter_names(model) != first
        # wanted ones are never evicted, even beyond the limit
        stack.apply([(loras["one"], 1.0, 1.0), (loras["two"], 1.0, 1.0)])
        assert len(adapter_names(model)) == 2
    finally:
        stack.clear()


def test_text_state_follows_the_text_encoder_weights(loras, stack):
    assert stack.text_state() == ()
    stack.apply([(loras["one"], 1.0, 1.0)])
    state = stack.text_state()
    hash(state)
    stack.apply([(loras["one"], 1.0, 0.3)])
    assert stack.text_state() == state  # only the UNet changed
    stack.apply([(loras["one"], 0.5, 0.3)])
    assert stack.text_state() != state
    stack.apply([(loras["one"], 1.0, 1.0), (loras["two"], 1.0, 1.0)])
    assert stack.text_state() not in (state, ())
    stack.apply([])
    assert stack.text_state() == ()


def test_same_file_twice_adds_its_multipliers(model, inputs, loras, stack):
    stack.apply([(loras["one"], 0.5, 0.5), (loras["one"], 0.5, 0.5)])
    u, t = model_outputs(model, inputs)
    torch.testing.assert_close(u, loras["ref1"][0], rtol=1e-5, atol=1e-5)
    assert [(f.name, te, unet) for f, te, unet in stack.active] == [("one", 1.0, 1.0)]


# --------------------------------------------------------------------------- library


def test_library_lists_finds_and_describes(loras, tmp_path):
    root = tmp_path / "Lora"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "Style.safetensors").write_bytes(loras["kohya"].path.read_bytes())
    (root / "plain.pt").write_bytes(b"")
    for skipped in (".hidden.safetensors", "half.safetensors.part", "notes.txt", "busy.safetensors", "busy.safetensors.aria2"):
        (root / skipped).write_bytes(b"")
    (root / ".cache").mkdir()
    (root / ".cache" / "x.safetensors").write_bytes(b"")
    library = LoraLibrary((root,), HashCache(None))

    assert [f.name for f in library.refresh()] == ["plain", "Style"]
    style = library.find("Style")
    assert style.alias == "OneTrained" and library.find("plain").alias == "plain"
    assert library.find("OneTrained") == style and library.find("onetrained") == style and library.find("style") == style
    assert library.find("nope") is None
    # A1111's LoRA hash skips the safetensors header (so editing metadata keeps it): the "addnet" hash
    raw = style.path.read_bytes()
    body = raw[8 + int.from_bytes(raw[:8], "little"):]
    assert library.shorthash(style) == hashlib.sha256(body).hexdigest()[:12] != hashlib.sha256(raw).hexdigest()[:12]
    (root / "plain.pt").write_bytes(b"not a safetensors file")
    assert library.shorthash(library.find("plain")) == hashlib.sha256(b"not a safetensors file").hexdigest()[:12]

    described = {d["name"]: d for d in library.describe()}
    assert described["Style"]["alias"] == "OneTrained" and described["Style"]["path"] == str(style.path)
    assert described["Style"]["metadata"]["ss_tag_frequency"] == {"cat": {"x": 1}}
    assert described["plain"]["metadata"] == {}
    json.dumps(library.describe())


def test_find_prefers_exact_case_and_name_over_alias(tmp_path):
    for name in ("Cat", "cat"):
        save_file({"x": torch.zeros(1)}, str(tmp_path / f"{name}.safetensors"))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"ss_output_name": "dog"})
    save_file({"x": torch.zeros(1)}, str(tmp_path / "dog.safetensors"))
    library = LoraLibrary((tmp_path,), HashCache(None))
    assert library.find("cat").path.name == "cat.safetensors"
    assert library.find("Cat").path.name == "Cat.safetensors"
    assert library.find("dog").path.name == "dog.safetensors"
