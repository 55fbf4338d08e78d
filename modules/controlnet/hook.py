"""ControlNet's residuals, added to each UNet call through the generation core's hook points.

Follows the A1111 ControlNet extension's semantics, so a unit steers the same way here:
- a unit acts while (step / steps of the pass) lies within [guidance_start, guidance_end];
- "My prompt is more important" scales residual i of 13 by weight x 0.825^(12 - i) (SDXL keeps
  the first 10), weaker towards the UNet's input ("soft injection");
- "ControlNet is more important" is soft injection with no residual on the negative prompt,
  so classifier-free guidance amplifies the control;
- in the hires-fix pass canny and mlsd maps are always injected softly (sharp edges upscaled
  otherwise leave artefacts), and `hr_option` keeps a unit to one pass;
- several units' residuals add up; weight 0 leaves the unit out entirely;
- "Low VRAM" keeps a unit's ControlNet on the CPU except during its own call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from modules.controlnet import resize
from modules.controlnet.units import CONTROL_FIRST, BALANCED, UnitSettings
from modules.generation.hooks import DenoiserCall, JobHook, PassInfo

SOFT_BASE, SOFT_COUNT = 0.825, 13  # the extension's soft-injection decay over SD's 13 residuals
_HIRES_SOFT = ("canny", "mlsd")  # preprocessors the extension always injects softly in the hires pass


@dataclass
class PreparedUnit:
    """A unit ready to run: its settings (defaults resolved), its ControlNet, and its detected
    map at the preprocessor's resolution (fitted to each pass's size when the pass starts)."""

    settings: UnitSettings
    model: Any  # diffusers.ControlNetModel on the checkpoint's device and dtype
    detected_map: Image.Image
    preprocessor: str = "none"
    _conditions: dict = field(default_factory=dict, repr=False)  # (width, height, crop) -> [1, 3, H, W] tensor

    def runs_in(self, info: PassInfo) -> bool:
        if self.settings.weight == 0 or not self.settings.enabled:
            return False
        option = self.settings.hr_option
        return option == "Both" or (option == "High res only") == info.hires

    def condition(self, info: PassInfo) -> torch.Tensor:
        """The map fitted to the pass (the unit's resize mode) as the ControlNet takes it."""
        key = (info.width, info.height, info.crop)
        if key not in self._conditions:
            source = self.detected_map
            if info.crop is not None:  # "Only masked" inpainting: the same part of the map as of the picture
                size, box = info.crop
                source = resize.fit(source, *size, "Just Resize").crop(box)
            fitted = resize.fit(source, info.width, info.height, self.settings.resize_mode)
            array = resize.control_array(fitted)
            tensor = torch.from_numpy(array).permute(2, 0, 1)[None]
            self._conditions[key] = tensor.to(info.device, self.model.dtype)
        return self._conditions[key]

    def scales(self, count: int, hires: bool) -> list[float]:
        """One scale per residual (downs then mid), as the extension weighs them."""
        weight = self.settings.weight
        soft = self.settings.control_mode != BALANCED or (hires and any(name in self.preprocessor for name in _HIRES_SOFT))
        if not soft:
            return [weight] * count
        decay = [weight * SOFT_BASE ** float(SOFT_COUNT - 1 - i) for i in range(SOFT_COUNT)]
        return (decay + [weight] * count)[:count]


class ControlNetHook(JobHook):
    """Adds the enabled units' residuals to every UNet call of a job."""

    def __init__(self, units: list[PreparedUnit]):
        self.units = list(units)
        self._active: list[PreparedUnit] = []

    def pass_started(self, info: PassInfo) -> None:
        self._active = [unit for unit in self.units if unit.runs_in(info)]

    def unet_kwargs(self, call: DenoiserCall) -> dict | None:
        info = call.info
        fraction = call.step / max(info.steps, 1)
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        for unit in self._active:
            s = unit.settings
            if fraction < s.guidance_start or fraction > s.guidance_end:
                continue
            unit_down, unit_mid = self._run(unit, call)
            down = unit_down if down is None else [a + b for a, b in zip(down, unit_down)]
            mid = unit_mid if mid is None else mid + unit_mid
        if down is None:
            return None
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}

    @staticmethod
    def _run(unit: PreparedUnit, call: DenoiserCall) -> tuple[list[torch.Tensor], torch.Tensor]:
        info, model = call.info, unit.model
        latents = call.latents
        cond = unit.condition(info).expand(latents.shape[0], -1, -1, -1)
        added = call.added_cond_kwargs
        device = getattr(model, "device", latents.device)
        if device != latents.device:  # a Low VRAM unit's model waits on the CPU between calls
            model.to(latents.device)
        try:
            down, mid = model(
                latents.to(model.dtype), call.t, encoder_hidden_states=call.encoder_hidden_states.to(model.dtype), controlnet_cond=cond,
                conditioning_scale=1.0, added_cond_kwargs=added, return_dict=False,
            )
        finally:
            if unit.settings.low_vram and latents.device.type != "cpu":
                model.to("cpu")  # the extension's Low VRAM: the ControlNet is on the GPU only for its own call
        scales = unit.scales(len(down) + 1, info.hires)
        down = [d * scale for d, scale in zip(down, scales)]
        mid = mid * scales[-1]
        if unit.settings.control_mode == CONTROL_FIRST and info.with_uncond:
            # the negative prompt's block (the first `batch` rows) gets no control
            mark = torch.ones((latents.shape[0], 1, 1, 1), device=latents.device, dtype=mid.dtype)
            mark[: info.batch] = 0
            down = [d * mark for d in down]
            mid = mid * mark
        return down, mid
