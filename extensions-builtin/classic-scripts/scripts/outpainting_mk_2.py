"""A1111's "Outpainting mk2" (img2img): extend the picture left, right, up and/or down and let
the model paint the new border through an inpainting mask, keeping the original pixels.

One side at a time (left, right, up, down, in that order): each pass widens the canvas (the
grown size rounded up to a multiple of 64, see `expansion`), fills the new strip with matched
noise (lib_classic.outpaint_pixels), and inpaints the edge of the canvas at most the request's
width (or height) wide, with "original" as masked content and a mask blurred 4x the Mask blur.

Where this differs from A1111 (on purpose): the mask rectangles end where the new strip
begins (A1111's inclusive rectangle keeps one unpainted column or row at the start of a right
or bottom strip); the child job blends latents with its own blurred mask (A1111 also passes a
sharper "latent mask"); the blur is one radius for both axes (A1111 blurs only along the axes
being extended), capped at the img2img Mask blur maximum (64); a random seed (-1) is drawn once
for the run, and batch count n starts from that seed + n x batch size, so the infotext's seed
reproduces the picture (A1111 draws per pass, or repeats a fixed seed in every batch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from modules.extensions.api import (
    SEEDS, InitImages, QueueScript, ScriptArg, ScriptEnv, ScriptRequest, ScriptResult, ScriptStopped, fixed_seeds, make_grid,
)

from ..lib_classic.outpaint_pixels import DIRECTIONS, expansion
from ..lib_classic.outpainting import checked_directions, inpaint_params, mk2_geometry, mk2_pass

if TYPE_CHECKING:  # Pillow loads when a picture is made, not when the registry starts
    from PIL import Image

MK2_INFO = '<p style="margin-bottom:0.75em">Recommended settings: Sampling Steps: 80-100, Sampler: Euler a, Denoising strength: 0.8</p>'


class OutpaintingMk2(QueueScript):
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
        directions = checked_directions(self.title, 3, args["direction"])
        pixels, blur = int(args["pixels"]), int(args["mask_blur"])
        noise_q, color_variation = float(args["noise_q"]), float(args["color_variation"])
        amounts = dict(zip(DIRECTIONS, expansion(source.width, source.height, pixels, directions)))
        sides = [side for side in DIRECTIONS if amounts[side] > 0]
        env.check_count(self.title, len(sides) * params.n_iter)
        base = params.model_copy(update=fixed_seeds(params))
        count = params.batch_size

        def child_params(box: tuple[int, int, int, int], seed: int):
            return inpaint_params(base, 4 * blur, 1, seed=seed % SEEDS, batch_size=count, width=box[2] - box[0], height=box[3] - box[1])

        # Each side's job, as large as it will be (each batch's differ only in the seed): checked now.
        size = source.size
        for side in sides:
            canvas, size, box = mk2_geometry(*size, side, amounts[side], params.width, params.height)
            env.check_size(self.title, *canvas, "canvas")  # the matched noise's FFTs cover it all
            env.check_job(child_params(box, base.seed))

        def outpaint(ctx, out: ScriptResult, seed: int, done: int) -> list[tuple[Image.Image, int]] | None:
            """One batch: every chosen side in turn; its pictures and their seeds, None when interrupted."""
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
