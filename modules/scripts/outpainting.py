"""A1111's two img2img outpainting scripts: extend the picture left, right, up and/or down and
let the model paint the new border through an inpainting mask, keeping the original pixels.

- "Outpainting mk2": one side at a time (left, right, up, down, in that order). Each pass
  widens the canvas, fills the new strip with matched noise (modules.scripts.outpaint_pixels),
  and inpaints the edge of the canvas at most the request's width (or height) wide, with
  "original" as masked content and a mask blurred 4x the Mask blur.
- "Poor man's outpainting": one canvas with every side added, the border filled per Masked
  content, inpainted in overlapping tiles of the request's size (the tiles lying wholly inside
  the original are left alone) and stitched back as SD upscale does, mask blurred 2x.

Either way the grown size is rounded up to a multiple of 64 (see `expansion`). Each inpaint is
a child img2img job, exactly the job a user would run with that picture and mask; its result is
composited onto its own init through the blurred mask, so pixels outside the mask come back
unchanged.

Where this differs from A1111 (on purpose): the mask rectangles end where the new strip
begins (A1111's inclusive rectangle keeps one unpainted column or row at the start of a right
or bottom strip); the child job blends latents with its own blurred mask (A1111 also passes a
sharper "latent mask"); the blur is one radius for both axes (A1111 blurs only along the axes
being extended), capped at the img2img Mask blur maximum (64); a random seed (-1) is drawn once
for the run, and batch count n starts from that seed + n x batch size, so the infotext's seed
reproduces the picture (A1111 draws per pass, or repeats a fixed seed in every batch).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from modules.generation.params import MASKED_CONTENT, Img2ImgParams
from modules.scripts.args import ScriptArg
from modules.scripts.base import SEEDS, Script, ScriptEnv, ScriptRequest, ScriptResult, fixed_seeds
from modules.scripts.outpaint_pixels import DIRECTIONS, expansion, noised_picture
from modules.outputs.tiles import combine, split

if TYPE_CHECKING:  # Pillow loads when a picture is made, not when the registry starts
    from PIL import Image

MK2_INFO = '<p style="margin-bottom:0.75em">Recommended settings: Sampling Steps: 80-100, Sampler: Euler a, Denoising strength: 0.8</p>'
MAX_BLUR = int(Img2ImgParams.field_meta("mask_blur")["maximum"])


def _directions(title: str, position: int, values: list[str]) -> list[str]:
    chosen = [str(v).strip().lower() for v in values]
    unknown = [v for v in chosen if v not in DIRECTIONS]
    if unknown:
        raise ValueError(f"{title}: argument {position} (Outpainting direction, direction): {', '.join(map(repr, unknown))} "
                         f"is not one of: {', '.join(DIRECTIONS)}")
    if not chosen:
        raise ValueError(f"{title}: argument {position} (Outpainting direction, direction): choose at least one of "
                         f"{', '.join(DIRECTIONS)}")
    return chosen


def _keep_rectangle(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """A mask, white (repaint) everywhere but black (keep) over box = (left, top, right, bottom),
    right and bottom exclusive."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", size, 255)
    left, top, right, bottom = box
    if right > left and bottom > top:
        ImageDraw.Draw(mask).rectangle((left, top, right - 1, bottom - 1), fill=0)
    return mask


def _inpaint_params(params, blur: int, fill: int, **update: Any):
    """A child job's parameters: the request's with the inpainting settings the scripts force."""
    return params.model_copy(update={"mask_blur": min(blur, MAX_BLUR), "inpainting_fill": fill, "inpaint_full_res": False,
                                     "inpainting_mask_invert": 0, "resize_mode": 0, "n_iter": 1, **update})


def mk2_geometry(width: int, height: int, side: str, amount: int, max_w: int, max_h: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    """One Outpainting mk2 side on a width x height picture: the canvas size (the grown size
    rounded up to 64), the grown size, and the box of the canvas the model works on: at most
    the request's width (height) across the new strip, the whole canvas along it, whole
    multiples of 8 as the model needs."""
    horizontal = side in ("left", "right")
    first = side in ("left", "up")  # the new strip is at the start (left or top) of the canvas
    out_w, out_h = width + (amount if horizontal else 0), height + (0 if horizontal else amount)
    canvas_w, canvas_h = math.ceil(out_w / 64) * 64, math.ceil(out_h / 64) * 64
    crop_w = min(max_w, out_w - out_w % 8) if horizontal else canvas_w
    crop_h = canvas_h if horizontal else min(max_h, out_h - out_h % 8)
    x0 = 0 if first or not horizontal else canvas_w - crop_w
    y0 = 0 if first or horizontal else canvas_h - crop_h
    return (canvas_w, canvas_h), (out_w, out_h), (x0, y0, x0 + crop_w, y0 + crop_h)


def mk2_pass(pictures: list[Image.Image], side: str, amount: int, blur: int, noise_q: float, color_variation: float,
             max_w: int, max_h: int) -> tuple[list[Image.Image], list[Image.Image], Image.Image, tuple[int, int, int, int], tuple[int, int]]:
    """One Outpainting mk2 side. Returns the noised canvases, the crops to inpaint, their
    mask, where the crop lies on the canvas, and the size to crop the canvas to afterwards."""
    from PIL import Image

    (canvas_w, canvas_h), (out_w, out_h), box = mk2_geometry(*pictures[0].size, side, amount, max_w, max_h)
    at = (amount if side == "left" else 0, amount if side == "up" else 0)
    reach = amount + blur  # the new strip plus `blur` pixels of the picture are repainted
    keep = (reach if side == "left" else 0, reach if side == "up" else 0,
            canvas_w - reach if side == "right" else out_w, canvas_h - reach if side == "down" else out_h)
    mask = _keep_rectangle((canvas_w, canvas_h), keep)
    noised: dict[int, Image.Image] = {}  # a batch's first pass starts from one picture: fill it once
    canvases = []
    for picture in pictures:
        if id(picture) not in noised:
            canvas = Image.new("RGB", (canvas_w, canvas_h))
            canvas.paste(picture, at)
            noised[id(picture)] = noised_picture(canvas, mask, noise_q, color_variation)
        canvases.append(noised[id(picture)].copy())
    return canvases, [c.crop(box) for c in canvases], mask.crop(box), box, (out_w, out_h)


class OutpaintingMk2(Script):
    title = "Outpainting mk2"
    txt2img = False

    def args(self, env: ScriptEnv, img2img: bool) -> list[ScriptArg]:
        # A1111's ui() returns the info HTML first, so API clients send a placeholder for it.
        return [
            ScriptArg("info", "", "text", MK2_INFO, visible=False),
            ScriptArg("pixels", "Pixels to expand", "slider", 128, minimum=8, maximum=256, step=8),
            ScriptArg("mask_blur", "Mask blur", "slider", 8, minimum=0, maximum=64, step=1),
            ScriptArg("direction", "Outpainting direction", "multiselect", list(DIRECTIONS), choices=DIRECTIONS),
            ScriptArg("noise_q", "Fall-off exponent (lower=higher detail)", "slider", 1.0, minimum=0.0, maximum=4.0, step=0.01),
            ScriptArg("color_variation", "Color variation", "slider", 0.05, minimum=0.0, maximum=1.0, step=0.01),
        ]

    def prepare(self, request: ScriptRequest, args: dict[str, Any], env: ScriptEnv) -> Callable:
        params = request.params
        source = request.init_picture(f"{self.title} needs an init image: it extends the img2img picture.")
        directions = _directions(self.title, 3, args["direction"])
        pixels, blur = int(args["pixels"]), int(args["mask_blur"])
        noise_q, color_variation = float(args["noise_q"]), float(args["color_variation"])
        amounts = dict(zip(DIRECTIONS, expansion(source.width, source.height, pixels, directions)))
        sides = [side for side in DIRECTIONS if amounts[side] > 0]
        env.check_count(self.title, len(sides) * params.n_iter)
        base = params.model_copy(update=fixed_seeds(params))
        count = params.batch_size

        def child_params(box: tuple[int, int, int, int], seed: int):
            return _inpaint_params(base, 4 * blur, 1, seed=seed % SEEDS, batch_size=count, width=box[2] - box[0], height=box[3] - box[1])

        # Each side's job, as large as it will be (each batch's differ only in the seed): checked now.
        size = source.size
        for side in sides:
            canvas, size, box = mk2_geometry(*size, side, amounts[side], params.width, params.height)
            env.check_size(self.title, *canvas, "canvas")  # the matched noise's FFTs cover it all
            env.check_job(child_params(box, base.seed))

        def outpaint(ctx, out: ScriptResult, seed: int, done: int) -> list[tuple[Image.Image, int]] | None:
            """One batch: every chosen side in turn; its pictures and their seeds, None when interrupted."""
            from modules.generation.runner import InitImages
            from modules.scripts.context import ScriptStopped

            pictures, seeds = [source] * count, [seed] * count
            for step, side in enumerate(sides):
                if ctx.stopped:
                    return None
                ctx.progress(done + step, total, f"{self.title}: {side}")
                # The matched noise (FFTs of the whole canvas) takes its turn on the worker, as other heavy work does.
                try:
                    canvases, crops, mask, box, size = ctx.on_worker(self.title, lambda: mk2_pass(
                        pictures, side, amounts[side], blur, noise_q, color_variation, params.width, params.height))
                except ScriptStopped:
                    return None
                result = ctx.run_all([{"params": child_params(box, seed), "init": InitImages(tuple(crops), mask), "save": False}])[0]
                out.add(result, include=False)
                if ctx.stopped or result is None or len(result.images) < count:
                    return None
                for canvas, image in zip(canvases, result.images):
                    canvas.paste(image.convert("RGB"), box[:2])
                pictures = [canvas.crop((0, 0, *size)) for canvas in canvases]
                seeds = list(result.seeds[:count])
            return list(zip(pictures, seeds))

        total = len(sides) * params.n_iter

        def run(ctx) -> ScriptResult:
            from modules.outputs.saving import make_grid

            outcome = ScriptResult(base)
            finished: list[tuple[Image.Image, int]] = []
            for n in range(params.n_iter):
                batch = outpaint(ctx, outcome, (base.seed + n * count) % SEEDS, n * len(sides))
                if batch is None:
                    break
                finished += batch
            for picture, seed in finished:
                final = base.model_copy(update={"seed": seed, "width": picture.width, "height": picture.height})
                infotext = ctx.infotext(final, seed)
                outcome.add_picture(picture, infotext, final, seed, ctx.save_image(picture, infotext, final, seed), subseed=base.subseed)
            if len(finished) > 1:  # A1111 shows (and with grid_save saves) the batch's grid first
                grid = make_grid([p for p, _ in finished])
                outcome.add_grid(grid, outcome.infotexts[0], ctx.save_grid(grid, outcome.infotexts[0], base), seed=finished[0][1])
            outcome.interrupted = ctx.stopped
            return outcome

        return run


class PoorMansOutpainting(Script):
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
        directions = _directions(self.title, 3, args["direction"])
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
        mask = _keep_rectangle(canvas.size, (left + (band if left else 0), up + (band if up else 0),
                                             canvas.width - right - (band if right else 0), canvas.height - down - (band if down else 0)))
        grid, mask_grid = split(canvas, tile_w, tile_h, pixels), split(mask, tile_w, tile_h, pixels)

        def inside(tile) -> bool:  # wholly within the original: nothing to paint
            return tile.x >= left and tile.x + tile_w <= canvas.width - right and tile.y >= up and tile.y + tile_h <= canvas.height - down

        work = [(tile, m) for tile, m in zip(grid.tiles, mask_grid.tiles) if not inside(tile)]
        try:
            env.check_count(self.title, len(work), f"tiles of {tile_w}x{tile_h}")
        except ValueError as exc:
            raise ValueError(f"{exc} Use larger tiles (Width, Height).") from None
        base = params.model_copy(update={**fixed_seeds(params), "n_iter": 1, "batch_size": 1})

        def child_params(index: int):
            return _inpaint_params(base, band, fill, seed=(base.seed + index) % SEEDS, batch_size=1)

        env.check_job(child_params(0))  # every tile's job is this one but for its picture and seed

        def run(ctx) -> ScriptResult:
            from modules.generation.runner import InitImages

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
            picture = combine(grid)
            final = base.model_copy(update={"width": picture.width, "height": picture.height})
            infotext = ctx.infotext(final, base.seed)
            out.add_picture(picture, infotext, final, base.seed, ctx.save_image(picture, infotext, final, base.seed), subseed=base.subseed)
            out.interrupted = ctx.stopped
            return out

        return run
