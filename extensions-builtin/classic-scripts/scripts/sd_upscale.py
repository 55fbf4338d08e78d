"""A1111's "SD upscale" (img2img): enlarge the init picture with an upscaler, cut it into
overlapping tiles of the request's width x height, run img2img on each tile, and stitch the
tiles back with a linear fade across each overlap. Batch count repeats the whole upscale with
the next seed.

Seeds follow A1111: batch count n starts at seed + n; A1111 sends the tiles in batches of
`batch_size`, each batch starting one seed after the previous batch's first seed, and tile j of
a batch takes that seed + j (the same seed for every tile when a variation strength is set, the
variation seed + j instead). Each tile here is its own child job with batch size 1 and the seed
A1111 gives that tile, so every tile is bit for bit the single img2img job of that tile and seed
(a batched job would only match to float rounding), and progress, interrupt and other users'
turns go tile by tile.
"""

from __future__ import annotations

from typing import Any, Callable

from modules.extensions.api import SEEDS, InitImages, QueueScript, ScriptArg, ScriptEnv, ScriptRequest, ScriptResult, fixed_seeds, tiles

INFO = '<p style="margin-bottom:0.75em">Will upscale the image by the selected scale factor; use width and height sliders to set tile size</p>'
NO_UPSCALE = "None"  # A1111's SD upscale leaves the picture as it is with the "None" upscaler


def upscaled_size(width: int, height: int, upscaler: str, scale: float) -> tuple[int, int]:
    """The size A1111's upscalers produce: each side times the scale, rounded down to a multiple
    of 8; unchanged for "None"."""
    if upscaler == NO_UPSCALE:
        return width, height
    return int((width * scale) // 8 * 8), int((height * scale) // 8 * 8)


def tile_seeds(start: int, count: int, batch_size: int, subseed: int, varied: bool) -> list[tuple[int, int]]:
    """(seed, variation seed) of each tile in work order, as A1111's batches give them; past
    2**32 - 1 (the largest a job takes) they wrap to 0, as the CPU generator reads them."""
    seeds = []
    for index in range(count):
        batch, slot = divmod(index, batch_size)
        seeds.append(((start + batch + (0 if varied else slot)) % SEEDS, (subseed + slot) % SEEDS))
    return seeds


class SDUpscale(QueueScript):
    title = "SD upscale"
    txt2img = False

    def args(self, env: ScriptEnv, img2img: bool) -> list[ScriptArg]:
        # A1111's ui() returns the info HTML first, so API clients send a placeholder for it.
        return [
            ScriptArg("info", "", "text", INFO, visible=False),
            ScriptArg("overlap", "Tile overlap", "slider", 64, minimum=0, maximum=256, step=16),
            ScriptArg("upscaler_index", "Upscaler", "index", 0, choices=tuple(env.upscalers())),
            ScriptArg("scale_factor", "Scale Factor", "slider", 2.0, minimum=1.0, maximum=4.0, step=0.05),
        ]

    def prepare(self, request: ScriptRequest, args: dict[str, Any], env: ScriptEnv) -> Callable:
        params = request.params
        source = request.init_picture("SD upscale needs an init image: it upscales the img2img picture.")
        names = env.upscalers()
        index = args["upscaler_index"]
        if not 0 <= index < len(names):
            raise ValueError(f"SD upscale: argument 2 (Upscaler, upscaler_index): index {index} is out of range 0-{len(names) - 1}")
        upscaler = names[index]
        overlap, scale = int(args["overlap"]), float(args["scale_factor"])
        tile_w, tile_h = params.width, params.height
        if overlap >= min(tile_w, tile_h):
            raise ValueError(f"SD upscale: argument 1 (Tile overlap, overlap): {overlap} must be smaller than the tile, "
                             f"which is the Width x Height of the request ({tile_w}x{tile_h}).")
        if upscaler != NO_UPSCALE and env.upscale is None:
            raise ValueError("SD upscale: this server has no upscalers.")

        width, height = upscaled_size(source.width, source.height, upscaler, scale)
        try:
            env.check_size("SD upscale", width, height, f"picture ({source.width}x{source.height} upscaled {scale:g}x)")
        except ValueError as exc:
            raise ValueError(f"{exc} Use a smaller Scale Factor or a smaller picture.") from None
        per_picture = tiles.tile_count(width, height, tile_w, tile_h, overlap)
        try:
            env.check_count("SD upscale", per_picture * params.n_iter, f"tiles ({per_picture} of {tile_w}x{tile_h} for each {width}x{height} picture)")
        except ValueError as exc:
            raise ValueError(f"{exc} Use larger tiles (Width, Height), a smaller scale or fewer batches.") from None

        base = params.model_copy(update=fixed_seeds(params))
        seed, subseed, varied = base.seed, base.subseed, bool(base.subseed_strength)
        # Every tile is this job but for its picture and seeds: checked as a request is, now.
        env.check_job(base.model_copy(update={"n_iter": 1, "batch_size": 1}))
        extras = [("SD upscale overlap", overlap), ("SD upscale upscaler", upscaler)]

        def run(ctx) -> ScriptResult:
            out = ScriptResult(base)
            if upscaler == NO_UPSCALE:
                picture = source
            else:
                ctx.progress(0, per_picture * params.n_iter, f"SD upscale: upscaling with {upscaler}")
                picture = ctx.on_worker("SD upscale", lambda: env.upscale(source, upscaler, width, height))
            grid = tiles.split(picture, tile_w, tile_h, overlap)
            sources = [tile.image for tile in grid.tiles]
            for n in range(params.n_iter):
                if ctx.stopped:
                    break
                start = (seed + n) % SEEDS
                items = []
                for tile, (tile_seed, tile_subseed) in zip(grid.tiles, tile_seeds(start, len(sources), params.batch_size, subseed, varied)):
                    update = {"seed": tile_seed, "subseed": tile_subseed, "n_iter": 1, "batch_size": 1}
                    items.append({"params": base.model_copy(update=update), "init": InitImages((tile.image,)), "save": False})
                results = ctx.run_all(items)
                for tile, original, result in zip(grid.tiles, sources, results):
                    out.add(result, include=False)
                    tile.image = result.images[0] if result is not None and result.images else original
                if not any(r is not None and r.images for r in results):
                    break
                picture_out = tiles.combine(grid)
                final = base.model_copy(update={"seed": start, "width": picture_out.width, "height": picture_out.height})
                infotext = ctx.infotext(final, start, extras)
                out.add_picture(picture_out, infotext, final, start, ctx.save_image(picture_out, infotext, final, start), subseed=subseed)
                for tile, original in zip(grid.tiles, sources):
                    tile.image = original
            out.interrupted = ctx.stopped
            return out

        return run
