"""One job's always-on scripts and extension callbacks, at the runner's hook points.

Every call into extension code goes through `_guard`: a script or callback that raises is
logged with its traceback, named in the job's notes (the page and the API show them), and
switched off for the rest of the job; the picture is still made and the other extensions'
hooks still run.
"""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from modules.generation.hooks import DenoiserCall, JobHook

if TYPE_CHECKING:
    from PIL import Image

    from modules.extensions.loaded import LoadedExtensions
    from modules.extensions.processing import Processing
    from modules.generation.params import GenerationParams

log = logging.getLogger(__name__)


# Read from all_prompts once process() has run (p.prompt keeps the prompt as written, as in A1111).
PROMPT_FIELDS = ("prompt", "negative_prompt", "styles", "hr_prompt", "hr_negative_prompt")


@dataclass(frozen=True)
class AlwaysOnArgs:
    """One always-on script's arguments for a job, in its ui() order (A1111's alwayson_scripts entry)."""

    title: str
    args: tuple = ()


def alwayson_payload(items: Sequence[AlwaysOnArgs]) -> list:
    """The job record's form: [[title, args]]; arguments that are not JSON (a picture) are left
    out, so the restored job runs the script with its defaults for them (noted then)."""
    out = []
    for item in items:
        try:
            json.dumps(list(item.args))
            out.append([item.title, list(item.args)])
        except (TypeError, ValueError):
            out.append([item.title, None])
    return out


def alwayson_from_payload(data) -> tuple[AlwaysOnArgs, ...]:
    return tuple(AlwaysOnArgs(str(title), tuple(args) if args is not None else ()) for title, args in (data or ()))


class JobScripts(JobHook):
    """The always-on scripts a job runs with, their `p`, and the callbacks that see its steps and files."""

    def __init__(self, loaded: "LoadedExtensions", kind: str, items: Sequence[AlwaysOnArgs], notes: list[str],
                 settings: dict | None = None, user: str = ""):
        self.notes = notes
        self.settings, self.user = settings or {}, user
        self.off: set[str] = set()  # extensions switched off for this job
        self.active: list[tuple[Any, tuple]] = []
        self.p: "Processing | None" = None
        for item in items:
            try:
                script = loaded.find_alwayson(item.title, kind)
            except ValueError as exc:  # a restored job whose extension is gone
                self._note(f"{exc} It was left out of this job.")
                continue
            defaults = loaded.alwayson_defaults(script, kind == "img2img")  # worked out at start: no ui() call here
            args = list(item.args)[: len(defaults)] if defaults else list(item.args)
            args += defaults[len(args):]
            self.active.append((script, tuple(args)))
        cb = loaded.callbacks
        self._denoiser = cb.of("cfg_denoiser")
        self._before_saved = cb.of("before_image_saved")
        self._saved = cb.of("image_saved")

    def __bool__(self) -> bool:
        return bool(self.active or self._denoiser or self._before_saved or self._saved)

    # ------------------------------------------------------------------ isolation

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def _guard(self, extension: str, where: str, fn: Callable, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """(True, result), or (False, None) when it raised: then the extension is off for this job."""
        if extension in self.off:
            return False, None
        try:
            return True, fn(*args, **kwargs)
        except BaseException as exc:  # sys.exit() in a hook must not end the queue's worker
            if isinstance(exc, KeyboardInterrupt):
                raise
            log.error("Extension '%s' failed in %s; it is switched off for this job:\n%s", extension, where, traceback.format_exc())
            self.off.add(extension)
            self._note(f"Extension '{extension}' failed in {where} ({type(exc).__name__}: {exc}); it was switched off for this job.")
            return False, None

    def _each(self, hook: str, *args: Any, **kwargs: Any) -> None:
        for script, script_args in self.active:
            method = getattr(script, hook, None)
            if method is not None:
                self._guard(script.extension, f"{type(script).__name__}.{hook}", method, self.p, *args, *script_args, **kwargs)

    # ------------------------------------------------------------------ the job

    def start(self, params: "GenerationParams", init, upscalers=(), model: tuple = (None, None),
              styled: Callable | None = None) -> "GenerationParams":
        """A1111's order: before_process sees the prompts as written (the parameters may still
        change), then the styles are applied (`styled(params) -> (params, notes)`) and the seeds
        drawn into all_prompts / all_seeds, then process. Returns the parameters the job runs
        with, checked as a request's are (a script's bad value is a note and the value before it stays)."""
        from modules.extensions.processing import processing_for
        from modules.generation import noise

        self.p = p = processing_for(params, init, opts=self.settings, user=self.user, model=model)
        p.script_args = tuple(a for _s, args in self.active for a in args)
        self._each("before_process")
        params = self._read_back(params, upscalers, "before_process")
        if styled is not None:
            params, style_notes = styled(params)
            for note in style_notes:
                self._note(note)
        seed, subseed = noise.resolve_seed(params.seed), noise.resolve_seed(params.subseed)
        params = params.model_copy(update={"seed": seed, "subseed": subseed})
        p.seed, p.subseed = seed, subseed
        batches = noise.job_seeds(seed, params.n_iter, params.batch_size, params.subseed_strength)
        p.all_seeds = [s for batch in batches for s in batch]
        p.all_subseeds = [s for batch in noise.job_subseeds(subseed, params.n_iter, params.batch_size) for s in batch]
        count = params.n_iter * params.batch_size
        p.all_prompts, p.all_negative_prompts = [params.prompt] * count, [params.negative_prompt] * count
        self._each("process")
        # p.prompt is still the prompt as written: from here on the prompts are all_prompts' (styled).
        return self._read_back(params, upscalers, "process", keep=PROMPT_FIELDS)

    def _read_back(self, params: "GenerationParams", upscalers, where: str, keep: tuple[str, ...] = ()) -> "GenerationParams":
        p = self.p
        try:
            checked = p.params(params, upscalers, keep)
        except ValueError as exc:
            self._note(f"An always-on script set a parameter this server refuses in {where} ({exc}); the job's own value was kept.")
            p.set_fields(params, keep)
            return params
        if keep and (checked.seed, checked.subseed) != (params.seed, params.subseed):
            self._note(f"Seeds changed in {where} come too late (all_seeds are drawn before it); the job's seeds were kept.")
            checked = checked.model_copy(update={"seed": params.seed, "subseed": params.subseed})
        return checked

    def batch_prompts(self, index: int, seeds: list[int], subseeds: list[int]) -> tuple[str, str] | None:
        p = self.p
        if p is None or not self.active:
            return None
        p.batch(index)
        p.seeds, p.subseeds = list(seeds), list(subseeds)
        self._each("before_process_batch", batch_number=index, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
        self._each("process_batch", batch_number=index, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
        if not p.prompts:
            return None
        prompts, negatives = [str(x) for x in p.prompts], [str(x) for x in (p.negative_prompts or [p.negative_prompt])]
        if len(set(prompts)) > 1 or len(set(negatives)) > 1:
            self._note("An always-on script gave the pictures of one batch different prompts; each batch is drawn with one prompt "
                       "here, the batch's first (use batch size 1 for a prompt per picture).")
        return prompts[0], negatives[0]

    def denoiser_call(self, call: DenoiserCall) -> DenoiserCall:
        if not self._denoiser:
            return call
        from modules.extensions.callbacks import CFGDenoiserParams

        info, batch = call.info, call.info.batch
        embeds = call.encoder_hidden_states
        uncond = embeds[:batch] if info.with_uncond else None
        cond = embeds[batch:] if info.with_uncond else embeds
        params = CFGDenoiserParams(call.latents, None, call.t, call.step, info.steps, cond, uncond, self.p)
        for item in self._denoiser:
            self._guard(item.extension, "on_cfg_denoiser", item.fn, params)
        if params.x is call.latents and params.text_cond is cond and params.text_uncond is uncond:
            return call
        import torch

        new_embeds = torch.cat([params.text_uncond, params.text_cond]) if info.with_uncond else params.text_cond
        if params.x.shape != call.latents.shape or new_embeds.shape != embeds.shape:
            self._note("on_cfg_denoiser changed the shape of x or the text conditioning; the change was ignored.")
            return call
        return DenoiserCall(params.x, call.t, call.step, new_embeds, call.added_cond_kwargs, info)

    def postprocess_batch(self, images: list["Image.Image"], index: int) -> list["Image.Image"]:
        """postprocess_batch with A1111's float tensor [B, 3, H, W] in 0..1; changes come back as pictures."""
        if not self.active or not images:
            return images
        import numpy as np
        import torch
        from PIL import Image

        tensor = torch.from_numpy(np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])).permute(0, 3, 1, 2)
        before = tensor.clone()
        self._each("postprocess_batch", images=tensor, batch_number=index)
        if torch.equal(before, tensor):
            return images
        array = (tensor.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)
        return [Image.fromarray(a) for a in array]

    def postprocess_image(self, image: "Image.Image", index: int) -> "Image.Image":
        if not self.active:
            return image
        from modules.extensions.processing import PostprocessImageArgs

        self.p.batch_index = index
        pp = PostprocessImageArgs(image)
        self._each("postprocess_image", pp)
        return pp.image if pp.image is not None else image

    def infotext_extras(self) -> list[tuple[str, Any]]:
        """p.extra_generation_params, for the infotext after the job's own."""
        if self.p is None:
            return []
        return [(str(k), v) for k, v in self.p.extra_generation_params.items() if v is not None]

    def before_saving(self, image: "Image.Image", infotext: str, filename: str = "") -> tuple["Image.Image", str]:
        """on_before_image_saved: the picture and infotext to write."""
        if not self._before_saved:
            return image, infotext
        from modules.extensions.callbacks import ImageSaveParams

        params = ImageSaveParams(image, self.p, filename, {"parameters": infotext})
        for item in self._before_saved:
            self._guard(item.extension, "on_before_image_saved", item.fn, params)
        return params.image, str(params.pnginfo.get("parameters", infotext))

    def saved(self, image: "Image.Image", path, infotext: str) -> None:
        if not self._saved or path is None:
            return
        from modules.extensions.callbacks import ImageSaveParams

        params = ImageSaveParams(image, self.p, str(path), {"parameters": infotext})
        for item in self._saved:
            self._guard(item.extension, "on_image_saved", item.fn, params)

    def postprocess(self, images: list, infotexts: list[str], seeds: list[int], subseeds: list[int]) -> None:
        """postprocess(p, processed): the lists are the job's own, so a script's additions are returned."""
        if not self.active or self.p is None:
            return
        from modules.extensions.processing import Processed

        processed = Processed(self.p, images, infotexts, seeds, subseeds, "\n".join(self.p.comments))
        self._each("postprocess", processed)
        if processed.images is not images:
            images[:] = list(processed.images)
        if processed.infotexts is not infotexts:
            infotexts[:] = list(processed.infotexts)
