"""An always-on script, a selectable script, a route, a tab and a setting, in A1111's documented
style. Changes from A1111: the setting is added with add_setting (A1111: shared.opts.add_option)
and read as p.opts.<key> (A1111: shared.opts.<key>); nothing else."""

import gradio as gr

from modules import script_callbacks, scripts
from modules.extensions.api import add_setting
from modules.processing import process_images


class HelloWords(scripts.Script):
    """Always on: adds words to every picture's prompt (so it changes what is drawn) and says so in the infotext."""

    def title(self):
        return "Hello words"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion("Hello words", open=False, elem_id=f"hello_words_{'img2img' if is_img2img else 'txt2img'}"):
            enabled = gr.Checkbox(False, label="Add words", elem_id=f"hello_enabled_{'img2img' if is_img2img else 'txt2img'}")
            words = gr.Textbox("", label="Words", elem_id=f"hello_text_{'img2img' if is_img2img else 'txt2img'}")
        # Pasting an infotext with "Hello words: ..." ticks the box and fills the words (A1111's paste fields).
        self.infotext_fields = [(enabled, lambda fields: "Hello words" in fields), (words, "Hello words")]
        return [enabled, words]

    def process(self, p, enabled, words):
        if not enabled:
            return
        words = words or p.opts.hello_words_default
        p.all_prompts = [f"{prompt}, {words}" for prompt in p.all_prompts]
        p.extra_generation_params["Hello words"] = words


class Flip(scripts.Script):
    """Selectable (the A1111 wiki's example script): makes the pictures, then mirrors them."""

    def title(self):
        return "Flip"

    def show(self, is_img2img):
        return True

    def ui(self, is_img2img):
        horizontal = gr.Checkbox(True, label="Horizontal")
        vertical = gr.Checkbox(False, label="Vertical")
        return [horizontal, vertical]

    def run(self, p, horizontal, vertical):
        from PIL import ImageOps

        processed = process_images(p)
        for i, image in enumerate(processed.images):
            if horizontal:
                image = ImageOps.mirror(image)
            if vertical:
                image = ImageOps.flip(image)
            processed.images[i] = image
        return processed


def on_app_started(demo, app):
    @app.get("/hello-ext/ping")
    def ping():
        return {"hello": "world"}


def on_ui_tabs():
    with gr.Blocks() as tab:
        gr.Markdown("Hello from an extension.", elem_id="hello_ext_banner")
        name = gr.Textbox(label="Your name", elem_id="hello_ext_name")
        greeting = gr.Textbox(label="Greeting", elem_id="hello_ext_greeting")
        gr.Button("Greet", elem_id="hello_ext_greet").click(lambda n: f"Hello, {n}!", name, greeting)
    return [(tab, "Hello", "hello_ext_tab")]


def on_ui_settings():
    add_setting("hello_words_default", "red circle", "Words Hello words adds when its box is empty",
                section=("hello", "Hello extension"))


def on_infotext_pasted(infotext, params):
    """Early versions wrote "Hello: ..."; read it as "Hello words" (how A1111 extensions migrate their keys)."""
    if "Hello" in params and "Hello words" not in params:
        params["Hello words"] = params.pop("Hello")


script_callbacks.on_app_started(on_app_started)
script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_infotext_pasted(on_infotext_pasted)
