"""Infotext back to parameters: every field the core writes comes back, A1111's own strings
read, and what cannot be applied is reported rather than raised."""

import pytest

from modules.generation import samplers

from modules.generation.params import GenerationParams, Img2ImgParams, infotext_fields
from modules.outputs.infotext import format_infotext
from modules.outputs.paste import params_from_infotext

ROUND_TRIPS = [
    GenerationParams.create(prompt="a cat, (sitting:1.2)\nsecond line", negative_prompt="dog, blurry", steps=33, sampler_name="Euler a",
                            cfg_scale=6.5, seed=4242, width=640, height=448, clip_skip=2),
    GenerationParams.create(prompt="x", sampler_name="DPM++ 2M", scheduler="Exponential", enable_hr=True, hr_scale=1.5, hr_upscaler="Lanczos",
                            hr_second_pass_steps=12, denoising_strength=0.45, hr_sampler_name="Euler", hr_scheduler="Karras",
                            hr_prompt="x, sharp: detailed", hr_negative_prompt="soft", emphasis="No norm"),
    GenerationParams.create(prompt="y", enable_hr=True, hr_resize_x=1024, hr_resize_y=0, hr_upscaler="Latent (bicubic)"),
    GenerationParams.create(prompt="a face", restore_faces=True),
]


def written(params, masked=False):
    fields = infotext_fields(params, seed=params.seed, model_hash="abcdef0123", model_name="m", version="v1", masked=masked,
                             extras=[("Emphasis", params.emphasis if params.emphasis != "Original" else None)])
    return format_infotext(params.prompt, params.negative_prompt, fields)


@pytest.mark.parametrize("params", ROUND_TRIPS)
def test_every_field_the_core_writes_comes_back(params):
    pasted = params_from_infotext(written(params))
    assert not pasted.skipped, pasted.report()
    again = GenerationParams.create(**pasted.values)
    assert again == params
    assert pasted.settings == {"sd_model_checkpoint": "abcdef0123"}


def test_img2img_mask_fields_come_back():
    params = Img2ImgParams.create(prompt="z", denoising_strength=0.6, mask_blur=8, inpainting_mask_invert=1, inpainting_fill=3,
                                  inpaint_full_res=True, inpaint_full_res_padding=48, seed=5)
    pasted = params_from_infotext(written(params, masked=True), img2img=True)
    assert not pasted.skipped, pasted.report()
    assert Img2ImgParams.create(**pasted.values) == params


def test_a1111_written_infotext_reads():
    text = (
        "masterpiece, 1girl, (red hair:1.2) <lora:detail:0.6>\n"
        "Negative prompt: lowres, bad anatomy\n"
        "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7.0, Seed: 3141592653, Size: 512x768, Model hash: 6ce0161689, "
        "Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.5, "
        "Clip skip: 2, Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent, Lora hashes: \"detail: 0123456789ab\", "
        "TI hashes: \"easynegative: c74b4e810b03\", Image CFG scale: 1.5, Version: v1.10.1"
    )
    pasted = params_from_infotext(text)
    params = GenerationParams.create(**pasted.values)
    assert params.sampler_name == "DPM++ 2M"  # the old combined name, split (Karras is its Automatic)
    assert samplers.resolve(params.sampler_name, params.scheduler) == samplers.resolve("DPM++ 2M", "Karras")
    assert (params.width, params.height, params.seed, params.cfg_scale, params.clip_skip) == (512, 768, 3141592653, 7.0, 2)
    assert params.enable_hr and params.hr_scale == 2 and params.hr_second_pass_steps == 10 and params.denoising_strength == 0.5
    assert params.prompt.endswith("<lora:detail:0.6>")
    assert pasted.settings["sd_vae"] == "735e4c3a44"
    assert list(pasted.skipped) == ["Image CFG scale"]


@pytest.mark.parametrize("text", ["", "just a prompt", "a: b, c: d", "\x00\x01garbage\nSteps: many, Seed: x, CFG scale: big, Size: 0x0", None])
def test_garbage_never_raises_and_bad_values_are_reported(text):
    pasted = params_from_infotext(text)
    GenerationParams.create(**pasted.values)  # whatever was kept is valid
    if text and "Steps: many" in text:
        assert {"Steps", "Seed", "CFG scale", "Size (width)"} <= set(pasted.skipped)


def test_face_restoration_turns_restore_faces_on_and_its_absence_off():
    params = GenerationParams.create(prompt="a face", seed=7, restore_faces=True, face_restoration_model="GFPGAN")
    text = written(params)
    assert "Seed: 7, Face restoration: GFPGAN, Size: 512x512" in text
    assert params_from_infotext(text).values["restore_faces"] is True
    assert params_from_infotext(text.replace("Face restoration: GFPGAN, ", "")).values["restore_faces"] is False
    assert params_from_infotext("x\nSteps: 20, Face restoration: CodeFormer, Seed: 1", img2img=True).values["restore_faces"] is True
