"""A1111's "Poor man's outpainting" (img2img): one canvas with every chosen side added, the
border filled per Masked content, inpainted in overlapping tiles of the request's size (the tiles
lying wholly inside the original are left alone) and stitched back as SD upscale does, mask
blurred 2x. The grown size is rounded up to a multiple of 64 (see `expansion`); each tile is a
child img2img job, composited onto its own init through the blurred mask.

Where this differs from A1111 (on purpose): the mask rectangle ends where the new strip begins;
the blur is one radius for both axes, capped at the img2img Mask blur maximum (64); a random
seed (-1) is drawn once for the run, tile i taking that seed + i.
"""

from __future__ import annotations

from typing import Any, Callable

from modules.extensions.api import (
    MASKED_CONTENT, SEEDS, InitImages, QueueScript, ScriptArg, ScriptEnv, ScriptRequest, ScriptResult, fixed_seeds, tiles,
)

from ..lib_classic.outpaint_pixels import DIRECTIONS, expansion
from ..lib_classic.outpainting import checked_directions, inpaint_params, keep_rectangle


class PoorMansOutpainting(QueueScript):
    title = "Poor man's outpainting"
    txt2img = False

    def args(self, env: ScriptEnv, img2img: bool) -> list[ScriptArg]:
        return [
            ScriptArg("pixels", "Pixels to expand", "slider", 128, minimum=8, maximum=256, step=8),
            ScriptArg("mask_blur", "Mask blur", "slider", 4, minimum=0, maximum=64, step=1),
            ScriptArg("inpainting_fill", "Masked content", "index", 0, choices=MASKED_CONTENT),
            ScriptArg("direction", "Outpainting direction", "multiselect", list(DIRECTIONS), choices=DIRECTIONS),
        ]

    def prepare(self, request: ScriptRequest, args: dict[str, Any], env: ScriptEnv) -> Callable:
        from PIL import Image

        params = request.params
        source = request.init_picture(f"{self.title} needs an init image: it extends the img2img picture.")
        directions = checked_directions(self.title, 3, args["direction"])
        pixels, blur, fill = int(args["pixels"]), int(args["mask_blur"]), int(args["inpainting_fill"])
        tile_w, tile_h = params.width, params.height
        if pixels >= min(tile_w, tile_h):
            raise ValueError(f"{self.title}: argument 0 (Pixels to expand, pixels): {pixels} is also the tiles' overlap and must be "
                             f"smaller than the tile, which is the Width x Height of the request ({tile_w}x{tile_h}).")
        left, right, up, down = expansion(source.width, source.height, pixels, directions)
        env.check_size(self.title, source.width + left + right, source.height + up + down)
        canvas = Image.new("RGB", (source.width + left + right, source.height + up + down))
        canvas.paste(source, (left, up))
        band = 2 * blur  # the original's edge repainted on each extended side
        mask = keep_rectangle(canvas.size, (left + (band if left else 0), up + (band if up else 0),
                                             canvas.width - right - (band if right else 0), canvas.height - down - (band if down else 0)))
        grid, mask_grid = tiles.split(canvas, tile_w, tile_h, pixels), tiles.split(mask, tile_w, tile_h, pixels)

        def inside(tile) -> bool:  # wholly within the original: nothing to paint
            return tile.x >= left and tile.x + tile_w <= canvas.width - right and tile.y >= up and tile.y + tile_h <= canvas.height - down

        work = [(tile, m) for tile, m in zip(grid.tiles, mask_grid.tiles) if not inside(tile)]
        try:
            env.check_count(self.title, len(work), f"tiles of {tile_w}x{tile_h}")
        except ValueError as exc:
            raise ValueError(f"{exc} Use larger tiles (Width, Height).") from None
        base = params.model_copy(update={**fixed_seeds(params), "n_iter": 1, "batch_size": 1})

        def child_params(index: int):
            return inpaint_params(base, band, fill, seed=(base.seed + index) % SEEDS, batch_size=1)

        env.check_job(child_params(0))  # every tile's job is this one but for its picture and seed

        def run(ctx) -> ScriptResult:
            out = ScriptResult(base)
            items = [{"params": child_params(i),
                      "init": InitImages((tile.image,), m.image), "save": False} for i, (tile, m) in enumerate(work)]
            results = ctx.run_all(items)
            for (tile, _), result in zip(work, results):
                out.add(result, include=False)
                if result is not None and result.images:
                    tile.image = result.images[0]
            if ctx.stopped and not any(r is not None and r.images for r in results):
                out.interrupted = True
                return out
            picture = tiles.combine(grid)
            final = base.model_copy(update={"width": picture.width, "height": picture.height})
            infotext = ctx.infotext(final, base.seed)
            out.add_picture(picture, infotext, final, base.seed, ctx.save_image(picture, infotext, final, base.seed), subseed=base.subseed)
            out.interrupted = ctx.stopped
            return out

        return run
