"""SDXL through the core against diffusers' own StableDiffusionXLPipeline (reduced width, real layout)."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline

from modules.generation import samplers
from modules.generation.params import GenerationParams, infotext_fields
from modules.generation.runner import Runner
from modules.models.ldm_keys import to_ldm_state_dict
from modules.models.loader import load_checkpoint
from tests.conftest import CONFIGS
from tests.models.test_loader import build_models, save_single_file, write_config_folder


@pytest.fixture(scope="module")
def sdxl_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl")
    models = build_models("sdxl", seed=3)
    path = save_single_file(folder / "xl-small.safetensors", to_ldm_state_dict("sdxl", **models))
    write_config_folder(folder / "xl-small", "sdxl", models)
    return load_checkpoint(path, configs_dir=CONFIGS, device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)


@pytest.mark.parametrize("negative", ["", "blurry"])
def test_sdxl_core_matches_the_diffusers_sdxl_pipeline_and_ignores_clip_skip(sdxl_model, negative):
    m = sdxl_model
    params = GenerationParams.create(prompt="a red square", negative_prompt=negative, sampler_name="Euler", width=64, height=64, steps=4, seed=5, clip_skip=2)
    ours = [im for b in Runner(m).txt2img(params, 5) for im in b.images]
    pipe = StableDiffusionXLPipeline(
        vae=m.vae, text_encoder=m.text_encoder, text_encoder_2=m.text_encoder_2, tokenizer=m.tokenizer, tokenizer_2=m.tokenizer_2,
        unet=m.unet, scheduler=samplers.build_scheduler(m.scheduler_config, *samplers.resolve("Euler")), force_zeros_for_empty_prompt=True,
    )
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(
        "a red square", negative_prompt=negative or None, num_inference_steps=4, guidance_scale=7.0, width=64, height=64,
        generator=[torch.Generator().manual_seed(5)],
    ).images
    assert np.abs(np.asarray(ours[0], dtype=np.int16) - np.asarray(ref[0], dtype=np.int16)).max() <= 1
    fields = dict(infotext_fields(params, seed=5, model_hash=None, model_name="xl", version="v", clip_skip_applies=m.honours_clip_skip))
    assert fields["Clip skip"] is None


def test_sdxl_long_prompts_chunk_both_encoders_and_pool_the_first_chunk(sdxl_model):
    from modules.generation.text_encoding import EncodingOptions, PromptEncoder

    encoder = PromptEncoder(sdxl_model)
    first = " ".join(["cat"] * 75)
    long = encoder.encode(first + " dog dog", EncodingOptions())
    short = encoder.encode(first, EncodingOptions())
    width = sdxl_model.text_encoder.config.hidden_size + sdxl_model.text_encoder_2.config.hidden_size
    assert long.embeds.shape == (1, 154, width) and short.embeds.shape == (1, 77, width)
    assert torch.equal(long.embeds[:, :77], short.embeds)
    assert torch.equal(long.pooled, short.pooled)  # A1111 pools the first chunk
    weighted = encoder.encode("a (cat:1.5)", EncodingOptions(emphasis="No norm")).embeds
    plain = encoder.encode("a cat", EncodingOptions(emphasis="No norm")).embeds
    assert torch.allclose(weighted[0, 2], plain[0, 2] * 1.5, atol=1e-5)  # both halves of the token's vector


def test_sdxl_embeddings_need_both_halves(sdxl_model):
    from dataclasses import dataclass

    from modules.generation.text_encoding import EncodingOptions, PromptEncoder

    m = sdxl_model
    cat = m.tokenizer("cat", add_special_tokens=False).input_ids[0]

    @dataclass
    class Emb:
        name: str
        vectors: dict

        def for_width(self, width):
            return next((v for v in self.vectors.values() if v.shape[-1] == width), None)

    class Library:
        version = 1

        def __init__(self, *embeddings):
            self.by_name = {e.name: e for e in embeddings}
            self.names = list(self.by_name)

        def get(self, name):
            return self.by_name.get(name)

    both = Emb("xlcat", {"clip_l": m.text_encoder.get_input_embeddings().weight[[cat]].clone(),
                         "clip_g": m.text_encoder_2.get_input_embeddings().weight[[cat]].clone()})
    half = Emb("halfcat", {"clip_l": m.text_encoder.get_input_embeddings().weight[[cat]].clone()})
    encoder = PromptEncoder(m, Library(both, half))
    options = EncodingOptions()
    assert torch.equal(encoder.encode("a xlcat", options).embeds, encoder.encode("a cat", options).embeds)
    assert torch.equal(encoder.encode("a xlcat", options).pooled, encoder.encode("a cat", options).pooled)
    tokenized = encoder.tokenize("a halfcat", options)
    assert tokenized.embeddings == () and tokenized.unfit[0][0] == "halfcat"  # read as words in both encoders
