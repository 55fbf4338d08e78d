"""Textual inversion on an SDXL checkpoint (the reduced-width SDXL of the runner's tests): the
file holds vectors for both text encoders (`clip_l`, `clip_g`), as SDXL embeddings are shared,
and training moves both while the model stays as it was."""

from __future__ import annotations

import numpy as np
import torch
from safetensors import safe_open

from modules.demo import shapes
from modules.generation.params import GenerationParams
from modules.generation.runner import PromptSetup, Runner
from modules.models.catalog import HashCache
from modules.models.embeddings import EmbeddingLibrary, load_embedding
from modules.training import embedding_trainer as et
from tests.generation.test_runner_sdxl import sdxl_model  # noqa: F401  (the fixture)


def picture(model, lib, prompt):
    params = GenerationParams(prompt=prompt, steps=3, width=64, height=64, sampler_name="Euler")
    return np.asarray(next(iter(Runner(model, PromptSetup(embeddings=lib)).txt2img(params, 3))).images[0])


def test_sdxl_embeddings_hold_both_encoders_and_train_both(sdxl_model, tmp_path):  # noqa: F811
    emb_dir, pictures = tmp_path / "embeddings", tmp_path / "pictures"
    pictures.mkdir()
    for i, centre in enumerate([(24, 24), (40, 40)]):
        shapes.draw(shapes.Scene("red", "circle", "blue"), centre, 16).save(pictures / f"{i}.png")
    (tmp_path / "name.txt").write_text("a photo of [name]\n")

    path = et.create_embedding(sdxl_model, emb_dir, "xlword", 2, init_text="red")
    assert path.name == "xlword.safetensors"
    with safe_open(str(path), "pt") as f:
        widths = {k: f.get_tensor(k).shape for k in f.keys()}
        assert f.metadata()["step"] == "0"
    assert widths == {"clip_l": (2, sdxl_model.text_encoder.config.hidden_size), "clip_g": (2, sdxl_model.text_encoder_2.config.hidden_size)}
    lib = EmbeddingLibrary((emb_dir,), HashCache(None, hashing=False))
    before = load_embedding(path)
    base = picture(sdxl_model, lib, "a red square")

    opts = et.TrainOptions(embedding_name="xlword", data_root=str(pictures), training_width=64, training_height=64, steps=3,
                           learn_rate="0.05", create_image_every=0, save_embedding_every=0)
    result = et.EmbeddingTrainer(sdxl_model, lib, opts, pictures, None, tmp_path / "name.txt", ("fedcba987654", "xl-small")).run()

    after = load_embedding(path)
    assert result.step == 3 and after.step == 3 and after.info["sd_checkpoint_name"] == "xl-small"
    for key in ("clip_l", "clip_g"):
        assert not torch.equal(after.vectors[key], before.vectors[key]), key
    assert np.array_equal(picture(sdxl_model, lib, "a red square"), base)  # the model did not change
    assert not np.array_equal(picture(sdxl_model, lib, "xlword"), picture(sdxl_model, EmbeddingLibrary((tmp_path / "none",),
                                                                                                      HashCache(None, hashing=False)), "xlword"))
