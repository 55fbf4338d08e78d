"""ControlNet in the generation core: the extension's semantics, and diffusers' own pipeline as the oracle."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionControlNetPipeline
from PIL import Image, ImageDraw

from modules.controlnet.hook import ControlNetHook, PreparedUnit
from modules.controlnet.units import UnitSettings
from modules.generation import samplers
from modules.generation.hooks import Hooks
from modules.generation.params import GenerationParams
from modules.generation.runner import Runner
from tests.controlnet.tiny import tiny_controlnet


def edge_map(left: bool = True) -> Image.Image:
    image = Image.new("RGB", (64, 64), "black")
    x = 6 if left else 36
    ImageDraw.Draw(image).rectangle([x, 20, x + 20, 40], outline="white", width=2)
    return image


@pytest.fixture(scope="module")
def runner(tiny_model):
    return Runner(tiny_model)


@pytest.fixture(scope="module")
def controlnet(tiny_model):
    return tiny_controlnet(tiny_model.unet, seed=3)


class Spy:
    """Wraps a ControlNet and records each call's timestep and batch, and its residuals."""

    def __init__(self, model):
        self.model, self.calls, self.outputs = model, [], []

    @property
    def dtype(self):
        return self.model.dtype

    def __call__(self, latents, t, **kwargs):
        self.calls.append((float(torch.as_tensor(t).flatten()[0]), latents.shape[-1]))
        out = self.model(latents, t, **kwargs)
        self.outputs.append(out)
        return out


def unit(model, **settings) -> PreparedUnit:
    return PreparedUnit(UnitSettings(module="canny", model="tiny", **settings), model, edge_map(), "canny")


def generate(runner, units=(), **values):
    params = GenerationParams.create(**{"width": 64, "height": 64, "steps": 6, "prompt": "a red square", "seed": 11,
                                        "sampler_name": "Euler", **values})
    hooks = Hooks([ControlNetHook(list(units))]) if units else None
    return [np.asarray(im, dtype=np.int16) for b in runner.txt2img(params, params.seed, hooks=hooks) for im in b.images]


def test_matches_diffusers_controlnet_pipeline_within_one_level(runner, tiny_model, controlnet):
    """Oracle: the same checkpoint, ControlNet, condition and seed give diffusers' picture."""
    ours = generate(runner, [unit(controlnet, weight=0.8, resize_mode="Just Resize")], negative_prompt="blurry", cfg_scale=6.0)
    m = tiny_model
    pipe = StableDiffusionControlNetPipeline(
        vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet, controlnet=controlnet,
        scheduler=samplers.build_scheduler(m.scheduler_config, *samplers.resolve("Euler")),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a red square", image=edge_map(), negative_prompt="blurry", num_inference_steps=6, guidance_scale=6.0, width=64, height=64,
               controlnet_conditioning_scale=0.8, generator=torch.Generator().manual_seed(11)).images
    assert np.abs(ours[0] - np.asarray(ref[0], dtype=np.int16)).max() <= 1


def test_a_unit_changes_the_picture_and_weight_zero_is_bit_for_bit_without(runner, controlnet):
    plain = generate(runner)
    assert not np.array_equal(plain[0], generate(runner, [unit(controlnet)])[0])
    spy = Spy(controlnet)
    assert np.array_equal(plain[0], generate(runner, [unit(spy, weight=0.0)])[0])
    assert spy.calls == []


def test_guidance_start_and_end_choose_the_steps_the_unit_acts_on(runner, controlnet):
    spy = Spy(controlnet)
    generate(runner, [unit(spy, guidance_end=0.3)], steps=10)
    assert len(spy.calls) == 4  # steps 0, 1, 2, 3 of 10: fraction 0.0 to 0.3
    first = spy.calls[0][0]
    spy = Spy(controlnet)
    generate(runner, [unit(spy, guidance_start=0.5)], steps=10)
    assert len(spy.calls) == 5 and spy.calls[0][0] < first  # the later, lower-noise steps


def test_guidance_end_early_changes_the_picture_less_than_all_steps(runner, controlnet):
    plain = generate(runner, steps=10)
    early = generate(runner, [unit(controlnet, guidance_end=0.3)], steps=10)
    full = generate(runner, [unit(controlnet)], steps=10)
    assert 0 < np.abs(early[0] - plain[0]).mean() < np.abs(full[0] - plain[0]).mean()


def test_two_units_add_their_residuals(controlnet, tiny_model):
    from modules.generation.hooks import DenoiserCall, PassInfo

    torch.manual_seed(0)
    info = PassInfo(64, 64, False, 10, 1, 2, True, torch.device("cpu"), torch.float32)
    call = DenoiserCall(torch.randn(2, 4, 8, 8), torch.tensor(500.0), 0, torch.randn(2, 77, tiny_model.unet.config.cross_attention_dim),
                        None, info)
    a, b = unit(controlnet, weight=0.5), unit(tiny_controlnet(tiny_model.unet, seed=9), weight=1.5)
    out = {}
    for name, units in (("a", [a]), ("b", [b]), ("ab", [a, b])):
        hook = ControlNetHook(units)
        hook.pass_started(info)
        out[name] = hook.unet_kwargs(call)
    with torch.no_grad():
        for x, y, both in zip(out["a"]["down_block_additional_residuals"], out["b"]["down_block_additional_residuals"],
                              out["ab"]["down_block_additional_residuals"]):
            assert torch.allclose(x + y, both, atol=1e-6)
        mid = out["a"]["mid_block_additional_residual"] + out["b"]["mid_block_additional_residual"]
        assert torch.allclose(mid, out["ab"]["mid_block_additional_residual"], atol=1e-6)


def _residuals(controlnet, tiny_model, **settings):
    from modules.generation.hooks import DenoiserCall, PassInfo

    torch.manual_seed(0)
    info = PassInfo(64, 64, settings.pop("hires", False), 10, 1, 2, True, torch.device("cpu"), torch.float32)
    call = DenoiserCall(torch.randn(2, 4, 8, 8), torch.tensor(500.0), 0, torch.randn(2, 77, tiny_model.unet.config.cross_attention_dim),
                        None, info)
    hook = ControlNetHook([unit(controlnet, **settings)])
    hook.pass_started(info)
    with torch.no_grad():
        out = hook.unet_kwargs(call)
    return [*out["down_block_additional_residuals"], out["mid_block_additional_residual"]]


def test_control_modes_follow_the_extension(controlnet, tiny_model):
    balanced = _residuals(controlnet, tiny_model)
    prompt = _residuals(controlnet, tiny_model, control_mode="My prompt is more important")
    control = _residuals(controlnet, tiny_model, control_mode="ControlNet is more important")
    n = len(balanced)
    for i, (b, p, c) in enumerate(zip(balanced, prompt, control)):
        scale = 0.825 ** (12 - i)  # soft injection: weaker towards the input, residual i of 13
        assert torch.allclose(p, b * scale, atol=1e-6)
        assert torch.count_nonzero(c[:1]) == 0  # the negative prompt's block gets no control
        assert torch.allclose(c[1:], b[1:] * scale, atol=1e-6)
    assert n <= 13


def test_hires_option_keeps_a_unit_to_one_pass(runner, controlnet):
    hires = {"enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 3, "denoising_strength": 0.5, "steps": 4}
    widths = {}
    for option in ("Both", "Low res only", "High res only"):
        spy = Spy(controlnet)
        generate(runner, [unit(spy, hr_option=option)], **hires)
        widths[option] = {width for _, width in spy.calls}
    assert widths == {"Both": {8, 12}, "Low res only": {8}, "High res only": {12}}


def test_hooks_do_not_change_a_job_without_units(runner):
    assert np.array_equal(generate(runner)[0], generate(runner, [])[0])


def test_only_masked_inpainting_crops_the_map_like_the_picture(controlnet):
    from modules.generation.hooks import PassInfo

    detected = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(detected).rectangle([0, 0, 31, 31], fill="white")
    prepared = PreparedUnit(UnitSettings(module="none", model="tiny", resize_mode="Just Resize"), controlnet, detected, "none")
    whole = PassInfo(64, 64, False, 10, 1, 2, True, torch.device("cpu"), torch.float32, img2img=True)
    cropped = PassInfo(64, 64, False, 10, 1, 2, True, torch.device("cpu"), torch.float32, img2img=True, crop=((64, 64), (0, 0, 32, 32)))
    assert abs(float(prepared.condition(whole).mean()) - 0.25) < 0.02
    assert float(prepared.condition(cropped).mean()) > 0.98


def test_img2img_inpainting_with_a_unit_runs_only_masked(runner, controlnet):
    from modules.generation.params import Img2ImgParams
    from modules.generation.runner import InitImages

    picture = Image.new("RGB", (64, 64), "blue")
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle([8, 8, 30, 30], fill=255)
    params = Img2ImgParams(prompt="a red square", width=64, height=64, steps=6, seed=5, denoising_strength=0.8, inpaint_full_res=True)
    spy = Spy(controlnet)
    hooks = Hooks([ControlNetHook([unit(spy)])])
    out = [im for b in runner.img2img(params, InitImages((picture,), mask), 5, hooks=hooks) for im in b.images]
    plain = [im for b in runner.img2img(params, InitImages((picture,), mask), 5) for im in b.images]
    assert spy.calls and len(out) == 1
    a, b = np.asarray(out[0], dtype=np.int16), np.asarray(plain[0], dtype=np.int16)
    assert np.abs(a - b)[40:, 40:].max() <= 2  # outside the mask the picture stays the original's
    assert np.abs(a - b)[8:30, 8:30].mean() > 0  # inside, the unit steered
