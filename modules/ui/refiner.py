"""A1111's Refiner accordion (txt2img and img2img): another checkpoint of the same latent space
takes over the sampling at "Switch at" (see modules.generation.engines.Takeover)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import gradio as gr

from modules.ui.common import slider

if TYPE_CHECKING:
    from modules.models.manager import ModelManager

NONE = "None"  # A1111's "no refiner" choice


def checkpoint_choices(models: "ModelManager", first: str) -> Callable[[], list[str]]:
    """The checkpoints as the page lists them, after `first` ("None", "Use same checkpoint")."""
    return lambda: [first, *models.titles()]


def build_refiner(prefix: str, models: "ModelManager") -> dict[str, Any]:
    """The accordion; returns its controls by parameter name. The dropdown takes any text too, so
    a pasted infotext's "name [hash]" stands until the job resolves it (as A1111's lookup does)."""
    choices = checkpoint_choices(models, NONE)
    with gr.Accordion("Refiner", open=False, elem_id=f"{prefix}_refiner"):
        with gr.Row():
            checkpoint = gr.Dropdown(choices(), value=NONE, label="Checkpoint", allow_custom_value=True, elem_id=f"{prefix}_refiner_checkpoint",
                                     info="switch to another model in the middle of generation")
            refresh = gr.Button("🔄", scale=0, min_width=40, elem_id=f"{prefix}_refiner_checkpoint_refresh")
            switch = slider(prefix, "refiner_switch_at", info="fraction of sampling steps when the switch to the refiner happens; 1 = never")
    refresh.click(lambda: gr.update(choices=choices()), None, checkpoint, queue=False, api_name=False)
    return {"refiner_checkpoint": checkpoint, "refiner_switch_at": switch}
