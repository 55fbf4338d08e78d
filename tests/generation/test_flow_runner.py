"""Flux (dev, schnell) and SD 3 through our core against diffusers' own pipelines (tiny, 64 px, CPU)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxImg2ImgPipeline, FluxPipeline, FluxTransformer2DModel,
    SD3Transformer2DModel, StableDiffusion3Img2ImgPipeline, StableDiffusion3Pipeline,
)
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from modules.generation.control import RunControl
from modules.generation.flow_runner import FlowRunner, runner_for
from modules.generation.params import GenerationParams, Img2ImgParams
from modules.generation.runner import InitImages, PromptSetup
from modules.models.loaded import LoadedModel
from modules.models.loader import build_tokenizer
from tests.conftest import CONFIGS
from tests.models.test_flow_loader import tiny_flux_split  # noqa: F401  (autouse: diffusers' Flux converter at the tiny width)

CPU = torch.device("cpu")
FLUX_SCHEDULER = {"dev": dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                              max_image_seq_len=4096),
                  "schnell": dict(shift=1.0, use_dynamic_shifting=False)}


def _t5_tokenizer():
    """A tiny T5 tokenizer made here (word level, T5's special ids), since none can be downloaded."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    words = ["<pad>", "</s>", "<unk>", "a", "red", "square", "blue", "circle", "cat", "dog", "on", "green", "blurry", "sky"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=core, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", model_max_length=512)


def _clip(width: int, projection: bool, seed: int):
    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=2,
                            max_position_embeddings=77, projection_dim=width)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _t5(seed: int):
    torch.manual_seed(seed)
    config = T5Config(vocab_size=32, d_model=48, d_kv=8, d_ff=64, num_layers=1, num_heads=2, feed_forward_proj="gated-gelu",
                      is_gated_act=True, dense_act_fn="gelu_new", tie_word_embeddings=False)
    return T5EncoderModel(config).eval()


def _vae(scaling: float, shift: float):
    torch.manual_seed(1)
    return AutoencoderKL(block_out_channels=[16, 16, 16, 16], down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1, latent_channels=16, norm_num_groups=8,
                         scaling_factor=scaling, shift_factor=shift, use_quant_conv=False, use_post_quant_conv=False).eval()


def flux_model(variant: str) -> LoadedModel:
    torch.manual_seed(2)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                         num_attention_heads=2, joint_attention_dim=48, pooled_projection_dim=32,
                                         guidance_embeds=variant == "dev", axes_dims_rope=(4, 6, 6)).eval()
    scheduler = dict(FlowMatchEulerDiscreteScheduler.from_config(FLUX_SCHEDULER[variant]).config)
    return LoadedModel(f"flux-{variant}", transformer, _vae(0.3611, 0.1159), _clip(32, False, 3), build_tokenizer(CONFIGS), scheduler, CPU,
                       torch.float32, torch.float32, text_encoder_2=_t5(4), tokenizer_2=_t5_tokenizer())


def sd3_model() -> LoadedModel:
    torch.manual_seed(2)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=1, attention_head_dim=16,
                                        num_attention_heads=2, joint_attention_dim=48, caption_projection_dim=32,
                                        pooled_projection_dim=56, pos_embed_max_size=16).eval()
    scheduler = dict(FlowMatchEulerDiscreteScheduler.from_config({"shift": 3.0}).config)
    return LoadedModel("sd35-medium", transformer, _vae(1.5305, 0.0609), _clip(32, True, 3), build_tokenizer(CONFIGS), scheduler, CPU,
                       torch.float32, torch.float32, text_encoder_2=_clip(24, True, 5), tokenizer_2=build_tokenizer(CONFIGS, pad_token="!"),
                       text_encoder_3=_t5(4), tokenizer_3=_t5_tokenizer())


@pytest.fixture(scope="module")
def models():
    return {"dev": flux_model("dev"), "schnell": flux_model("schnell"), "sd3": sd3_model()}


def _pipe(model: LoadedModel, img2img: bool = False):
    common = dict(scheduler=FlowMatchEulerDiscreteScheduler.from_config(model.scheduler_config), vae=model.vae, text_encoder=model.text_encoder,
                  tokenizer=model.tokenizer, text_encoder_2=model.text_encoder_2, tokenizer_2=model.tokenizer_2, transformer=model.unet)
    if model.arch.startswith("flux"):
        pipe = (FluxImg2ImgPipeline if img2img else FluxPipeline)(**common)
    else:
        pipe = (StableDiffusion3Img2ImgPipeline if img2img else StableDiffusion3Pipeline)(
            **common, text_encoder_3=model.text_encoder_3, tokenizer_3=model.tokenizer_3)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _close(ours: Image.Image, ref: Image.Image) -> int:
    return int(np.abs(np.asarray(ours, dtype=np.int16) - np.asarray(ref, dtype=np.int16)).max())


def _params(**values) -> GenerationParams:
    base = dict(prompt="a red square", sampler_name="Euler", width=64, height=64, steps=3, seed=5, cfg_scale=1.0)
    return GenerationParams.create(**{**base, **values})


@pytest.mark.parametrize("name", ["dev", "schnell"])
def test_flux_txt2img_equals_the_flux_pipeline_per_image_seed(models, name):
    m = models[name]
    params = _params(batch_size=2, distilled_cfg_scale=4.0)
    runner = runner_for(m)
    assert isinstance(runner, FlowRunner)
    ours = [im for b in runner.txt2img(params, 5) for im in b.images]
    ref = _pipe(m)("a red square", num_inference_steps=3, guidance_scale=4.0, width=64, height=64,
                   generator=[torch.Generator().manual_seed(s) for s in (5, 6)], num_images_per_prompt=2).images
    assert [_close(a, b) for a, b in zip(ours, ref)] == [0, 0] or max(_close(a, b) for a, b in zip(ours, ref)) <= 1
    assert _close(ours[0], ours[1]) > 1  # each image its own seed


def test_flux_true_cfg_with_a_negative_prompt_equals_the_pipeline(models):
    m = models["dev"]
    params = _params(negative_prompt="blurry", cfg_scale=3.0)
    ours = [im for b in runner_for(m).txt2img(params, 7) for im in b.images]
    ref = _pipe(m)("a red square", negative_prompt="blurry", true_cfg_scale=3.0, guidance_scale=3.5, num_inference_steps=3, width=64,
                   height=64, generator=[torch.Generator().manual_seed(7)]).images
    assert _close(ours[0], ref[0]) <= 1


def test_sd3_txt2img_with_cfg_and_weights_stripped_for_t5(models):
    m = models["sd3"]
    params = _params(negative_prompt="blurry", cfg_scale=5.0)
    ours = [im for b in runner_for(m).txt2img(params, 9) for im in b.images]
    ref = _pipe(m)("a red square", negative_prompt="blurry", guidance_scale=5.0, num_inference_steps=3, width=64, height=64,
                   generator=[torch.Generator().manual_seed(9)]).images
    assert _close(ours[0], ref[0]) <= 1
    from modules.generation.text_encoding import EncodingOptions

    text = runner_for(m).text
    weighted = text.encode("a (red:1.5) square BREAK sky", EncodingOptions(emphasis="No norm"))
    plain = text.encode("a red square", EncodingOptions(emphasis="No norm"))
    assert weighted.clip_chunks == 2 and torch.allclose(weighted.embeds[0, 2, :56], plain.embeds[0, 2, :56] * 1.5, atol=1e-5)
    t5_plain = text.encode("a red square sky", EncodingOptions()).embeds[:, -256:]
    assert torch.equal(weighted.embeds[:, -256:], t5_plain)  # T5 reads the words without weights or BREAK


@pytest.mark.parametrize("name", ["dev", "sd3"])
def test_img2img_equals_the_img2img_pipeline(models, name):
    m = models[name]
    runner = runner_for(m)
    picture = Image.fromarray((np.indices((64, 64)).sum(0) * 2 % 256).astype(np.uint8)).convert("RGB")
    params = Img2ImgParams(prompt="a blue circle", sampler_name="Euler", width=64, height=64, steps=4, seed=3, cfg_scale=1.0,
                           denoising_strength=0.6)
    ours = [im for b in runner.img2img(params, InitImages((picture,)), 3) for im in b.images]
    with torch.no_grad():
        init = runner.encode([picture])
    ref = _pipe(m, img2img=True)("a blue circle", image=init, strength=0.6, num_inference_steps=4, guidance_scale=3.5 if name == "dev" else 1.0,
                                 width=64, height=64, generator=[torch.Generator().manual_seed(3)]).images
    assert _close(ours[0], ref[0]) <= 1


def test_interrupt_returns_the_last_estimate_as_a_picture(models):
    control = RunControl()
    steps = []

    def on_step(info):
        steps.append(info.step)
        control.interrupt()

    control.on_step = on_step
    batches = list(runner_for(models["schnell"]).txt2img(_params(steps=4, n_iter=2), 1, control))
    assert len(batches) == 1 and batches[0].partial and steps == [1]
    assert batches[0].images[0].size == (64, 64)


def test_infotext_says_what_ran_and_pastes_back(models):
    from modules.outputs.infotext import format_infotext
    from modules.outputs.paste import params_from_infotext

    params = _params(distilled_cfg_scale=2.5, shift=2.0, scheduler="Karras")
    runner = runner_for(models["dev"])
    job = runner.prepare(params)
    extras = dict(runner.infotext_extras(params, job))
    assert extras["Distilled CFG Scale"] == "2.5" and extras["Shift"] == "2"
    schnell = dict(runner_for(models["schnell"]).infotext_extras(params, job))
    assert schnell["Distilled CFG Scale"] is None  # schnell has no guidance embedding
    from modules.generation.params import infotext_fields

    text = format_infotext(params.prompt, "", infotext_fields(params, seed=5, model_hash=None, model_name="f", version="v",
                                                               extras=list(extras.items())))
    assert "Schedule type: Karras" in text and "Sampler: Euler" in text
    pasted = params_from_infotext(text).values
    assert pasted["distilled_cfg_scale"] == 2.5 and pasted["shift"] == 2.0 and pasted["scheduler"] == "Karras"
    # shift changes the schedule, so the picture
    a = next(iter(runner.txt2img(_params(), 2))).images[0]
    b = next(iter(runner.txt2img(_params(shift=6.0), 2))).images[0]
    assert _close(a, b) > 1


def test_samplers_flux_cannot_run_are_refused_with_what_it_accepts(models):
    runner = runner_for(models["dev"])
    with pytest.raises(ValueError, match="Euler"):
        list(runner.txt2img(_params(sampler_name="DPM++ 2M SDE"), 1))
    dpm = next(iter(runner.txt2img(_params(sampler_name="DPM++ 2M", scheduler="Simple"), 1))).images[0]
    assert dpm.size == (64, 64)
    # A1111's default pair (DPM++ 2M, Automatic) runs the model's own schedule, and says so
    automatic = _params(sampler_name="DPM++ 2M", scheduler="Automatic")
    assert _close(next(iter(runner.txt2img(automatic, 1))).images[0], dpm) == 0
    assert runner.job_params(automatic)[0].scheduler == "Simple"


def _kohya_flux_lora(path: Path, model: LoadedModel) -> Path:
    from safetensors.torch import save_file

    inner = model.unet.config.num_attention_heads * model.unet.config.attention_head_dim
    torch.manual_seed(11)
    state = {}
    for name in ("lora_unet_double_blocks_0_img_attn_proj", "lora_unet_single_blocks_0_linear2"):
        fan_in = inner if "attn_proj" in name else inner * 5  # linear2 takes attention and the 4x MLP
        state[f"{name}.lora_down.weight"] = torch.randn(4, fan_in) * 0.5
        state[f"{name}.lora_up.weight"] = torch.randn(inner, 4) * 0.5
        state[f"{name}.alpha"] = torch.tensor(4.0)
    save_file(state, str(path))
    return path


class _Library:
    def __init__(self, *paths):
        from modules.models.lora import LoraFile

        self.files = {Path(p).stem: LoraFile.from_path(Path(p)) for p in paths}

    def find(self, name):
        return self.files.get(name)

    def refresh(self):
        return list(self.files.values())

    def shorthash(self, file):
        return "abc"


def test_kohya_lora_on_flux_equals_diffusers_loader_and_sd_loras_are_refused(models, tmp_path):
    from safetensors.torch import save_file

    m = models["schnell"]
    path = _kohya_flux_lora(tmp_path / "style.safetensors", m)
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)}, str(tmp_path / "sd15.safetensors"))
    runner = runner_for(m, PromptSetup(loras=_Library(path, tmp_path / "sd15.safetensors")))
    plain = next(iter(runner.txt2img(_params(), 4))).images[0]
    params = _params(prompt="a red square <lora:style:0.8> <lora:sd15:1>")
    job = runner.prepare(params)
    with_lora = next(iter(runner.txt2img(params, 4, prompts=job))).images[0]
    assert _close(plain, with_lora) > 1
    assert any("sd15" in w and "SD 1.x" in w for w in job.warnings)
    assert runner.lora_names == ("style",)
    pipe = _pipe(m)
    pipe.load_lora_weights(str(path), adapter_name="ref")
    pipe.set_adapters(["ref"], adapter_weights=[0.8])
    ref = pipe("a red square", num_inference_steps=3, guidance_scale=3.5, width=64, height=64, generator=[torch.Generator().manual_seed(4)]).images[0]
    pipe.unload_lora_weights()
    assert _close(with_lora, ref) <= 1
    again = next(iter(runner.txt2img(_params(), 4))).images[0]  # a job without LoRAs runs the base weights
    assert _close(again, plain) == 0 and runner.lora_names == ()


def test_api_fields_reach_the_job():
    from modules.api.models import Img2ImgRequest, Txt2ImgRequest

    params = Txt2ImgRequest(prompt="a", distilled_cfg_scale=2.0, shift=3.0).params()
    assert (params.distilled_cfg_scale, params.shift) == (2.0, 3.0)
    assert Txt2ImgRequest(prompt="a").params().distilled_cfg_scale == 3.5  # Forge's default
    pasted = Img2ImgRequest(prompt="a", infotext="a\nSteps: 4, Sampler: Euler, CFG scale: 1, Distilled CFG Scale: 2.5, Shift: 1.5, Seed: 1").params()
    assert (pasted.distilled_cfg_scale, pasted.shift) == (2.5, 1.5)


def test_hires_fix_and_inpainting_run_on_flux(models):
    runner = runner_for(models["schnell"])
    steps = []
    control = RunControl(lambda info: steps.append((info.step, info.steps)))
    hires = _params(steps=2, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.5, hr_upscaler="Latent")
    batch = next(iter(runner.txt2img(hires, 3, control)))
    assert batch.images[0].size == (96, 96) and [s for s, _ in steps] == [1, 2, 3, 4]  # exactly 2 hires steps after the first 2
    picture = Image.new("RGB", (64, 64), (200, 30, 30))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    params = Img2ImgParams(prompt="a blue circle", sampler_name="Euler", width=64, height=64, steps=3, seed=3, cfg_scale=1.0,
                           denoising_strength=0.9, mask_blur=0)
    out = np.asarray(next(iter(runner.img2img(params, InitImages((picture,), mask), 3))).images[0], dtype=np.int16)
    assert np.abs(out[:8, :8] - np.array([200, 30, 30])).max() <= 2  # outside the mask: the original
    assert np.abs(out[28:36, 28:36] - np.array([200, 30, 30])).max() > 10  # inside: repainted


@pytest.mark.parametrize("arch", ["flux-dev", "sd35-medium"])
def test_end_to_end_from_a_released_layout_file_through_the_loader(tmp_path, arch):
    from modules.models.loader import load_checkpoint
    from tests.models import flow_tiny

    path = tmp_path / f"{arch}-tiny.safetensors"
    if arch == "flux-dev":
        flow_tiny.write_flux(path, "dev", "full", dtype=torch.float32)
    else:
        flow_tiny.write_sd3(path, arch, "full", dtype=torch.float32)
    m = load_checkpoint(path, configs_dir=CONFIGS, device=CPU, dtype=torch.float32, vae_dtype=torch.float32)
    assert m.arch == arch
    params = _params(prompt="a red square", negative_prompt="blurry", cfg_scale=1.0 if arch == "flux-dev" else 4.0)
    ours = next(iter(runner_for(m).txt2img(params, 8))).images[0]
    guidance = dict(guidance_scale=3.5) if arch == "flux-dev" else dict(guidance_scale=4.0, negative_prompt="blurry")
    ref = _pipe(m)("a red square", num_inference_steps=3, width=64, height=64, generator=[torch.Generator().manual_seed(8)], **guidance).images[0]
    assert _close(ours, ref) <= 1


def test_a_flux_job_through_the_service_saves_forge_keys(tmp_path):
    """The worker's path: the model manager loads a Flux file, the service picks FlowRunner, the PNG says what ran."""
    from modules.generation.devices import device_settings
    from modules.jobs.generation_task import GenerationService
    from modules.jobs.queue import Job
    from modules.models.catalog import HashCache
    from modules.models.manager import ModelManager
    from modules.options import OutputSettings
    from modules.outputs.infotext import parse_infotext
    from modules.outputs.paste import params_from_infotext
    from tests.models import flow_tiny

    ckpts = tmp_path / "models" / "Stable-diffusion"
    flow_tiny.write_flux(ckpts / "flux1-dev-tiny.safetensors", "dev", "full", dtype=torch.float32)
    models = ModelManager((ckpts,), CONFIGS, lambda: device_settings(use_cpu=True), HashCache(tmp_path / "cache.json"))
    models.load()
    service = GenerationService(models, OutputSettings(), tmp_path, console_progress=False)
    # A1111's defaults (DPM++ 2M, Automatic) and a UNet-only speed setting, as a page left as it was sends them
    params = _params(steps=2, distilled_cfg_scale=2.5, shift=2.0, sampler_name="DPM++ 2M", scheduler="Automatic", token_merging_ratio=0.3)
    result = service.run_txt2img(Job(id="t", kind="txt2img", task=lambda j: None), params)
    assert isinstance(service.runner_loaded(), FlowRunner) and len(result.paths) == 1
    text = Image.open(result.paths[0]).info["parameters"]
    fields = parse_infotext(text)
    assert (fields["Sampler"], fields["Schedule type"], fields["Distilled CFG Scale"], fields["Shift"]) == ("DPM++ 2M", "Simple", "2.5", "2")
    assert "Token merging ratio" not in fields and any("Token merging does not apply" in n for n in result.notes)
    assert "CFG scale: 1, Distilled CFG Scale: 2.5, Seed: " in text  # where Forge writes it
    pasted = params_from_infotext(text).values
    assert (pasted["distilled_cfg_scale"], pasted["shift"]) == (2.5, 2.0)


def test_flux_sizes_not_multiples_of_16_are_refused_at_submit_with_the_nearest(tmp_path):
    """Before the job waits (the page's check_limits, the API's check_checkpoints): first pass and hires size."""
    from modules.generation.devices import device_settings
    from modules.jobs.generation_task import GenerationService
    from modules.models.catalog import HashCache
    from modules.models.manager import ModelManager
    from modules.options import OutputSettings
    from tests.models import flow_tiny

    ckpts = tmp_path / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    flux = ckpts / "flux1-dev-tiny.safetensors"
    flow_tiny.write_flux(flux, "dev", "transformer", dtype=torch.float32)
    models = ModelManager((ckpts,), CONFIGS, lambda: device_settings(use_cpu=True), HashCache(tmp_path / "cache.json"))
    service = GenerationService(models, OutputSettings(), tmp_path, console_progress=False)
    with pytest.raises(ValueError, match=r"multiples of 16: 1000x1000 is not; 992x992 or 1008x1008 are"):
        service.check_checkpoints(_params(width=1000, height=1000), str(flux))
    with pytest.raises(ValueError, match=r"the hires size 120x120 is not; 112x112 or 128x128 are"):
        service.check_checkpoints(_params(width=80, height=80, enable_hr=True, hr_scale=1.5), str(flux))
    service.check_checkpoints(_params(width=1008, height=992, enable_hr=True, hr_scale=2.0), str(flux))  # fits: no error


def test_a_flux_diffusers_folder_tells_its_latent_space_from_model_index(tmp_path):
    """So a Flux folder with a Refiner is refused before anything loads."""
    import json

    from modules.jobs.generation_task import latent_space

    folder = tmp_path / "FLUX.1-dev"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    (folder / "transformer" / "config.json").write_text(json.dumps({"guidance_embeds": True}))
    assert latent_space(folder) == "Flux"
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    assert latent_space(folder) == "SDXL"


def test_an_sd3_lora_diffusers_cannot_attach_is_left_out_with_a_note_and_the_job_runs(models, tmp_path):
    """kohya's SD 3 layout (lora_unet_joint_blocks_…, CLIP-G as lora_te2_): diffusers 0.42 reads it and attaches nothing."""
    from safetensors.torch import save_file

    from modules.generation.flow_loras import made_for_unet

    kohya = {"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": torch.randn(4, 32),
             "lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight": torch.randn(96, 4),
             "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.randn(4, 24),
             "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.randn(24, 4)}
    assert not made_for_unet(kohya)  # not refused as an SDXL LoRA for its lora_te2_ keys
    save_file(kohya, str(tmp_path / "kohya-sd3.safetensors"))
    torch.manual_seed(12)
    save_file({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.randn(4, 32),
               "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.randn(32, 4)}, str(tmp_path / "diffusers-sd3.safetensors"))
    runner = runner_for(models["sd3"], PromptSetup(loras=_Library(tmp_path / "kohya-sd3.safetensors", tmp_path / "diffusers-sd3.safetensors")))
    plain = next(iter(runner.txt2img(_params(cfg_scale=4.0), 4))).images[0]
    params = _params(prompt="a red square <lora:kohya-sd3:1> <lora:diffusers-sd3:1>", cfg_scale=4.0)
    job = runner.prepare(params)
    with_lora = next(iter(runner.txt2img(params, 4, prompts=job))).images[0]
    assert any("kohya-sd3" in w and "kohya-layout SD 3 LoRAs" in w and "not supported yet" in w for w in job.warnings), job.warnings
    assert runner.lora_names == ("diffusers-sd3",) and _close(plain, with_lora) > 1
    again = next(iter(runner.txt2img(_params(cfg_scale=4.0), 4))).images[0]
    assert _close(again, plain) == 0
