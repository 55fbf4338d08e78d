"""LoRA training on an SDXL checkpoint (reduced width, real layout): both text encoders and the
UNet's size conditioning take part, the file has kohya's SDXL names (`lora_te1_`, `lora_te2_`),
and our loader reads it onto a fresh copy of the model, where it changes the picture. Slow (a reduced SDXL is loaded twice): `pytest -m slow`."""

from __future__ import annotations

import pytest

import numpy as np
import torch
from safetensors import safe_open

from modules.generation.params import GenerationParams
from modules.generation.runner import PromptSetup, Runner
from modules.models.catalog import HashCache
from modules.models.ldm_keys import to_ldm_state_dict
from modules.models.loader import load_checkpoint
from modules.models.lora import LoraLibrary
from modules.training import dataset
from modules.training.lora_trainer import LoraTrainer
from tests.conftest import CONFIGS
from tests.models.test_loader import build_models, save_single_file, write_config_folder
from tests.training.test_lora_training import draw_set, tiny_params

pytestmark = pytest.mark.slow


def test_sdxl_lora_trains_both_encoders_and_loads_back(tmp_path):
    path = save_single_file(tmp_path / "xl-small.safetensors", to_ldm_state_dict("sdxl", **build_models("sdxl", seed=3)))
    write_config_folder(tmp_path / "xl-small", "sdxl", build_models("sdxl", seed=3))

    def load():
        return load_checkpoint(path, configs_dir=CONFIGS, device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)

    folder = draw_set(tmp_path / "data" / "shapes", 2)
    params = tiny_params(folder, output_name="xl", max_train_steps=2, train_batch_size=1, learning_rate=1e-2)
    lora = tmp_path / "Lora" / "xl.safetensors"
    outcome = LoraTrainer(load(), params, dataset.scan_folder(folder), tmp_path / "run", lora, device=torch.device("cpu"),
                          checkpoint_name="xl-small", console=False).train()
    assert outcome.steps == 2 and lora.exists()
    with safe_open(str(lora), framework="pt") as f:
        prefixes = {"_".join(k.split("_", 2)[:2]) for k in f.keys()}
        meta = f.metadata()
    assert prefixes == {"lora_unet", "lora_te1", "lora_te2"} and meta["ss_base_model_version"] == "sdxl_base_v1-0"

    runner = Runner(load(), PromptSetup(loras=LoraLibrary((lora.parent,), HashCache(tmp_path / "h.json", hashing=False))))
    plain = GenerationParams.create(prompt="a red square", width=64, height=64, steps=3, sampler_name="Euler")
    base = np.asarray(next(iter(runner.txt2img(plain, 5))).images[0], dtype=np.int16)
    with_lora = GenerationParams.create(prompt="a red square <lora:xl:1>", width=64, height=64, steps=3, sampler_name="Euler")
    prepared = runner.prepare(with_lora)
    assert not prepared.warnings
    changed = np.asarray(next(iter(runner.txt2img(with_lora, 5, prompts=prepared))).images[0], dtype=np.int16)
    assert np.abs(changed - base).max() > 0
