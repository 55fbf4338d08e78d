"""Overlapping tiles of a picture, as A1111's SD upscale and Poor man's outpainting cut them,
and the stitching back with a linear fade across each overlap.

The positions follow A1111 exactly (so a tile here is the same crop a user of A1111 gets):
as few tiles as cover the picture with at least `overlap` shared pixels, spread evenly, the
last one flush with the far edge. A picture smaller than a tile gives one tile that reaches
past the picture (the crop pads with black), as in A1111.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and Pillow load when a picture is stitched, not when the registry starts
    from PIL import Image


@dataclass
class Tile:
    x: int
    y: int
    image: "Image.Image"


@dataclass
class TileGrid:
    """Rows of tiles (top to bottom, each left to right) of a `width` x `height` picture."""

    width: int
    height: int
    tile_w: int
    tile_h: int
    overlap: int
    rows: list[list[Tile]] = field(default_factory=list)

    @property
    def tiles(self) -> list[Tile]:
        """Every tile in A1111's work order: row by row, left to right."""
        return [tile for row in self.rows for tile in row]

    @property
    def columns(self) -> int:
        return len(self.rows[0]) if self.rows else 0


def positions(size: int, tile: int, overlap: int) -> list[int]:
    """Where tiles start along one side: ceil((size - overlap) / (tile - overlap)) of them,
    spaced evenly (truncated to whole pixels), the last moved back to end at the edge."""
    if tile <= overlap:
        raise ValueError(f"the tile ({tile} px) must be larger than the overlap ({overlap} px)")
    count = max(1, math.ceil((size - overlap) / (tile - overlap)))
    step = (size - tile) / (count - 1) if count > 1 else 0
    starts = []
    for i in range(count):
        start = int(i * step)
        if start + tile >= size:
            start = size - tile
        starts.append(start)
    return starts


def tile_count(width: int, height: int, tile_w: int, tile_h: int, overlap: int) -> int:
    return len(positions(width, tile_w, overlap)) * len(positions(height, tile_h, overlap))


def split(image: "Image.Image", tile_w: int, tile_h: int, overlap: int) -> TileGrid:
    """Cut `image` into tile_w x tile_h crops that overlap by at least `overlap` pixels."""
    grid = TileGrid(image.width, image.height, tile_w, tile_h, overlap)
    xs = positions(image.width, tile_w, overlap)
    for y in positions(image.height, tile_h, overlap):
        grid.rows.append([Tile(x, y, image.crop((x, y, x + tile_w, y + tile_h))) for x in xs])
    return grid


def _ramp(length: int, across: int, horizontal: bool) -> "Image.Image":
    """The fade mask over an overlap: 0 where the earlier tile shows, rising by 255/overlap a
    pixel (whole values, truncated) towards the later tile."""
    import numpy as np
    from PIL import Image

    ramp = (np.arange(length, dtype=np.float32) * 255 / length).astype(np.uint8)
    array = np.tile(ramp, (across, 1)) if horizontal else np.tile(ramp[:, None], (1, across))
    return Image.fromarray(array, "L")


def combine(grid: TileGrid) -> "Image.Image":
    """Stitch the grid's tiles (replaced by their processed versions) into one picture. Each
    tile after the first in a row fades in over its first `overlap` columns and covers what is
    to its right; each row after the first fades in over its first `overlap` rows likewise."""
    from PIL import Image

    overlap = grid.overlap
    picture = Image.new("RGB", (grid.width, grid.height))
    across = _ramp(overlap, grid.tile_h, True) if overlap else None
    down = _ramp(overlap, grid.width, False) if overlap else None
    for row in grid.rows:
        y, h = row[0].y, grid.tile_h
        strip = Image.new("RGB", (grid.width, h))
        for tile in row:
            image = tile.image.convert("RGB")
            if tile.x == 0 or not overlap:
                strip.paste(image, (tile.x, 0))
                continue
            strip.paste(image.crop((0, 0, overlap, h)), (tile.x, 0), across)
            strip.paste(image.crop((overlap, 0, grid.tile_w, h)), (tile.x + overlap, 0))
        if y == 0 or not overlap:
            picture.paste(strip, (0, y))
            continue
        picture.paste(strip.crop((0, 0, grid.width, overlap)), (0, y), down)
        picture.paste(strip.crop((0, overlap, grid.width, h)), (0, y + overlap))
    return picture
