"""The SDXL refiner (A1111's Refiner / Switch at) and the hires checkpoint, on a tiny SDXL base and
a tiny refiner with the released files' key layouts (reduced width), each loaded from an A1111
single file through a side-car config folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel
from transformers import CLIPTextModelWithProjection

from modules.generation.params import GenerationParams, Img2ImgParams, infotext_fields
from modules.generation.runner import InitImages, Runner
from modules.generation.text_encoding import EncodingOptions, PromptEncoder
from modules.models.ldm_keys import to_ldm_state_dict
from modules.models.loader import load_checkpoint
from modules.outputs.infotext import format_infotext
from modules.outputs.paste import params_from_infotext
from tests.conftest import CONFIGS
from tests.models.test_loader import SCHEDULER, VAE, build_models, clip_config, save_single_file, write_config_folder

CPU = torch.device("cpu")
# The refiner's layout at reduced width: four levels, attention on the middle two, OpenCLIP bigG
# as its only text encoder (cross-attention width = bigG's), 5 time ids (size, crop, aesthetic score).
REFINER_UNET = {
    "block_out_channels": [32, 32, 32, 32],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 2,
    "transformer_layers_per_block": 1,
    "attention_head_dim": [2, 2, 2, 2],
    "cross_attention_dim": 48,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 40 + 5 * 8,
    "sample_size": 8,
}
BASE_TITLE, REFINER_TITLE = "xl-base", "xl-refiner"


def build_refiner(seed: int = 7) -> dict:
    torch.manual_seed(seed)
    return {
        "unet": UNet2DConditionModel(**REFINER_UNET).eval(),
        "vae": AutoencoderKL(**VAE).eval(),
        "text_encoder": None,
        # ten layers, as diffusers' own detection looks for the tenth resblock
        "text_encoder_2": CLIPTextModelWithProjection(clip_config(48, "gelu", layers=10, projection=40)).eval(),
    }


def write_refiner_config(folder: Path, models: dict) -> None:
    """A config-only folder as configs/sdxl-refiner is, at the tiny model's sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    index = json.loads((CONFIGS / "sdxl-refiner" / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps(index))
    models["unet"].save_config(folder / "unet")
    models["vae"].save_config(folder / "vae")
    models["text_encoder_2"].config.save_pretrained(folder / "text_encoder_2")
    EulerDiscreteScheduler.from_config(SCHEDULER).save_config(folder / "scheduler")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("refiner")
    base = build_models("sdxl", seed=3)
    save_single_file(folder / f"{BASE_TITLE}.safetensors", to_ldm_state_dict("sdxl", **base))
    write_config_folder(folder / BASE_TITLE, "sdxl", base)
    refiner = build_refiner()
    save_single_file(folder / f"{REFINER_TITLE}.safetensors", to_ldm_state_dict("sdxl-refiner", **refiner))
    write_refiner_config(folder / REFINER_TITLE, refiner)
    return folder


def load(path: Path):
    return load_checkpoint(path, configs_dir=CONFIGS, device=CPU, dtype=torch.float32, vae_dtype=torch.float32)


@pytest.fixture(scope="module")
def models(files):
    return load(files / f"{BASE_TITLE}.safetensors"), load(files / f"{REFINER_TITLE}.safetensors")


@pytest.fixture(scope="module")
def runners(models):
    base, refiner = Runner(models[0]), Runner(models[1])
    base.checkpoints = lambda name: {REFINER_TITLE: (f"{REFINER_TITLE} [0123456789]", refiner), BASE_TITLE: (BASE_TITLE, base)}[name]
    return base, refiner


class Spy:
    """Records which UNet each model call went to."""

    def __init__(self, **unets):
        self.calls: list[str] = []
        self.handles = [unet.register_forward_pre_hook(lambda m, a, name=name: self.calls.append(name)) for name, unet in unets.items()]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def pixels(batches) -> np.ndarray:
    return np.asarray([im for b in batches for im in b.images][0], dtype=np.int16)


def params(**values) -> GenerationParams:
    return GenerationParams.create(**{"prompt": "a red square", "negative_prompt": "blurry", "width": 64, "height": 64, "steps": 10, "seed": 5,
                                      **values})


def test_the_refiner_loads_from_its_single_file_with_only_openclip_bigg(files, models):
    refiner = models[1]
    original = build_refiner()
    assert refiner.arch == "sdxl-refiner" and refiner.family == "sd"
    assert refiner.text_encoder is None and refiner.tokenizer is None
    assert refiner.tokenizer_2.pad_token == "!"
    for name in ("unet", "text_encoder_2"):
        expected, actual = original[name].state_dict(), getattr(refiner, name).state_dict()
        assert all(torch.equal(actual[k], v) for k, v in expected.items())
    assert refiner.extra["force_zeros_for_empty_prompt"] is False  # the refiner's model_index says so


def test_refiner_prompts_and_aesthetic_time_ids_match_diffusers_img2img_pipeline(models):
    """What the refiner is conditioned on equals what StableDiffusionXLImg2ImgPipeline feeds it."""
    refiner = models[1]
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=refiner.vae, text_encoder=None, tokenizer=None, text_encoder_2=refiner.text_encoder_2, tokenizer_2=refiner.tokenizer_2,
        unet=refiner.unet, scheduler=EulerDiscreteScheduler.from_config(SCHEDULER), requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt("a red square", negative_prompt="", do_classifier_free_guidance=True)
    encoder = PromptEncoder(refiner)
    ours, ours_negative = encoder.encode("a red square", EncodingOptions()), encoder.encode("", EncodingOptions(), negative=True)
    assert torch.allclose(ours.embeds, embeds, atol=1e-6) and torch.allclose(ours.pooled, pooled, atol=1e-6)
    assert torch.allclose(ours_negative.embeds, negative, atol=1e-6) and torch.allclose(ours_negative.pooled, negative_pooled, atol=1e-6)

    # A1111's sdxl_refiner_high/low_aesthetic_score settings, which jobs carry (defaults 6 and 2.5)
    add, add_negative = pipe._get_add_time_ids((64, 64), (0, 0), (64, 64), 7.0, 1.5, (64, 64), (0, 0), (64, 64), torch.float32, 40)
    runner = Runner(refiner)
    p = params(sdxl_refiner_high_aesthetic_score=7.0, sdxl_refiner_low_aesthetic_score=1.5)
    time_ids = runner._time_ids(runner._pass(p, runner.prepare(p).first), torch.cat([negative_pooled, pooled]), 1)
    assert torch.equal(time_ids, torch.cat([add_negative, add]))


@pytest.fixture(scope="module")
def plain(models, runners) -> np.ndarray:
    """The base model alone: Euler, 10 uniform steps."""
    with Spy(base=models[0].unet, refiner=models[1].unet) as spy:
        image = pixels(runners[0].txt2img(params(sampler_name="Euler", scheduler="Uniform"), 5))
    assert spy.calls == ["base"] * 10
    return image


@pytest.mark.parametrize("sampler, schedule, on_base, on_refiner", [
    ("Euler", "Uniform", 8, 2),  # diffusers' loop. t = 999, 888, ..., 111, 0: t = 111 is the first with 0.8 behind it
    ("DPM++ 2M SDE", "Karras", 6, 4),  # our sigma loop. Karras' sigmas lie nearest t = 999, 916, 815, 687, 523, 327, 146, 41, 7, 0
    ("DDIM CFG++", "Automatic", 8, 1),  # A1111's timestep loop: t = 901, 801, ..., 101
])
def test_the_refiner_takes_over_at_the_switch_in_the_same_loop(models, runners, plain, sampler, schedule, on_base, on_refiner):
    """A1111's rule: the refiner makes every model call from the first whose timestep has
    `Switch at` of the model's 1000 behind it ((999 - t) / 1000 >= 0.8), on each engine."""
    base, _ = runners
    with Spy(base=models[0].unet, refiner=models[1].unet) as spy:
        refined = pixels(base.txt2img(params(sampler_name=sampler, scheduler=schedule, refiner_checkpoint=REFINER_TITLE), 5))
    assert spy.calls == ["base"] * on_base + ["refiner"] * on_refiner
    if sampler == "Euler":
        assert np.abs(refined - plain).max() > 0  # the refiner's two steps changed the picture


def test_a1111s_older_rule_counts_sampling_steps_and_says_so(models, runners):
    base, _ = runners
    p = params(sampler_name="DPM++ 2M SDE", scheduler="Karras", refiner_checkpoint=REFINER_TITLE, refiner_switch_by_sample_steps=True)
    job = base.prepare(p)
    with Spy(base=models[0].unet, refiner=models[1].unet) as spy:
        list(base.txt2img(p, 5, prompts=job))
    assert spy.calls == ["base"] * 8 + ["refiner"] * 2  # call 8 of 10 (by timesteps: 6 of 10, above)
    assert ("Refiner switch by sampling steps", "True") in base.infotext_extras(p, job)


def test_a_switch_at_one_never_comes(runners, plain):
    base, _ = runners
    p = params(sampler_name="Euler", scheduler="Uniform", refiner_checkpoint=REFINER_TITLE, refiner_switch_at=1.0)
    job = base.prepare(p)
    assert np.array_equal(pixels(base.txt2img(p, 5, prompts=job)), plain)
    assert job.refiner is None and ("Refiner", None) in base.infotext_extras(p, job)


def test_infotext_names_the_refiner_as_a1111_and_pastes_back(runners):
    base, _ = runners
    p = params(steps=3, refiner_checkpoint=REFINER_TITLE, refiner_switch_at=0.8)
    job = base.prepare(p)
    list(base.txt2img(p, 5, prompts=job))
    extras = base.infotext_extras(p, job)
    text = format_infotext(p.prompt, p.negative_prompt, infotext_fields(p, seed=5, model_hash=None, model_name="xl-base", version="v", extras=extras))
    assert f"Refiner: {REFINER_TITLE} [0123456789], Refiner switch at: 0.8" in text
    pasted = params_from_infotext(text)
    assert pasted.values["refiner_checkpoint"] == f"{REFINER_TITLE} [0123456789]" and pasted.values["refiner_switch_at"] == 0.8
    assert "Refiner" not in pasted.skipped
    assert params_from_infotext(text.replace(f", Refiner: {REFINER_TITLE} [0123456789], Refiner switch at: 0.8", "")).values["refiner_checkpoint"] == "None"


def test_img2img_and_hires_fix_switch_in_their_own_pass(models, runners):
    base, _ = runners
    init = InitImages((pixels(base.txt2img(params(steps=2), 1)).astype(np.uint8),))
    from PIL import Image

    init = InitImages((Image.fromarray(init.images[0]),))
    i2i = Img2ImgParams.create(prompt="a red square", width=64, height=64, steps=10, seed=5, denoising_strength=0.5,
                               sampler_name="Euler", scheduler="Uniform", refiner_checkpoint=REFINER_TITLE)
    with Spy(base=models[0].unet, refiner=models[1].unet) as spy:
        list(base.img2img(i2i, init, 5))
    # Euler runs diffusers' img2img cut, the last 10 x 0.5 steps: t = 444, 333, 222 on the base, 111, 0 on the refiner
    assert spy.calls == ["base"] * 3 + ["refiner"] * 2

    hires = params(steps=4, sampler_name="Euler", scheduler="Uniform", enable_hr=True, hr_scale=1.5, hr_second_pass_steps=4,
                   denoising_strength=0.5, refiner_checkpoint=REFINER_TITLE)
    with Spy(base=models[0].unet, refiner=models[1].unet) as spy:
        list(base.txt2img(hires, 5))
    # The first pass stays on the base (A1111's hires_fix_refiner_pass "second pass"). The hires pass runs the last 4 of
    # 4 / 0.5 = 8 steps, t = 428, 285 on the base, 143, 0 on the refiner.
    assert spy.calls == ["base"] * 4 + ["base"] * 2 + ["refiner"] * 2

    # "first pass": the refiner takes over in the first pass and, as in A1111, the hires pass runs on it
    first = hires.model_copy(update={"hires_fix_refiner_pass": "first pass"})
    job = base.prepare(first)
    with Spy(base=models[0].unet, refiner=models[1].unet) as spy:
        list(base.txt2img(first, 5, prompts=job))
    assert spy.calls == ["base"] * 3 + ["refiner"] + ["refiner"] * 4  # t = 999, 666, 333 | 0 | the hires pass
    assert ("Hires refiner", "first pass") in base.infotext_extras(first, job)


def test_the_hires_pass_runs_on_the_hires_checkpoint(models, runners):
    base, _ = runners
    p = params(steps=2, enable_hr=True, hr_scale=1.5, hr_checkpoint_name=REFINER_TITLE)
    with Spy(base=models[0].unet, refiner=models[1].unet) as spy:
        list(base.txt2img(p, 5))
    assert spy.calls[:2] == ["base"] * 2 and set(spy.calls[2:]) == {"refiner"}
    fields = dict(infotext_fields(p.model_copy(update={"hr_checkpoint_name": "xl-refiner [0123456789]"}), seed=5, model_hash=None,
                                  model_name="x", version="v"))
    assert fields["Hires checkpoint"] == "xl-refiner [0123456789]"
    assert dict(infotext_fields(params(enable_hr=True, hr_scale=1.5), seed=5, model_hash=None, model_name="x", version="v"))["Hires checkpoint"] is None


def test_a_refiner_of_another_latent_space_is_refused(models):
    from dataclasses import replace

    base = Runner(models[0])
    sixteen = replace(models[1], vae=AutoencoderKL(**{**VAE, "latent_channels": 16}))  # as Flux's and SD 3's latents are
    base.checkpoints = lambda name: ("other [abc]", Runner(sixteen))
    with pytest.raises(ValueError, match="another latent space"):
        list(base.txt2img(params(refiner_checkpoint="other"), 5))


def test_the_api_takes_a1111s_refiner_fields_and_refuses_a_refiner_it_cannot_use(files, tmp_path, tiny_checkpoint):
    import shutil

    from tests.servers import data_dir_with_tiny_model, in_process_app

    data = data_dir_with_tiny_model(tmp_path / "data", tiny_checkpoint)
    ckpts = data / "models" / "Stable-diffusion"
    for name in (BASE_TITLE, REFINER_TITLE):
        shutil.copy(files / f"{name}.safetensors", ckpts)
        shutil.copytree(files / name, ckpts / name)
    body = {"prompt": "a red square", "width": 64, "height": 64, "steps": 4, "sampler_name": "Euler", "seed": 5}
    with in_process_app(data, "--api", "--nowebui", "--disable-console-progressbars", checkpoint=ckpts / f"{BASE_TITLE}.safetensors") as (_, client):
        answer = client.post("/sdapi/v1/txt2img", json={**body, "refiner_checkpoint": REFINER_TITLE, "refiner_switch_at": 0.5})
        assert answer.status_code == 200, answer.text
        infotext = json.loads(answer.json()["info"])["infotexts"][0]
        assert f"Refiner: {REFINER_TITLE} [" in infotext and "Refiner switch at: 0.5" in infotext
        missing = client.post("/sdapi/v1/txt2img", json={**body, "refiner_checkpoint": "no-such-refiner"})
        assert missing.status_code == 400 and "Refiner" in missing.json()["detail"] and "not found" in missing.json()["detail"]
        other = client.post("/sdapi/v1/txt2img", json={**body, "refiner_checkpoint": tiny_checkpoint.stem})
        assert other.status_code == 400 and "latent space" in other.json()["detail"], other.text


def test_on_an_offloading_plan_the_two_models_take_turns_so_the_idle_one_waits_in_ram(files):
    """--medvram's turns are shared: once the refiner's parts run, the base's UNet has gone home."""
    from modules.generation.offload import leave, offload

    base, refiner = load(files / f"{BASE_TITLE}.safetensors"), load(files / f"{REFINER_TITLE}.safetensors")
    offload(base, CPU, "model")
    offload(refiner, CPU, "model", beside=base)
    turns = base.extra["offload_turns"]
    assert refiner.extra["offload_turns"] is turns
    runner, refining = Runner(base), Runner(refiner)
    runner.checkpoints = lambda name: ("r [0]", refining)
    base_resident = []
    refiner.unet.register_forward_pre_hook(lambda m, a: base_resident.append(id(base.unet) in turns.resident))
    list(runner.txt2img(params(steps=3, sampler_name="Euler", scheduler="Uniform", refiner_checkpoint="r", refiner_switch_at=0.5), 5))
    assert base_resident == [False, False]  # t = 499 and 0 ran on the refiner, the base's UNet waiting on the CPU side
    leave(refiner)
    assert all(part not in (refiner.unet, refiner.vae, refiner.text_encoder_2) for part in turns.parts)


def test_tiling_makes_the_refiner_seamless_too(models, runners):
    base, _ = runners
    modes = []
    handle = models[1].unet.register_forward_pre_hook(lambda m, a: modes.append(m.conv_in.padding_mode))
    try:
        list(base.txt2img(params(steps=3, sampler_name="Euler", scheduler="Uniform", tiling=True, refiner_checkpoint=REFINER_TITLE,
                                 refiner_switch_at=0.5), 5))
    finally:
        handle.remove()
    assert modes == ["circular", "circular"] and models[1].unet.conv_in.padding_mode == "zeros"
