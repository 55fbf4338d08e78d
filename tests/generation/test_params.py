import pytest

from modules.generation.params import GenerationParams, Img2ImgParams, infotext_fields


def test_ui_defaults_are_a1111s():
    p = GenerationParams()
    assert (p.sampler_name, p.scheduler, p.steps, p.width, p.height, p.cfg_scale, p.seed, p.n_iter, p.batch_size) == (
        "DPM++ 2M", "Automatic", 20, 512, 512, 7.0, -1, 1, 1)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"width": 65}, "Width: must be a multiple of 8 from 64 to 2048, got 65"),
        ({"height": 4096}, "Height: must be a multiple of 8 from 64 to 2048, got 4096"),
        ({"height": 56}, "Height: must be a multiple of 8"),
        ({"steps": 0}, "Sampling steps"),
        ({"steps": 151}, "Sampling steps"),
        ({"sampler_name": "Nope"}, "Sampler not found: 'Nope'"),
        ({"batch_size": 9}, "Batch size"),
        ({"cfg_scale": 31}, "CFG Scale"),
        ({"frobnicate": 1}, "frobnicate: is not a known parameter"),
    ],
)
def test_bad_input_gives_one_readable_message(values, message):
    with pytest.raises(ValueError) as err:
        GenerationParams.create(**values)
    assert message in str(err.value)
    assert "pydantic" not in str(err.value)


def test_none_means_default():
    assert GenerationParams.create(steps=None, sampler_name=None).steps == 20


def test_infotext_fields_in_a1111_order():
    p = GenerationParams.create(prompt="x", steps=20, cfg_scale=7, width=512, height=768)
    fields = infotext_fields(p, seed=5, model_hash="abcdef0123", model_name="m", version="v1")
    assert fields == [
        ("Steps", 20), ("Sampler", "DPM++ 2M"), ("Schedule type", "Karras"), ("CFG scale", "7"), ("Seed", 5), ("Face restoration", None),
        ("Size", "512x768"), ("Model hash", "abcdef0123"), ("Model", "m"), ("FP8 weight", None), ("VAE hash", None), ("VAE", None),
        ("Variation seed", None), ("Variation seed strength", None), ("Seed resize from", None),
        ("Denoising strength", None), ("Clip skip", None), ("ENSD", None), ("Token merging ratio", None), ("Token merging ratio hr", None),
        ("RNG", None), ("Tiling", None), ("Schedule min sigma", None), ("Schedule max sigma", None), ("Version", "v1"),
    ]
    p2 = GenerationParams.create(cfg_scale=7.5, clip_skip=2, sampler_name="Euler a")
    f2 = dict(infotext_fields(p2, seed=1, model_hash=None, model_name=None, version="v1"))
    assert f2["CFG scale"] == "7.5" and f2["Clip skip"] == 2 and f2["Schedule type"] == "Automatic"


def test_img2img_defaults_names_and_limits():
    p = Img2ImgParams()
    assert (p.denoising_strength, p.resize_mode, p.mask_blur, p.inpainting_fill, p.inpaint_full_res, p.inpaint_full_res_padding) == (0.75, 0, 4, 1, False, 32)
    named = Img2ImgParams.create(resize_mode="Crop and resize", inpainting_fill="latent noise", inpaint_full_res="Only masked", inpainting_mask_invert="Inpaint not masked")
    assert (named.resize_mode, named.inpainting_fill, named.inpaint_full_res, named.inpainting_mask_invert) == (1, 2, True, 1)
    for values, message in (
        ({"denoising_strength": 1.5}, "Denoising strength: Input should be less than or equal to 1"),
        ({"denoising_strength": -0.1}, "Denoising strength: Input should be greater than or equal to 0"),
        ({"resize_mode": "Zoom"}, "Resize mode: must be one of: Just resize, Crop and resize"),
        ({"mask_blur": 65}, "Mask blur"),
        ({"enable_hr": True}, "Hires. fix is a txt2img option"),
    ):
        with pytest.raises(ValueError, match=message.replace(".", r"\.")):
            Img2ImgParams.create(**values)


def test_hires_size_and_infotext():
    def size(**values):
        return GenerationParams.create(width=512, height=768, enable_hr=True, **values).hires_size()

    assert size() == (1024, 1536)
    assert size(hr_scale=1.3) == (664, 992)  # floored to multiples of 8
    assert size(hr_resize_x=1024) == (1024, 1536)  # one side: keep the aspect ratio
    assert size(hr_resize_x=1000, hr_resize_y=1000) == (1000, 1000)  # both: crop to fill
    with pytest.raises(ValueError, match="Hires upscaler 'Magic' not found"):
        GenerationParams.create(enable_hr=True, hr_upscaler="Magic")
    p = GenerationParams.create(prompt="x", enable_hr=True, hr_resize_x=1024, hr_second_pass_steps=10, hr_prompt="y", denoising_strength=0.5)
    fields = dict(infotext_fields(p, seed=1, model_hash=None, model_name=None, version="v"))
    assert fields["Denoising strength"] == "0.5" and fields["Hires resize"] == "1024x0" and fields["Hires upscale"] is None
    assert (fields["Hires steps"], fields["Hires upscaler"], fields["Hires prompt"]) == (10, "Latent", "y")
    plain = dict(infotext_fields(GenerationParams.create(), seed=1, model_hash=None, model_name=None, version="v"))
    assert plain["Denoising strength"] is None and "Hires upscaler" not in plain
