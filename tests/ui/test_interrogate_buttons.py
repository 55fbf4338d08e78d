"""img2img's Interrogate CLIP / DeepBooru buttons, their handlers called as gradio calls them:
the tagger's text lands in the prompt box; no picture or missing weights is a visible message."""

from __future__ import annotations

import gradio as gr
import pytest
from PIL import Image

from modules.jobs.interrogate_task import InterrogateService
from modules.jobs.queue import JobQueue
from modules.postprocessing.interrogate import ClipInterrogator
from modules.postprocessing.tagger import Tagger
from modules.ui.interrogate_buttons import build_interrogate_buttons, wire_interrogate
from tests import aio
from tests.postprocessing.interrogate_models import write_tagger

SCORES = [0.9, 0.2, 0.95, 0.7, 0.55, 0.3, 0.8, 0.6, 0.65, 0.4]


@pytest.fixture
def page(tmp_path):
    write_tagger(tmp_path / "deepbooru", SCORES)
    queue = JobQueue()
    service = InterrogateService(ClipInterrogator(tmp_path / "BLIP", tmp_path / "CLIP"), Tagger(tmp_path / "deepbooru", use_cpu=True),
                                 lambda: {"deepbooru_use_spaces": False})

    def picture_of(image):
        if image is None:
            raise ValueError("Upload an image to the img2img tab first (or paste or drop one).")
        return image

    with gr.Blocks() as blocks:
        prompt = gr.Textbox()
        image = gr.Image(type="pil")
        buttons = build_interrogate_buttons("img2img")
        wire_interrogate(buttons, queue, service, [image], picture_of, prompt)
    handlers = {block.targets[0][0]: block for block in blocks.fns.values()}
    yield {name: handlers[button._id] for name, button in (("clip", buttons.clip), ("deepbooru", buttons.deepbooru))}, prompt
    queue.shutdown()


def press(handler, *values):
    return aio.run(handler.fn(None, *values))


def test_deepbooru_button_puts_the_tags_into_the_prompt(page):
    handlers, prompt = page
    assert handlers["deepbooru"].outputs == [prompt]
    assert press(handlers["deepbooru"], Image.new("RGB", (30, 20))) == "1girl, ^_^, hatsune_miku, looking_\\(at\\)_viewer, red_hair, smile"


def test_missing_picture_and_missing_weights_are_visible_messages(page):
    handlers, _ = page
    with pytest.raises(gr.Error, match="Upload an image"):
        press(handlers["deepbooru"], None)
    with pytest.raises(gr.Error, match="--download clip-vit-large-patch14"):
        press(handlers["clip"], Image.new("RGB", (30, 20)))
