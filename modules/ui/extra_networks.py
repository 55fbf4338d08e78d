"""A1111's Extra networks under the prompt: LoRA, Textual Inversion, Checkpoints and VAE, whose
choice adds its tag to the prompt (or selects the model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

if TYPE_CHECKING:
    from modules.jobs.generation_task import GenerationService
    from modules.ui.common import Quicksettings


def build_extra_networks(prefix: str, service: "GenerationService", prompt: gr.Textbox, negative: gr.Textbox,
                         quick: "Quicksettings") -> None:
    """LoRA and embedding pickers: choosing one adds its tag (`<lora:name:1>`) or its name to
    the prompt, as clicking a card in A1111's Extra networks does."""
    libraries = service.libraries

    def lora_names() -> list[str]:
        return [f.name for f in libraries.loras.refresh()] if libraries.loras is not None else []

    def embedding_names() -> list[str]:
        if libraries.embeddings is None:
            return []
        libraries.embeddings.refresh()
        return list(libraries.embeddings.names)

    with gr.Accordion("Extra networks (LoRA, Textual Inversion)", open=False, elem_id=f"{prefix}_extra_networks"):
        with gr.Row():
            lora = gr.Dropdown(lora_names(), value=None, label="Lora", elem_id=f"{prefix}_lora_picker", scale=4,
                               info="Adds <lora:name:1> to the prompt; edit the number to weaken or strengthen it.")
            embedding = gr.Dropdown(embedding_names(), value=None, label="Textual Inversion", elem_id=f"{prefix}_ti_picker", scale=4,
                                    info="Adds the embedding's name to the prompt.")
            refresh = gr.Button("🔄", elem_id=f"{prefix}_extra_refresh", size="sm", scale=0, min_width=40)

    def add(text: str, addition: str | None):
        if not addition:
            return gr.update(), gr.update()
        return append_to_prompt(text, addition), gr.update(value=None)

    lora.select(lambda text, name: add(text, f"<lora:{name}:1>" if name else None), [prompt, lora], [prompt, lora], queue=False, api_name=False)
    embedding.select(lambda text, name: add(text, name), [prompt, embedding], [prompt, embedding], queue=False, api_name=False)
    refresh.click(lambda: (gr.update(choices=lora_names()), gr.update(choices=embedding_names())), None, [lora, embedding], queue=False, api_name=False)


def append_to_prompt(text: str, addition: str) -> str:
    """`addition` at the end of the prompt; on a new line when the last line ends in a `#`
    comment, which would otherwise swallow it."""
    text = (text or "").rstrip()
    if not text:
        return addition
    separator = "\n" if "#" in text.rsplit("\n", 1)[-1] else " "
    return f"{text}{separator}{addition}"
