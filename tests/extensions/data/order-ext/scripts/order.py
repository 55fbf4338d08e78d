"""Records what each hook of an always-on script sees, in order, to calls.jsonl in its folder."""

import json
from pathlib import Path

import gradio as gr

from modules import script_callbacks, scripts
from modules.extensions.api import basedir

LOG = Path(basedir()) / "calls.jsonl"


def note(**entry):
    with LOG.open("a", encoding="utf-8") as file:
        file.write(json.dumps(entry) + "\n")


class Order(scripts.Script):
    def title(self):
        return "Order"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [gr.Textbox("tag", label="Tag")]

    def before_process(self, p, tag):
        note(hook="before_process", tag=tag, prompt=p.prompt, all_prompts=p.all_prompts)

    def process(self, p, tag):
        note(hook="process", prompt=p.prompt, all_prompts=p.all_prompts, all_seeds=p.all_seeds)

    def before_process_batch(self, p, tag, batch_number, prompts, seeds, subseeds):
        note(hook="before_process_batch", batch_number=batch_number, prompts=prompts, seeds=seeds)

    def process_batch(self, p, tag, batch_number, prompts, seeds, subseeds):
        note(hook="process_batch", batch_number=batch_number, prompts=prompts)

    def postprocess_batch(self, p, tag, images, batch_number):
        note(hook="postprocess_batch", batch_number=batch_number, shape=list(images.shape))

    def postprocess_image(self, p, pp, tag):
        note(hook="postprocess_image", size=list(pp.image.size))

    def postprocess(self, p, processed, tag):
        note(hook="postprocess", images=len(processed.images), seed=processed.seed)


script_callbacks.on_before_image_saved(lambda params: note(hook="before_image_saved"))
script_callbacks.on_image_saved(lambda params: note(hook="image_saved", exists=Path(params.filename).is_file()))
