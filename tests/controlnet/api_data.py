"""A data folder for the ControlNet API tests: the tiny checkpoint, a tiny random ControlNet
made for it (LDM single file, as ControlNet 1.1 is distributed) and one for SDXL (diffusers
single file), the wrong architecture for the tiny model. Plus small pictures to condition on."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image, ImageDraw

from tests.controlnet.tiny import tiny_controlnet, tiny_unet, write_controlnet
from tests.servers import data_dir_with_tiny_model

FITS = "tiny-sd1-canny"  # models/ControlNet/tiny-sd1-canny.safetensors
WRONG_ARCH = "tiny-xl-canny"  # models/ControlNet/tiny-xl-canny.safetensors


def controlnet_data_dir(data: Path, tiny_checkpoint: Path) -> Path:
    data = data_dir_with_tiny_model(data, tiny_checkpoint)
    folder = data / "models" / "ControlNet"
    write_controlnet(tiny_controlnet(tiny_unet("tiny-sd1"), seed=3), folder / f"{FITS}.safetensors", layout="ldm")
    write_controlnet(tiny_controlnet(tiny_unet("sdxl"), seed=4), folder / f"{WRONG_ARCH}.safetensors", layout="diffusers-file")
    return data


def square(size: int = 64, box: tuple[int, int, int, int] = (8, 16, 32, 48)) -> Image.Image:
    """A white square on black: its canny map is the square's outline."""
    image = Image.new("RGB", (size, size), (0, 0, 0))
    ImageDraw.Draw(image).rectangle(box, fill=(255, 255, 255))
    return image


def is_outline(edges, box: tuple[int, int, int, int] = (8, 16, 32, 48)) -> bool:
    """Whether an edge map (HxW) holds the square `box`'s outline (within a pixel of each
    side, as canny puts it) and nothing well inside it or far outside it."""
    left, top, right, bottom = box
    mid_y, mid_x = (top + bottom) // 2, (left + right) // 2
    sides = [edges[mid_y, left - 1:left + 2], edges[mid_y, right - 1:right + 2], edges[top - 1:top + 2, mid_x], edges[bottom - 1:bottom + 2, mid_x]]
    inside = edges[top + 3:bottom - 2, left + 3:right - 2]
    outside = edges.copy()
    outside[max(0, top - 2):bottom + 3, max(0, left - 2):right + 3] = 0
    return all(side.max() == 255 for side in sides) and inside.max() == 0 and outside.max() == 0


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def unb64(text: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    image.load()
    return image
