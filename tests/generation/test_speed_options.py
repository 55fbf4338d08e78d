"""Speed options against the plain path, on the CPU at 64 px: each one either cannot change the
arithmetic (the picture is bit-identical) or stays within a stated tolerance. The GPU side
(speed, VRAM, the same checks in fp16) is bench/gpu_speed.py --options."""

from __future__ import annotations

import contextlib
import functools
import types

import numpy as np
import pytest
import torch

from modules.generation import speed
from modules.generation.params import GenerationParams, Img2ImgParams, infotext_fields
from modules.generation.runner import Runner
from modules.generation.speed import SpeedOptions
from modules.models.loader import load_checkpoint
from modules.outputs.infotext import format_infotext
from modules.outputs.paste import params_from_infotext
from tests.conftest import CONFIGS


def pictures(model, **values) -> list[np.ndarray]:
    values = {"prompt": "a red circle on a blue square", "negative_prompt": "green", "width": 64, "height": 64, "steps": 6, "seed": 5,
              "batch_size": 2, "sampler_name": "DPM++ 2M", "scheduler": "Karras", **values}
    params = GenerationParams.create(**values)
    return [np.asarray(im).astype(np.int16) for b in Runner(model).txt2img(params, params.seed) for im in b.images]


def load(path):
    return load_checkpoint(path, configs_dir=CONFIGS, device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)


@pytest.fixture(scope="module")
def demo_path():
    from modules.demo.embedded import EMBEDDED_PATH

    return EMBEDDED_PATH


@pytest.fixture(scope="module")
def demo_plain(demo_model):
    return pictures(demo_model)


def biggest_difference(made, expected) -> int:
    return max(int(np.abs(a - b).max()) for a, b in zip(made, expected, strict=True))


@pytest.fixture(scope="module")
def tiny_plain(tiny_model):
    return pictures(tiny_model)


def test_channels_last_changes_no_picture_beyond_rounding(tiny_checkpoint, tiny_plain):
    model = load(tiny_checkpoint)
    assert speed.apply(model, SpeedOptions(channels_last=True)) == ("channels_last",)
    weight = model.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    # Convolutions in another memory layout add in another order: at most one level of 255.
    assert biggest_difference(pictures(model), tiny_plain) <= 1


def test_tf32_is_a_no_op_off_nvidia_ampere_and_the_pictures_are_bit_identical(tiny_checkpoint, tiny_plain):
    assert speed.set_tf32(torch.device("cpu"), True) is False
    model = load(tiny_checkpoint)
    assert speed.apply(model, SpeedOptions(tf32=True)) == ()
    assert all(np.array_equal(a, b) for a, b in zip(pictures(model), tiny_plain, strict=True))


def unet_weight_bytes(unet) -> int:
    return sum(p.numel() * p.element_size() for p in unet.parameters())


def test_fp8_storage_quarters_the_float32_unet_and_keeps_the_picture_close(demo_path, demo_plain):
    model = load(demo_path)
    before = unet_weight_bytes(model.unet)
    assert speed.apply(model, SpeedOptions(fp8_storage="Enable")) == ("fp8 e4m3fn UNet weights",)
    after = unet_weight_bytes(model.unet)
    # Every weight but the norms' is stored in one byte instead of four (two in fp16 on a GPU).
    assert after < 0.3 * before, (before, after)
    assert model.extra["fp8_storage"] == "Enable"
    made = pictures(model)
    mean = np.mean([np.abs(a - b).mean() for a, b in zip(made, demo_plain, strict=True)])
    # Measured 12.9 levels of 255 on average with the small demo model in float32 (fp8 keeps 3
    # mantissa bits): the same picture, a little changed, much nearer than another seed's.
    other_seed = np.mean([np.abs(a - b).mean() for a, b in zip(pictures(load(demo_path), seed=6), demo_plain, strict=True)])
    assert 0 < mean < 20 and mean < other_seed / 2, (mean, other_seed)


def test_fp8_for_sdxl_only_leaves_an_sd1_model_alone(tiny_checkpoint):
    model = load(tiny_checkpoint)
    assert speed.apply(model, SpeedOptions(fp8_storage="Enable for SDXL")) == ()
    assert "fp8_storage" not in model.extra
    assert SpeedOptions(fp8_storage="Enable for SDXL").fp8_for("sdxl") and not SpeedOptions(fp8_storage="Enable for SDXL").fp8_for("sd1")


def test_settings_and_flags_make_the_options_and_flags_win():
    values = {"opt_channelslast": False, "opt_tf32": True, "sd_compile": "UNet and VAE decoder", "sd_compile_mode": "max-autotune",
              "fp8_storage": "Enable for SDXL"}
    assert SpeedOptions.from_settings(values) == SpeedOptions(compile="unet+vae", compile_mode="max-autotune", fp8_storage="Enable for SDXL")
    args = types.SimpleNamespace(opt_channelslast=True, no_tf32=True, compile="unet", compile_mode=None, unet_in_fp8_e4m3fn=False,
                                 unet_in_fp8_e5m2=True)
    assert SpeedOptions.from_settings(values, args) == SpeedOptions(
        channels_last=True, tf32=False, compile="unet", compile_mode="max-autotune", fp8_storage="Enable", fp8_format="e5m2")
    assert SpeedOptions.from_settings({"sd_compile": "nonsense", "fp8_storage": "sometimes"}) == SpeedOptions()
    with pytest.raises(ValueError, match="compile must be one of"):
        SpeedOptions(compile="everything")


def test_a_changed_option_reloads_the_model_before_the_next_job(tmp_path, tiny_checkpoint):
    from modules.generation.devices import device_settings
    from modules.models.catalog import HashCache
    from modules.models.manager import ModelManager

    folder = tmp_path / "Stable-diffusion"
    folder.mkdir()
    (folder / "m.safetensors").write_bytes(tiny_checkpoint.read_bytes())
    models = ModelManager((folder,), CONFIGS, lambda: device_settings(use_cpu=True), HashCache(tmp_path / "h.json", hashing=False))
    first = models.ensure()
    assert models.ensure() is first  # nothing changed: no reload
    models.use_speed(SpeedOptions(fp8_storage="Enable"))
    second = models.ensure()
    assert second is not first and second.model.extra["fp8_storage"] == "Enable"
    models.use_speed(SpeedOptions(fp8_storage="Enable", tf32=False))  # TF32 alone needs no reload
    assert models.ensure() is second


# ---------------------------------------------------------------------------- torch.compile


def eager_compile(monkeypatch):
    """torch.compile with dynamo's eager backend: the same graph capture, guards and recompiles
    as inductor, without minutes of C++ compiling on two cores (inductor's pictures are the
    GPU bench's to check)."""
    real = torch.compile

    def compile_eagerly(fn, mode=None, **kwargs):
        return real(fn, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", functools.partial(compile_eagerly))


@pytest.mark.slow  # dynamo traces the whole UNet and VAE decoder: about 12 s on two cores
def test_compiled_unet_and_decoder_keep_the_pictures_and_are_reused_across_steps_batch_sizes_and_cfg(monkeypatch, tiny_checkpoint):
    from torch._dynamo.utils import counters

    eager_compile(monkeypatch)
    torch._dynamo.reset()
    plain = pictures(load(tiny_checkpoint), steps=3)
    model = load(tiny_checkpoint)
    speed.apply(model, SpeedOptions(compile="unet+vae"))
    assert model.extra["compiled"] == "unet+vae"
    assert getattr(model.vae.decoder.forward, "_torchdynamo_orig_callable", None) is not None  # the decoder runs compiled
    assert biggest_difference(pictures(model, steps=3), plain) <= 1
    captured = counters["stats"]["unique_graphs"]
    assert captured >= 2  # the UNet's graph and the decoder's
    pictures(model, steps=5)  # another step count
    pictures(model, batch_size=3, steps=2)  # another batch size
    # No negative prompt halves the UNet's batch. (A UNet or decoder batch of 1 would compile
    # once more: dynamo specialises sizes 0 and 1.)
    pictures(model, batch_size=2, steps=2, cfg_scale=1.0)
    assert counters["stats"]["unique_graphs"] == captured, "a step count, batch size or CFG change recompiled"
    torch._dynamo.reset()


# ---------------------------------------------------------------------------- NGMS (s_min_uncond)


@contextlib.contextmanager
def unet_batches(unet):
    """The batch of every UNet call while inside."""
    batches: list[int] = []
    handle = unet.register_forward_pre_hook(lambda module, args, kwargs: batches.append((args[0] if args else kwargs["sample"]).shape[0]),
                                            with_kwargs=True)
    try:
        yield batches
    finally:
        handle.remove()


@pytest.mark.parametrize("sampler", [("Euler a", "Automatic"), ("DPM++ 2M", "Karras"), ("DDIM", "Automatic")])
def test_negative_guidance_minimum_sigma_skips_the_negative_prompt_on_alternate_late_steps(demo_model, sampler):
    name, schedule = sampler
    plain = pictures(demo_model, sampler_name=name, scheduler=schedule, batch_size=1, steps=12)
    with unet_batches(demo_model.unet) as batches:
        assert np.array_equal(pictures(demo_model, sampler_name=name, scheduler=schedule, batch_size=1, steps=12, s_min_uncond=0)[0], plain[0])
    assert set(batches) == {2}  # 0 = off: every call has the negative prompt
    with unet_batches(demo_model.unet) as batches:
        made = pictures(demo_model, sampler_name=name, scheduler=schedule, batch_size=1, steps=12, s_min_uncond=1.0)
    # Late steps (sigma < 1) on odd calls run the prompt alone; early ones, and even calls, keep both.
    assert batches[0] == 2 and 1 in batches, batches
    assert all(batches[i] == 2 for i in range(0, len(batches), 2))
    difference = np.abs(made[0] - plain[0]).mean()
    other_seed = np.abs(pictures(demo_model, sampler_name=name, scheduler=schedule, batch_size=1, steps=12, seed=6)[0] - plain[0]).mean()
    # Measured 2-7 levels of 255 on average (another seed: 18-44): the same picture, slightly changed.
    assert 0 < difference < 10 and difference < other_seed / 2, (difference, other_seed)


def test_token_merging_and_fp8_are_in_the_infotext_and_paste_back():
    params = GenerationParams.create(prompt="a cat", s_min_uncond=2.5, token_merging_ratio=0.5, enable_hr=True, token_merging_ratio_hr=0.3)
    fields = infotext_fields(params, seed=1, model_hash="abc", model_name="m", version="v", fp8_weight="Enable",
                             extras=[("Lora hashes", "x: 0123"), ("NGMS", "2.5")])
    keys, values = [k for k, _ in fields], dict(fields)
    assert values["Token merging ratio"] == "0.5" and values["Token merging ratio hr"] == "0.3" and values["FP8 weight"] == "Enable"
    assert keys.index("Model") + 1 == keys.index("FP8 weight")  # A1111's order
    assert keys.index("ENSD") + 1 == keys.index("Token merging ratio")
    pasted = params_from_infotext(format_infotext(params.prompt, "", fields))
    assert pasted.values["s_min_uncond"] == 2.5 and pasted.values["token_merging_ratio"] == 0.5
    assert pasted.values["token_merging_ratio_hr"] == 0.3
    plain = dict(infotext_fields(GenerationParams.create(prompt="a cat"), seed=1, model_hash="abc", model_name="m", version="v"))
    assert not {"Token merging ratio", "Token merging ratio hr", "FP8 weight"} & {k for k, v in plain.items() if v is not None}


@pytest.mark.parametrize("s_min_uncond, recorded", [(1.0, "1"), (0.01, None)])
def test_ngms_is_recorded_after_the_hashes_only_when_a_step_skipped_the_negative_prompt(tiny_model, s_min_uncond, recorded):
    """As A1111 records it: NGMS 0.01 is below every sigma of the schedule, so nothing is skipped."""
    runner = Runner(tiny_model)
    params = GenerationParams.create(prompt="a cat", negative_prompt="a dog", width=64, height=64, steps=4, seed=1, s_min_uncond=s_min_uncond)
    job = runner.prepare(params)
    list(runner.txt2img(params, 1, prompts=job))
    extras = runner.infotext_extras(params, job)
    assert extras[-1] == ("NGMS", recorded)


def test_img2img_and_the_high_res_pass_use_their_own_ratio_only_when_set():
    assert GenerationParams.create(token_merging_ratio=0.4).token_merging(hires=True) == 0.4
    assert GenerationParams.create(token_merging_ratio=0.4, token_merging_ratio_hr=0.2).token_merging(hires=True) == 0.2
    assert Img2ImgParams.create(token_merging_ratio=0.4, token_merging_ratio_img2img=0.6).token_merging() == 0.6
    assert Img2ImgParams.create(token_merging_ratio=0.4).token_merging() == 0.4
    assert GenerationParams.create(token_merging_ratio=0.4, token_merging_ratio_img2img=0.6).token_merging() == 0.4


def test_the_api_request_s_min_uncond_wins_over_the_setting():
    from modules.api.models import Txt2ImgRequest

    settings = {"s_min_uncond": 1.5, "token_merging_ratio": 0.3}
    assert Txt2ImgRequest(prompt="x").params(settings).s_min_uncond == 1.5
    assert Txt2ImgRequest(prompt="x", s_min_uncond=4).params(settings).s_min_uncond == 4
    overridden = Txt2ImgRequest(prompt="x", override_settings={"token_merging_ratio": 0.5}).params(settings)
    assert overridden.token_merging_ratio == 0.5


def test_a_jobs_token_merging_ratio_merges_during_its_passes_only(tiny_model):
    from modules.generation import token_merging

    plain = pictures(tiny_model, steps=3, batch_size=1)
    with token_merging.merging(tiny_model.unet, 0.5):
        by_hand = pictures(tiny_model, steps=3, batch_size=1)
    assert not np.array_equal(by_hand[0], plain[0])
    assert np.array_equal(pictures(tiny_model, steps=3, batch_size=1, token_merging_ratio=0.5)[0], by_hand[0])
    assert np.array_equal(pictures(tiny_model, steps=3, batch_size=1)[0], plain[0])  # the UNet is as it was afterwards


def test_a_lora_on_fp8_weights_keeps_its_own_precision_and_its_effect(tmp_path, tiny_checkpoint):
    from modules.models.lora import LoraFile, LoraStack
    from tests.models.test_lora import model_outputs, peft_lora, save_diffusers_layout

    plain = load(tiny_checkpoint)
    g = torch.Generator().manual_seed(0)
    ids = plain.tokenizer("a photo of a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    inputs = {"sample": torch.randn(1, 4, 8, 8, generator=g), "hidden": plain.text_encoder(ids).last_hidden_state.detach(), "ids": ids}
    unet_sd, text_sd, reference = peft_lora(plain, inputs, seed=1)
    lora = LoraFile.from_path(save_diffusers_layout(tmp_path / "one.safetensors", unet_sd, text_sd))

    fp8 = load(tiny_checkpoint)
    speed.apply(fp8, SpeedOptions(fp8_storage="Enable"))
    without = model_outputs(fp8, inputs)[0]
    stack = LoraStack(fp8)
    assert stack.apply([(lora, 1.0, 1.0)]) == []
    made = model_outputs(fp8, inputs)[0]  # ran: float8 adapters would fail in the matmul
    lora_weights = {name: p for name, p in fp8.unet.named_parameters() if "lora_A" in name}
    assert {p.dtype for p in lora_weights.values()} == {torch.float32}
    name, weight = next(iter(sorted(lora_weights.items())))
    exact = next(v for k, v in unet_sd.items() if k.replace("lora_A.weight", "") in name)
    assert torch.equal(weight.detach(), exact)  # loaded at full precision, not rounded through float8
    # The base weights are fp8's; the LoRA's change is the plain model's.
    assert (made - reference[0]).abs().mean() < (without - reference[0]).abs().mean() / 2
    stack.clear()


def test_tf32_switches_keep_torchs_precision_readable(monkeypatch):
    """TF32 on an Ampere card, simulated: inductor's autotuning reads the matmul precision
    afterwards, which torch refuses once the legacy and per-backend switches are mixed."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    try:
        assert speed.set_tf32(torch.device("cuda", 0), True) is True
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
        assert speed.set_tf32(torch.device("cuda", 0), False) is False
        assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cuda.matmul.allow_tf32
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # Turing: no TF32
        assert speed.set_tf32(torch.device("cuda", 0), True) is False
    finally:
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = True  # torch's own default


def test_out_of_range_speed_values_from_clients_are_clamped_not_refused():
    params = GenerationParams.create(s_min_uncond=40, token_merging_ratio=1.5, token_merging_ratio_hr=-1)
    assert (params.s_min_uncond, params.token_merging_ratio, params.token_merging_ratio_hr) == (40, 0.9, 0.0)
