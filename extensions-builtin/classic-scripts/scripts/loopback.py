"""A1111's "Loopback" (img2img): img2img of img2img of ... `loops` times, each job starting
from the previous one's picture, its seed one more than the previous one's, and its
denoising strength moving from the request's to "Final denoising strength" along a curve.
With a batch count above 1 the whole loop runs that many times from the original picture
(seeds keep counting up) and only each run's last picture is returned. A row of the pictures
is the grid, returned first, when there are two or more: A1111 keeps one history for the whole
run, so with a batch count above 1 its grid is the row of each batch's last picture too.

Each loop is a job of its own, queued only when the previous one has finished.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Callable

from modules.extensions.api import (
    InitImages, QueueScript, ScriptArg, ScriptEnv, ScriptRequest, ScriptResult, ScriptStopped, counted_seeds, make_grid,
)

CURVES = ("Aggressive", "Linear", "Lazy")
INTERROGATORS = MappingProxyType({"None": None, "CLIP": "clip", "DeepBooru": "deepdanbooru"})  # A1111's choice -> the API's model name


def denoising_strength(loop: int, loops: int, initial: float, final: float, curve: str) -> float:
    """The strength of loop `loop` (0 = the first, which uses the request's): A1111's curves over
    progress loop / (loops - 1): Aggressive rises as sin, Lazy as 1 - cos, Linear straight."""
    if loops == 1:
        return initial
    progress = loop / (loops - 1)
    if curve == "Aggressive":
        share = math.sin(progress * math.pi / 2)
    elif curve == "Lazy":
        share = 1 - math.cos(progress * math.pi / 2)
    else:
        share = progress
    return initial + (final - initial) * share


class Loopback(QueueScript):
    title = "Loopback"
    txt2img = False

    def args(self, env: ScriptEnv, img2img: bool) -> list[ScriptArg]:
        return [
            ScriptArg("loops", "Loops", "slider", 4, minimum=1, maximum=32, step=1),
            ScriptArg("final_denoising_strength", "Final denoising strength", "slider", 0.5, minimum=0, maximum=1, step=0.01),
            ScriptArg("denoising_curve", "Denoising strength curve", "choice", "Linear", choices=CURVES),
            ScriptArg("append_interrogation", "Append interrogated prompt at each iteration", "choice", "None",
                      choices=tuple(INTERROGATORS)),
        ]

    def prepare(self, request: ScriptRequest, args: dict[str, Any], env: ScriptEnv) -> Callable:
        if not request.img2img or request.init is None or not request.init.images:
            raise ValueError("Loopback: it is an img2img script and needs an init image.")
        params = request.params
        loops, batch_count = int(args["loops"]), params.n_iter
        env.check_count(self.title, loops * batch_count, "jobs (loops x batch count)")
        interrogator = INTERROGATORS[args["append_interrogation"]]
        if interrogator is not None:
            if env.interrogator is None:
                raise ValueError(f"Loopback: interrogation ({args['append_interrogation']}) is not available on this server.")
            try:
                env.interrogator.check(interrogator)  # its model files are there (else the message says what to download)
            except ValueError as exc:
                raise ValueError(f"Loopback: Append interrogated prompt ({args['append_interrogation']}): {exc}") from None
        initial, final, curve = params.denoising_strength, float(args["final_denoising_strength"]), args["denoising_curve"]
        # A1111 fixes the seeds first; each loop's seed is one more than the previous one's.
        jobs = loops * batch_count
        fixed: dict[str, Any] = {**counted_seeds(params, jobs - 1, self.title, "one per loop"), "n_iter": 1, "batch_size": 1}
        first_seed = fixed.pop("seed", params.seed)
        # Every loop's job differs only in seed, strength and (interrogated) prompt: the first and
        # the last loop's stand for them all here (a caption is checked when its loop is queued).
        last_strength = denoising_strength(loops - 1, loops, initial, final, curve)
        for seed, strength in ((first_seed, initial), (first_seed + jobs - 1, last_strength)):
            try:
                env.check_job(params.model_copy(update={**fixed, "seed": seed, "denoising_strength": strength}))
            except ValueError as exc:
                raise ValueError(f"Loopback: {exc}") from None
        mask = request.init.mask

        def run(ctx) -> ScriptResult:
            out = ScriptResult(params)
            history = []
            seed = first_seed
            for batch in range(batch_count):
                pictures, strength, fill = request.init.images, initial, params.inpainting_fill
                last = None
                for loop in range(loops):
                    prompt = params.prompt
                    if interrogator is not None:
                        picture = pictures[0]
                        caption = ctx.on_worker("interrogate", lambda: env.interrogator.run(None, picture, interrogator))
                        prompt = (f"{params.prompt}, " if params.prompt else "") + caption
                    child = params.model_copy(update={**fixed, "seed": seed, "denoising_strength": strength, "prompt": prompt,
                                                      "inpainting_fill": fill})
                    ctx.progress(batch * loops + loop, batch_count * loops, f"Loopback: iteration {loop + 1}/{loops}, batch {batch + 1}/{batch_count}")
                    try:
                        result = ctx.run(child, init=InitImages(tuple(pictures), mask))
                    except ScriptStopped:
                        result = None
                    if result is None or ctx.stopped:
                        break
                    seed = result.seeds[0] + 1
                    strength = denoising_strength(loop + 1, loops, initial, final, curve)
                    if result.unfinished:  # skipped: this run of loops ends here
                        out.add(result, include=False)
                        last = None
                        break
                    last = result
                    pictures, fill = (result.images[0],), 1  # "original" masked content from the second loop on, as A1111
                    if batch_count == 1:
                        history.append(result.images[0])
                        out.add(result)
                    else:
                        out.add(result, include=False)
                if ctx.stopped:
                    break
                if batch_count > 1 and last is not None:
                    history.append(last.images[0])
                    out.add(last)
            out.interrupted = ctx.stopped
            ctx.progress(batch_count * loops, batch_count * loops, "Loopback")
            if len(history) > 1:
                grid = make_grid(history, 1)
                infotext = out.infotexts[0]
                out.add_grid(grid, infotext, ctx.save_grid(grid, infotext, params), seed=out.seeds[0])
            return out

        return run
