"""The generation core's hook points: where per-job add-ons (ControlNet first, then scripts
and extensions) enter the one sampling loop without the loop knowing who they are.

A hook is a plain object registered for one job; the runner calls every registered hook
in order at each point. `JobHook`'s methods do nothing, so a hook overrides only the
points it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import torch
    from PIL import Image


@dataclass(frozen=True)
class PassInfo:
    """One sampling pass of one batch, as a hook sees it. The UNet's batch is `blocks` x
    `batch` images: block 0 is the negative prompt when `with_uncond`, the others are the
    prompt's (AND makes several)."""

    width: int  # pixels
    height: int
    hires: bool  # the hires-fix second pass
    steps: int  # the steps this pass runs
    batch: int
    blocks: int
    with_uncond: bool
    device: Any
    dtype: Any
    img2img: bool = False
    # Inpainting "Only masked": the pass works on `box` (left, top, right, bottom) of a picture
    # of `size`, given as (size, box); add-ons with pictures of their own crop them alike.
    crop: tuple[tuple[int, int], tuple[int, int, int, int]] | None = None


@dataclass(frozen=True)
class DenoiserCall:
    """One UNet call. `latents` are the model input without an inpainting model's extra
    channels, already repeated per block; `step` counts from 0 within the pass."""

    latents: "torch.Tensor"
    t: Any
    step: int
    encoder_hidden_states: "torch.Tensor"
    added_cond_kwargs: dict | None
    info: PassInfo


class JobHook:
    """Base class: every hook point, doing nothing."""

    def pass_started(self, info: PassInfo) -> None:
        """Before a pass's first step (parameters of the pass are final)."""

    def batch_prompts(self, index: int, seeds: list[int], subseeds: list[int]) -> tuple[str, str] | None:
        """Before batch `index` is conditioned: (prompt, negative prompt) to draw it with instead
        of the job's, or None to keep them (A1111's process_batch may change p.prompts)."""
        return None

    def denoiser_call(self, call: DenoiserCall) -> DenoiserCall:
        """Before each UNet call: the call to make, possibly with other latents or text
        embeddings of the same shapes (A1111's on_cfg_denoiser)."""
        return call

    def unet_kwargs(self, call: DenoiserCall) -> dict | None:
        """Extra keyword arguments for this UNet call, e.g. ControlNet's
        `down_block_additional_residuals` and `mid_block_additional_residual`."""
        return None

    def step_done(self, info: PassInfo, step: int) -> None:
        """After each sampling step (1-based `step` within the pass)."""

    def image_decoded(self, image: "Image.Image", index: int) -> "Image.Image":
        """Each decoded picture of a batch; returns the picture to keep."""
        return image


_RESIDUALS = ("down_block_additional_residuals", "mid_block_additional_residual")


class Hooks:
    """The hooks registered for one job, called in order."""

    def __init__(self, hooks: Iterable[JobHook] = ()):
        self.hooks = tuple(hooks)

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def pass_started(self, info: PassInfo) -> None:
        for hook in self.hooks:
            hook.pass_started(info)

    def batch_prompts(self, index: int, seeds: list[int], subseeds: list[int]) -> tuple[str, str] | None:
        """The last hook's prompts for the batch, each hook seeing the batch as the ones before it left it."""
        chosen = None
        for hook in self.hooks:
            chosen = hook.batch_prompts(index, seeds, subseeds) or chosen
        return chosen

    def denoiser_call(self, call: DenoiserCall) -> DenoiserCall:
        for hook in self.hooks:
            call = hook.denoiser_call(call)
        return call

    def unet_kwargs(self, call: DenoiserCall) -> dict:
        """Every hook's extra UNet arguments; residuals from several hooks are added up, any
        other argument set twice is an error (two hooks would silently fight over it)."""
        merged: dict = {}
        for hook in self.hooks:
            for name, value in (hook.unet_kwargs(call) or {}).items():
                if name not in merged:
                    merged[name] = value
                elif name == _RESIDUALS[0]:
                    merged[name] = [a + b for a, b in zip(merged[name], value)]
                elif name == _RESIDUALS[1]:
                    merged[name] = merged[name] + value
                else:
                    raise ValueError(f"Two add-ons set the UNet argument '{name}' for the same step.")
        return merged

    def step_done(self, info: PassInfo, step: int) -> None:
        for hook in self.hooks:
            hook.step_done(info, step)

    def image_decoded(self, image: "Image.Image", index: int) -> "Image.Image":
        for hook in self.hooks:
            image = hook.image_decoded(image, index)
        return image
