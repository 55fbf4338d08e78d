"""A1111's Tiling: seamless pictures that wrap around left to right and top to bottom.

A1111 makes every 2D convolution of the model pad circularly while a job asks for tiling:
each convolution then sees the opposite edge beyond the picture's border, so the UNet and the
VAE draw the picture as if it repeated, and copies of it placed side by side show no seam.
Here it is done for one job's work at a time and undone afterwards, so the next job (which
may not want tiling) finds the model as it was.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch


@contextmanager
def circular(models: Iterable[torch.nn.Module | None], enabled: bool = True) -> Iterator[None]:
    """Within the block every Conv2d of `models` pads by wrapping around (when `enabled`);
    afterwards each one has its own padding mode back, also when the block raised."""
    changed: list[tuple[torch.nn.Conv2d, str]] = []
    if enabled:
        for model in models:
            for layer in model.modules() if model is not None else ():
                padded = layer.padding not in ((0, 0), "valid") if isinstance(layer, torch.nn.Conv2d) else False
                if padded and layer.padding_mode != "circular":  # unpadded ones (1x1) read no border
                    changed.append((layer, layer.padding_mode))
                    layer.padding_mode = "circular"
    try:
        yield
    finally:
        for layer, mode in changed:
            layer.padding_mode = mode
