"""The "Create embedding" and "Train" sub-tabs: A1111's controls with A1111's elem ids and
defaults, the embedding menu listing the embeddings folder (the clicks are the page test's)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import torch

from modules.models.catalog import HashCache
from modules.models.embeddings import EmbeddingLibrary

REPO = Path(__file__).resolve().parents[2]


def test_the_sub_tabs_have_a1111s_controls_and_list_the_embeddings(tmp_path):
    from modules.ui.train_embedding import build_embedding_tabs

    folder = tmp_path / "embeddings"
    folder.mkdir()
    torch.save({"string_to_param": {"*": torch.zeros(1, 768)}, "name": "inkwash", "step": 0}, folder / "inkwash.pt")
    library = EmbeddingLibrary((folder,), HashCache(None, hashing=False))
    app = SimpleNamespace(models=None, queue=None, access=None, service=SimpleNamespace(libraries=SimpleNamespace(embeddings=library)),
                          paths=SimpleNamespace(data_dir=tmp_path, configs_dir=REPO / "configs"))
    with gr.Blocks() as page:
        with gr.Tabs():
            build_embedding_tabs(app)
    by_id = {block.elem_id: block for block in page.blocks.values() if getattr(block, "elem_id", None)}
    for elem_id in ("train_new_embedding_name", "train_initialization_text", "train_nvpt", "train_overwrite_old_embedding",
                    "train_create_embedding", "train_embedding", "refresh_train_embedding_name", "train_embedding_learn_rate",
                    "train_batch_size", "train_gradient_step", "train_dataset_directory", "train_log_directory", "train_template_file",
                    "train_training_width", "train_training_height", "train_varsize", "train_steps", "train_create_image_every",
                    "train_save_embedding_every", "train_shuffle_tags", "train_tag_drop_out", "train_latent_sampling_method",
                    "train_train_embedding", "train_interrupt_training", "ti_progress", "ti_preview"):
        assert elem_id in by_id, elem_id
    assert by_id["train_initialization_text"].value == "*" and by_id["train_embedding_learn_rate"].value == "0.005"
    assert by_id["train_log_directory"].value == "textual_inversion" and by_id["train_steps"].value == 100000
    assert by_id["train_template_file"].value == "style_filewords.txt"
    assert [c[0] for c in by_id["train_embedding"].choices] == ["inkwash"]
