"""The processing object `p` a script's hooks get (A1111's StableDiffusionProcessing, as far as
scripts read and write it), and what a job's pictures come back as (`Processed`).

`p` is a plain object over one job's parameters: hooks change its fields, and the job reads
them back through the same checks a request gets (`Processing.params`), so a script cannot
make a job the page or the API would refuse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from PIL import Image

    from modules.generation.params import GenerationParams


class Options:
    """A read-only view of the settings (A1111's `shared.opts.<key>`), as they were when the job started."""

    def __init__(self, values: Mapping[str, Any] | None = None):
        object.__setattr__(self, "_values", dict(values or {}))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"No setting named {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Settings are read-only here: change them in the Settings tab or with POST /sdapi/v1/options")

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def data(self) -> dict:
        return dict(self._values)


class Processing:
    """A1111's common fields of `p`: every generation parameter by its A1111 name (prompt,
    negative_prompt, seed, subseed, steps, cfg_scale, sampler_name, scheduler, width, height,
    batch_size, n_iter, restore_faces, tiling, enable_hr, hr_scale, denoising_strength, ...),
    plus all_prompts/all_negative_prompts/all_seeds/all_subseeds (set before `process`),
    prompts/negative_prompts/seeds/subseeds of the batch being made, iteration, batch_index,
    extra_generation_params (written into the infotext), init_images/image_mask (img2img),
    opts (the settings), user, sd_model_name, sd_model_hash."""

    is_img2img = False

    def __init__(self, params: "GenerationParams", init=None, opts: Mapping[str, Any] | None = None, user: str = "",
                 model: tuple[str | None, str | None] = (None, None)):
        self._fields = tuple(type(params).model_fields)
        self.set_fields(params)
        self.init_images: list | None = list(init.images) if init is not None else None
        self.image_mask = init.mask if init is not None else None
        self.extra_generation_params: dict[str, Any] = {}
        self.all_prompts: list[str] = []
        self.all_negative_prompts: list[str] = []
        self.all_seeds: list[int] = []
        self.all_subseeds: list[int] = []
        self.prompts: list[str] = []
        self.negative_prompts: list[str] = []
        self.seeds: list[int] = []
        self.subseeds: list[int] = []
        self.iteration = 0
        self.batch_index = 0
        self.opts = Options(opts)
        self.user = user
        self.sd_model_name, self.sd_model_hash = model
        self.script_args: tuple = ()
        self.override_settings: dict = {}
        self.do_not_save_samples = False
        self.do_not_save_grid = False
        self.comments: list[str] = []
        self._run = None  # set for a selectable script's run: how process_images(p) queues a job

    def set_fields(self, params: "GenerationParams", keep: tuple[str, ...] = ()) -> None:
        """Every parameter field from `params` (tuples as lists, as A1111's p holds them), but those in `keep`."""
        for name in self._fields:
            if name not in keep:
                value = getattr(params, name)
                setattr(self, name, list(value) if isinstance(value, tuple) else value)

    def comment(self, text: str) -> None:
        """A1111's p.comment: a note shown with the result."""
        self.comments.append(str(text))

    def field_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._fields}

    def params(self, base: "GenerationParams", upscalers=(), keep: tuple[str, ...] = ()) -> "GenerationParams":
        """The job's parameters as the hooks left them, checked as a request's are (ValueError
        naming the field otherwise); the fields in `keep` stay `base`'s."""
        values = base.model_dump()
        values.update({k: v for k, v in self.field_values().items() if k not in keep})
        return type(base).create(upscalers, **values)

    def setup_prompts(self) -> None:
        """all_prompts and friends from the fields, one per picture (A1111's setup_prompts)."""
        count = self.n_iter * self.batch_size
        self.all_prompts = [self.prompt] * count
        self.all_negative_prompts = [self.negative_prompt] * count

    def batch(self, index: int) -> None:
        """The fields of batch `index` (A1111's p.prompts, p.seeds, ... for p.iteration)."""
        size = self.batch_size
        window = slice(index * size, (index + 1) * size)
        self.iteration = index
        self.prompts = self.all_prompts[window]
        self.negative_prompts = self.all_negative_prompts[window]
        self.seeds = self.all_seeds[window]
        self.subseeds = self.all_subseeds[window]


class StableDiffusionProcessingTxt2Img(Processing):
    is_img2img = False


class StableDiffusionProcessingImg2Img(Processing):
    is_img2img = True


StableDiffusionProcessing = Processing


def processing_for(params: "GenerationParams", init=None, **kwargs: Any) -> Processing:
    """The txt2img or img2img processing object for a job's parameters."""
    cls = StableDiffusionProcessingImg2Img if init is not None else StableDiffusionProcessingTxt2Img
    return cls(params, init, **kwargs)


class PostprocessImageArgs:
    """postprocess_image's argument: set `image` to replace the picture."""

    def __init__(self, image: "Image.Image"):
        self.image = image


class Processed:
    """A job's pictures as A1111's Processed: images, infotexts, seed, all_seeds, all_prompts, info, ...
    In `postprocess` a script may add to or replace `images` and `infotexts`."""

    def __init__(self, p: Processing, images: list, infotexts: list[str], seeds: list[int], subseeds: list[int] | None = None,
                 comments: str = ""):
        self.images = images
        self.infotexts = infotexts
        self.all_seeds = seeds
        self.all_subseeds = subseeds or []
        self.seed = seeds[0] if seeds else getattr(p, "seed", -1)
        self.subseed = self.all_subseeds[0] if self.all_subseeds else getattr(p, "subseed", -1)
        self.prompt = p.prompt
        self.negative_prompt = p.negative_prompt
        self.all_prompts = list(p.all_prompts) or [p.prompt] * len(images)
        self.all_negative_prompts = list(p.all_negative_prompts) or [p.negative_prompt] * len(images)
        for name in ("steps", "cfg_scale", "sampler_name", "width", "height", "batch_size", "restore_faces", "styles",
                     "denoising_strength", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h", "clip_skip"):
            setattr(self, name, getattr(p, name, None))
        self.extra_generation_params = dict(getattr(p, "extra_generation_params", {}) or {})
        self.sd_model_name = getattr(p, "sd_model_name", None)
        self.sd_model_hash = getattr(p, "sd_model_hash", None)
        self.index_of_first_image = 0
        self.comments = comments

    @property
    def info(self) -> str:
        return self.infotexts[0] if self.infotexts else ""

    def js(self) -> str:
        import json

        return json.dumps({"prompt": self.prompt, "all_prompts": self.all_prompts, "negative_prompt": self.negative_prompt,
                           "seed": self.seed, "all_seeds": self.all_seeds, "subseed": self.subseed, "all_subseeds": self.all_subseeds,
                           "width": self.width, "height": self.height, "sampler_name": self.sampler_name, "cfg_scale": self.cfg_scale,
                           "steps": self.steps, "batch_size": self.batch_size, "extra_generation_params": self.extra_generation_params,
                           "index_of_first_image": self.index_of_first_image, "infotexts": self.infotexts})


def process_images(p: Processing) -> Processed:
    """Make the pictures `p` describes: one queued job, waited for (A1111's process_images). Only
    inside a selectable script's `run`, where `p` knows its run."""
    if p._run is None:
        raise RuntimeError("process_images(p) works inside a selectable script's run(p, ...), with the p it was given.")
    return p._run(p)
