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
