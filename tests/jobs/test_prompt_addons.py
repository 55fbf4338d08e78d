"""LoRAs, embeddings, VAEs and styles as a job uses them: what reaches the image, what the
infotext records, and the warnings for what cannot be used."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modules.generation.params import GenerationParams
from modules.generation.styles import PromptStyle, StyleStore
from modules.jobs.generation_task import GenerationService, Libraries
from modules.jobs.queue import Job
from modules.models.catalog import HashCache
from modules.models.embeddings import EmbeddingLibrary
from modules.models.ldm_keys import vae_to_ldm
from modules.models.lora import LoraLibrary
from modules.models.manager import ModelManager
from modules.models.tiny import build_components
from modules.models.vae import VaeLibrary
from modules.options import OutputSettings
from modules.outputs.infotext import parse_infotext
from tests.models.test_lora import write_test_lora

DAY = datetime(2026, 12, 2, 12, 0)


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_checkpoint):
    data = tmp_path_factory.mktemp("data")
    for sub in ("Stable-diffusion", "Lora", "embeddings", "VAE"):
        (data / "models" / sub).mkdir(parents=True)
    (data / "models" / "Stable-diffusion" / tiny_checkpoint.name).write_bytes(tiny_checkpoint.read_bytes())
    return data


@pytest.fixture(scope="module")
def service(data, configs_dir):
    from modules.generation.devices import device_settings

    models = data / "models"
    hashes = HashCache(data / "cache.json")
    manager = ModelManager((models / "Stable-diffusion",), configs_dir, lambda: device_settings(use_cpu=True), hashes)
    manager.load()
    libraries = Libraries(LoraLibrary((models / "Lora",), hashes), EmbeddingLibrary((models / "embeddings",), hashes),
                          VaeLibrary((models / "VAE",), hashes), StyleStore([data / "styles.csv"]))
    service = GenerationService(manager, OutputSettings(), data, console_progress=False, clock=lambda: DAY, libraries=libraries)
    yield service
    service.sd_vae = "Automatic"


def job() -> Job:
    return Job(id="task(addons)", kind="test", task=lambda j: None)


def generate(service, **values):
    params = GenerationParams.create(**{"width": 64, "height": 64, "steps": 4, "seed": 11, "sampler_name": "Euler", **values})
    return service.run_txt2img(job(), params, save=True)


def fields(result) -> dict:
    return parse_infotext(result.infotexts[0])


def pixels(result):
    return np.asarray(result.images[0], dtype=np.int16)


def test_a_lora_tag_changes_the_image_and_is_recorded_and_unloading_restores_it(service, data):
    path = write_test_lora(data / "models" / "Lora" / "glow.safetensors", service.models.active.model, layout="kohya")
    service.libraries.loras.refresh()
    base = generate(service, prompt="a red square")
    with_lora = generate(service, prompt="a red square <lora:glow:1>")
    weaker = generate(service, prompt="a red square <lora:glow:0.4>")
    after = generate(service, prompt="a red square")
    assert not np.array_equal(pixels(base), pixels(with_lora))
    assert not np.array_equal(pixels(with_lora), pixels(weaker))
    assert np.array_equal(pixels(base), pixels(after))  # the base weights are exactly as they were
    info = fields(with_lora)
    assert info["Prompt"] == "a red square <lora:glow:1>"  # the tag stays in the infotext, as A1111 writes it
    assert info["Lora hashes"] == f"glow: {service.libraries.loras.shorthash(service.libraries.loras.find('glow'))}"
    assert len(info["Lora hashes"].split(": ")[1]) == 12
    assert path.exists() and not with_lora.notes


def test_a_missing_lora_or_a_malformed_tag_warns_and_the_rest_generates(service):
    plain = generate(service, prompt="a red square")
    result = generate(service, prompt="a red square <lora:nosuchthing:0.8> <lora:glow:abc>")
    assert any("nosuchthing" in n and "not found" in n for n in result.notes)
    assert any("<lora:glow:abc>" in n for n in result.notes)
    assert np.array_equal(pixels(plain), pixels(result))  # the tags were dropped, not read as words
    assert "Lora hashes" not in fields(result)


def test_an_embedding_is_used_by_its_file_name_and_recorded(service, data):
    model = service.models.active.model
    table = model.text_encoder.get_input_embeddings().weight
    cat = model.tokenizer("cat", add_special_tokens=False).input_ids[0]
    save_file({"emb_params": table[[cat]].clone().contiguous()}, str(data / "models" / "embeddings" / "kitty.safetensors"))
    save_file({"emb_params": torch.ones(2, 1024)}, str(data / "models" / "embeddings" / "widething.safetensors"))
    service.libraries.embeddings.refresh()
    via_embedding = generate(service, prompt="a kitty on a mat")
    via_word = generate(service, prompt="a cat on a mat")
    assert np.array_equal(pixels(via_embedding), pixels(via_word))  # the vector is the word's own
    hash12 = service.libraries.embeddings.shorthash(service.libraries.embeddings.get("kitty"))
    assert fields(via_embedding)["TI hashes"] == f"kitty: {hash12}"
    wrong = generate(service, prompt="a widething")
    assert any("widething" in n and "another kind of model" in n for n in wrong.notes)
    # a file added or changed since the last job is used without pressing refresh
    dog = model.tokenizer("dog", add_special_tokens=False).input_ids[0]
    save_file({"emb_params": table[[dog]].clone().contiguous()}, str(data / "models" / "embeddings" / "kitty.safetensors"))
    assert np.array_equal(pixels(generate(service, prompt="a kitty on a mat")), pixels(generate(service, prompt="a dog on a mat")))
    save_file({"emb_params": torch.zeros(80, 32)}, str(data / "models" / "embeddings" / "huge.safetensors"))
    too_long = generate(service, prompt="a huge cat")
    assert any("huge" in n and "more than 75 vectors" in n for n in too_long.notes) and too_long.images


def test_a_vae_file_is_selected_recorded_and_none_goes_back(service, data, configs_dir):
    _, vae, _ = build_components(configs_dir, seed=99)
    save_file({k: v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()}, str(data / "models" / "VAE" / "other.vae.safetensors"))
    service.libraries.vaes.refresh()
    base = generate(service, prompt="a red square")
    service.select_vae("other.vae.safetensors")
    other = generate(service, prompt="a red square")
    service.select_vae("None")
    back = generate(service, prompt="a red square")
    assert not np.array_equal(pixels(base), pixels(other))
    assert np.array_equal(pixels(base), pixels(back))
    info = fields(other)
    assert info["VAE"] == "other.vae.safetensors" and info["VAE hash"] == service.libraries.vaes.shorthash(data / "models" / "VAE" / "other.vae.safetensors")
    assert "VAE" not in fields(back)
    with pytest.raises(ValueError, match="not found"):
        service.select_vae("missing.safetensors")


def test_styles_apply_to_the_prompts_and_reach_the_infotext(service):
    service.libraries.styles.save(PromptStyle("cinema", "{prompt}, film grain", "cartoon"))
    result = generate(service, prompt="a red square", styles=["cinema"])
    info = fields(result)
    assert info["Prompt"] == "a red square, film grain" and info["Negative prompt"] == "cartoon"
    stale = generate(service, prompt="a red square", styles=["cinema", "nosuch"])
    assert fields(stale)["Prompt"] == "a red square, film grain"  # A1111 skips a style it does not know
    assert any("nosuch" in n for n in stale.notes)
    hires = generate(service, prompt="a", hr_prompt="b", enable_hr=True, hr_scale=1.0, styles=["cinema"], denoising_strength=0.5)
    assert fields(hires)["Hires prompt"] == "b, film grain"


def test_the_token_counter_counts_like_a1111(service):
    assert service.count_tokens("a red square") == (3, 75)
    assert service.count_tokens(" ".join(["cat"] * 80)) == (80, 150)
    assert service.count_tokens("a <lora:glow:1> cat # a comment") == (2, 75)
    assert service.count_tokens("[cat dog bird:fish:0.5]") == (3, 75)  # the longest of the schedule's prompts
    service.libraries.styles.save(PromptStyle("wordy", "{prompt}, " + " ".join(["cat"] * 80), "cartoon, blurry"))
    assert service.count_tokens("a red square", styles=("wordy",)) == (84, 150)  # counted with the chosen style
    assert service.count_tokens("", negative=True, styles=("wordy",)) == (3, 75)
    assert service.count_tokens("[cat:dog dog dog:2]", steps=1) == (1, 75)  # at 1 step the edit never happens


def test_emphasis_other_than_original_is_recorded(service):
    assert "Emphasis" not in fields(generate(service, prompt="a (red:1.3) square"))
    assert fields(generate(service, prompt="a (red:1.3) square", emphasis="No norm"))["Emphasis"] == "No norm"
    assert "Emphasis" not in fields(generate(service, prompt="a red square", emphasis="No norm"))


def test_a_lora_called_only_by_the_hires_prompt_is_recorded(service):
    result = generate(service, prompt="a red square", hr_prompt="a red square <lora:glow:1>", enable_hr=True, hr_scale=1.0,
                      denoising_strength=0.5)
    assert fields(result)["Lora hashes"].startswith("glow: ")
    after = generate(service, prompt="a red square")
    assert "Lora hashes" not in fields(after)


def test_comments_are_left_out_of_the_prompt_and_the_infotext(service):
    commented = generate(service, prompt="a red square # try blue next\n# a line that is only a comment\n, sharp")
    plain = generate(service, prompt="a red square \n, sharp")
    assert fields(commented)["Prompt"] == fields(plain)["Prompt"]
    assert "#" not in commented.infotexts[0]
    assert np.array_equal(pixels(commented), pixels(plain))


def test_a_vae_that_does_not_fit_falls_back_to_the_checkpoints_own_with_a_note(service, data):
    save_file({"encoder.conv_in.weight": torch.zeros(3, 3, 3, 3)}, str(data / "models" / "VAE" / "wrong.safetensors"))
    service.libraries.vaes.refresh()
    base = generate(service, prompt="a red square")
    service.select_vae("wrong.safetensors")
    try:
        result = generate(service, prompt="a red square")
    finally:
        service.select_vae("None")
    assert np.array_equal(pixels(base), pixels(result)) and "VAE" not in fields(result)
    assert any("wrong.safetensors" in n and "checkpoint's own VAE" in n for n in result.notes)


def test_disable_extra_networks_strips_the_tags_without_applying_them(service):
    plain = generate(service, prompt="a red square")
    disabled = generate(service, prompt="a red square <lora:glow:1>", disable_extra_networks=True)
    assert np.array_equal(pixels(plain), pixels(disabled))
    assert "Lora hashes" not in fields(disabled) and not disabled.notes
