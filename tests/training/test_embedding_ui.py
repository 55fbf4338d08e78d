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


# --------------------------------------------------------------------------- the buttons' handlers

from types import SimpleNamespace as NS  # noqa: E402

import pytest  # noqa: E402

from modules.demo import shapes  # noqa: E402
from modules.demo.embedded import EMBEDDED_PATH  # noqa: E402
from modules.jobs.queue import JobQueue  # noqa: E402
from modules.training.embedding_trainer import EmbeddingService  # noqa: E402
from modules.ui.train_embedding import create_clicked, train_updates  # noqa: E402
from tests.aio import run as run_coroutine  # noqa: E402  (the browser tests may hold an event loop in this process)


@pytest.fixture
def page(demo_model, tmp_path):
    """The service and queue the sub-tabs use, over the demo model, and a folder of pictures."""
    library = EmbeddingLibrary((tmp_path / "embeddings",), HashCache(None, hashing=False))
    active = NS(model=demo_model, info=NS(shorthash="abcdef012345", model_name="demo-shapes-64px", path=EMBEDDED_PATH))
    models = NS(ensure=lambda: active, hashes=HashCache(None, hashing=False))
    service = EmbeddingService(models, library, tmp_path, REPO / "configs" / "textual_inversion_templates")
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i, centre in enumerate([(24, 24), (40, 40)]):
        shapes.draw(shapes.Scene("red", "circle", "blue"), centre, 16).save(pictures / f"{i}-red circle.png")
    queue = JobQueue()
    yield service, queue, pictures
    queue.shutdown()


def collect(updates) -> list:
    async def run():
        return [update async for update in updates]

    return run_coroutine(run())


def train_values(pictures, **changes):
    return {"embedding_name": "dots", "learn_rate": "0.005", "clip_grad_mode": "disabled", "clip_grad_value": "0.1", "batch_size": 1,
            "gradient_step": 1, "data_root": str(pictures), "log_directory": "textual_inversion", "template_filename": "subject.txt",
            "training_width": 64, "training_height": 64, "varsize": False, "steps": 4, "create_image_every": 2,
            "save_embedding_every": 0, "shuffle_tags": False, "tag_drop_out": 0, "latent_sampling_method": "once", **changes}


def test_create_button_adds_the_embedding_to_the_menu_and_says_where(page):
    service, queue, _ = page
    menu, message = run_coroutine(create_clicked(service, queue, "dots", "red", 1, False, "ip:1"))
    assert menu["value"] == "dots" and "dots" in menu["choices"] and "Created:" in message and "dots.pt" in message
    menu, message = run_coroutine(create_clicked(service, queue, "dots", "red", 1, False, "ip:1"))
    assert "already exists" in message and "choices" not in menu


def test_train_button_shows_progress_then_the_outcome_and_the_latest_preview(page):
    service, queue, pictures = page
    run_coroutine(create_clicked(service, queue, "dots", "red", 1, False, "ip:1"))
    running = {}
    updates = collect(train_updates(service, queue, train_values(pictures), "ip:1", running))
    text, preview, outcome = updates[-1]
    assert "Training finished at step 4" in outcome and "dots.pt" in outcome
    assert preview is not None and preview.size == (64, 64) and running == {}
    refused = collect(train_updates(service, queue, train_values(pictures, embedding_name="nobody"), "ip:1", running))
    assert len(refused) == 1 and "not found" in refused[0][2]


def test_interrupt_stops_the_sessions_training_and_keeps_what_it_learned(page):
    service, queue, pictures = page
    run_coroutine(create_clicked(service, queue, "dots", "red", 1, False, "ip:1"))
    running = {}

    async def run():
        seen = []
        async for update in train_updates(service, queue, train_values(pictures, steps=100000, create_image_every=0), "ip:1", running):
            seen.append(update)
            job = running.get("ip:1")
            if job is not None and job.progress.step >= 2:
                queue.interrupt(job.id)  # what the Interrupt button does for this session
        return seen

    outcome = run_coroutine(run())[-1][2]
    step = int(outcome.split("at step ")[1].split(".")[0])
    assert "Training interrupted" in outcome and 2 <= step < 100000
    assert service.library.get("dots").step == step
