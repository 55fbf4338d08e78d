"""A1111's prompt styles beside Generate: pick styles to apply, write them into the prompts,
save the prompts as a style (styles.csv)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

if TYPE_CHECKING:
    from modules.jobs.generation_task import GenerationService


def build_styles(prefix: str, service: "GenerationService", prompt: gr.Textbox, negative: gr.Textbox) -> gr.Dropdown:
    """A1111's styles: the selected ones are applied when generating; 📋 writes them into the
    prompts instead; 💾 saves the current prompts as a style in styles.csv."""
    from modules.generation.styles import PromptStyle

    store = service.libraries.styles

    def names() -> list[str]:
        return list(store.names) if store is not None else []

    styles = gr.Dropdown(names(), value=[], multiselect=True, label="Styles", elem_id=f"{prefix}_styles")
    with gr.Row():
        apply = gr.Button("📋", elem_id=f"{prefix}_style_apply", size="sm", min_width=40)
        refresh = gr.Button("🔄", elem_id=f"{prefix}_style_refresh", size="sm", min_width=40)
    with gr.Accordion("Save style", open=False, elem_id=f"{prefix}_style_save_box"):
        name = gr.Textbox(label="Style name", elem_id=f"{prefix}_style_name")
        save = gr.Button("💾 Save the prompts as a style", elem_id=f"{prefix}_style_save", size="sm")

    def apply_styles(text: str, neg: str, chosen: list[str]):
        if store is None or not chosen:
            return gr.update(), gr.update(), gr.update()
        try:
            text, neg = store.apply(text, neg, chosen)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        return text, neg, gr.update(value=[])

    def save_style(style_name: str, text: str, neg: str, chosen: list[str]):
        if store is None:
            raise gr.Error("No styles file is configured.")
        style_name = (style_name or "").strip()
        if not style_name:
            raise gr.Error("Give the style a name first.")
        try:
            store.save(PromptStyle(style_name, text or "", neg or ""))
        except (OSError, ValueError) as exc:
            raise gr.Error(f"Could not save the style: {exc}") from None
        gr.Info(f"Saved style '{style_name}'.")
        return gr.update(choices=names(), value=chosen), ""

    apply.click(apply_styles, [prompt, negative, styles], [prompt, negative, styles], queue=False, api_name=False)
    refresh.click(lambda chosen: gr.update(choices=names(), value=[c for c in chosen if c in names()]), styles, styles, queue=False, api_name=False)
    save.click(save_style, [name, prompt, negative, styles], [styles, name], concurrency_limit=None, api_name=False)
    return styles
