"""What a script is: its title and tabs, its arguments, and the check that turns a request
and arguments into a run (see modules.scripts.context for what the run may do)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from modules.generation.params import MAX_SEED

from modules.scripts.args import ScriptArg

if TYPE_CHECKING:
    from PIL import Image

    from modules.generation.params import GenerationParams
    from modules.generation.runner import InitImages
    from modules.jobs.generation_task import GenerationResult
    from modules.scripts.context import ScriptContext


@dataclass(frozen=True)
class ScriptRequest:
    """The tab's or the API's request a script starts from. `params` has its styles not yet
    applied: each child job applies them, as a single job does."""

    kind: str  # "txt2img" | "img2img"
    params: "GenerationParams"
    init: "InitImages | None" = None
    checkpoint: str | None = None  # pinned title (ModelManager.pin)
    vae: str | None = None
    controlnet: tuple = ()
    save: bool | None = None  # the API's save_images; None: the samples_save / grid_save settings
    alwayson: tuple = ()  # the extensions' always-on scripts (AlwaysOnArgs) every job of the run carries

    @property
    def img2img(self) -> bool:
        return self.kind == "img2img"

    def init_picture(self, missing: str) -> "Image.Image":
        """The first init picture, flattened to RGB as a job reads it (SD upscale and the
        outpaintings work on it); ValueError(`missing`) when the request has none."""
        if self.init is None or not self.init.images:
            raise ValueError(missing)
        from modules.generation import images as imgops

        return imgops.flatten(self.init.images[0])


@dataclass(frozen=True)
class ScriptEnv:
    """The server's lists and services a script's controls and checks may use, read when called."""

    checkpoints: Callable[[], list[str]] = lambda: []
    find_checkpoint: Callable[[str], str] = lambda name: name
    vaes: Callable[[], list[str]] = lambda: ["Automatic", "None"]
    hires_upscalers: Callable[[], list[str]] = lambda: []
    upscalers: Callable[[], list[str]] = lambda: ["None", "Lanczos", "Nearest"]
    styles: Callable[[], list[str]] = lambda: []
    max_jobs: Callable[[], int] = lambda: 200
    upscale: Callable[["Image.Image", str, int, int], "Image.Image"] | None = None  # (picture, upscaler, width, height)
    # A planned job's params checked as a request's are (ranges, names, the limit_* settings),
    # returned validated; ValueError naming what is wrong. Scripts call it in `prepare`.
    check_job: Callable[["GenerationParams"], "GenerationParams"] = lambda params: params
    interrogator: Any = None  # modules.jobs.interrogate_task.InterrogateService (Loopback's interrogated prompt); None: none
    # The largest picture, in pixels, a script may make or work on (limit_image_megapixels); None: no bound.
    max_pixels: Callable[[], int | None] = lambda: None

    def check_count(self, title: str, count: int, what: str = "jobs") -> None:
        """Refuse a run that would queue more than the script_max_jobs setting allows."""
        if count > self.max_jobs():
            raise ValueError(f"{title} would queue {count} {what}; the most one run may queue is {self.max_jobs()} (setting script_max_jobs).")

    def check_size(self, title: str, width: int, height: int, what: str = "picture") -> None:
        """Refuse a picture larger than the server's largest image: a script's own pixel work
        (an upscale, an outpainting canvas) is bounded as an upload is."""
        limit = self.max_pixels()
        if limit and width * height > limit:
            raise ValueError(f"{title} would make a {width}x{height} {what} ({width * height / 1e6:,.2f} megapixels); the largest this "
                             f"server takes is {limit / 1e6:g} megapixels (setting limit_image_megapixels).")


SEEDS = 2**32  # a job's seed is 0 to 2**32 - 1 (GenerationParams.seed's range)
LARGEST_SEED = SEEDS - 1


def fixed_seeds(params: "GenerationParams", rng: random.Random | None = None) -> dict[str, int]:
    """The seed and variation seed a run's jobs share, drawn once where they are -1, as A1111's
    scripts fix them (so each picture's infotext remakes it); {} when both are set."""
    rng = rng or random.SystemRandom()
    fixed = {}
    if params.seed < 0:
        fixed["seed"] = rng.randrange(MAX_SEED)
    if getattr(params, "subseed", 0) < 0:
        fixed["subseed"] = rng.randrange(MAX_SEED)
    return fixed


def counted_seeds(params: "GenerationParams", span: int, title: str, what: str,
                  rng: random.Random | None = None) -> dict[str, int]:
    """fixed_seeds(params) for a run whose seeds count up to the first seed + `span` (Prompt
    matrix's seed per picture, Prompts from file's "Iterate seed every line", Loopback's seed
    per loop; `what` says what counts them, for the message). Each child is checked as a
    request is, so its seed must stay at most LARGEST_SEED: a random seed is drawn low enough
    and a given one too high is a ValueError (A1111 would go on past it)."""
    fixed = fixed_seeds(params, rng)
    if "seed" in fixed:
        fixed["seed"] %= LARGEST_SEED - span + 1
    elif params.seed + span > LARGEST_SEED:
        raise ValueError(f"{title}: seed {params.seed} goes up by {span} ({what}), past the largest seed {LARGEST_SEED}; "
                         f"use a seed of at most {LARGEST_SEED - span}.")
    return fixed


class Script:
    """Base class of a selectable script. Subclasses set `title` (A1111's, which the API's
    script_name matches in any case) and the tabs, and implement `args` and `prepare`."""

    title: str = ""
    txt2img: bool = True
    img2img: bool = True

    @property
    def name(self) -> str:
        """A1111's script name: the title in lower case (/sdapi/v1/scripts lists these)."""
        return self.title.lower()

    def shows_on(self, kind: str) -> bool:
        return self.img2img if kind == "img2img" else self.txt2img

    def args(self, env: ScriptEnv, img2img: bool) -> list[ScriptArg]:
        """The controls in A1111's ui() order, which is script_args' order."""
        return []

    def axis_choices(self, env: ScriptEnv, kind: str, type_index: int) -> list[str] | None:
        """The choices the page's picker offers an axis of type `type_index` on tab `kind` (X/Y/Z
        plot's <axis>_values_dropdown follows <axis>_type); None: the axis's values are typed."""
        return None

    def prepare(self, request: ScriptRequest, args: dict[str, Any], env: ScriptEnv) -> Callable[["ScriptContext"], "ScriptResult"]:
        """Check everything (ValueError naming the argument or value) and return the run. Nothing
        is queued here, so a bad request costs nothing."""
        raise NotImplementedError


@dataclass
class ScriptResult:
    """A run's pictures in A1111's order: grids first (`grids` of them), then the pictures,
    each with its infotext, seed, prompts and saved file (None when not saved)."""

    params: "GenerationParams"
    images: list = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)
    paths: list[Path | None] = field(default_factory=list)
    grids: int = 0
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    model_name: str | None = None
    model_hash: str | None = None

    def add(self, result: "GenerationResult | None", include: bool = True) -> None:
        """A child job's pictures (unfinished ones too, as A1111 returns them) and notes. With
        `include` False only its notes and model are taken (the pictures went into a grid)."""
        if result is None:
            return
        from modules.jobs.generation_task import saved_path_per_image

        if self.model_name is None:
            self.model_name, self.model_hash = result.model_name, result.model_hash
        for note in result.notes:
            if note not in self.notes:
                self.notes.append(note)
        if not include:
            return
        params = result.params
        subseeds = list(getattr(result, "subseeds", None) or [])
        for index, (image, text, seed) in enumerate(zip(result.images, result.infotexts, result.seeds)):
            self.images.append(image)
            self.infotexts.append(text)
            self.seeds.append(seed)
            self.subseeds.append(subseeds[index] if index < len(subseeds) else -1)
            self.prompts.append(params.prompt)
            self.negative_prompts.append(params.negative_prompt)
        self.paths.extend(saved_path_per_image(result))

    def add_picture(self, image: "Image.Image", infotext: str, params: "GenerationParams", seed: int, path: Path | None,
                    subseed: int = -1) -> None:
        """A picture the script made itself (SD upscale's stitched result, an outpainting)."""
        self.images.append(image)
        self.infotexts.append(infotext)
        self.seeds.append(seed)
        self.subseeds.append(subseed)
        self.prompts.append(params.prompt)
        self.negative_prompts.append(params.negative_prompt)
        self.paths.append(path)

    def add_grid(self, image: "Image.Image", infotext: str, path: Path | None, seed: int | None = None) -> None:
        """A grid, after the grids already added and before every picture."""
        at = self.grids
        self.images.insert(at, image)
        self.infotexts.insert(at, infotext)
        self.seeds.insert(at, self.params.seed if seed is None else seed)
        self.subseeds.insert(at, -1)
        self.prompts.insert(at, self.params.prompt)
        self.negative_prompts.insert(at, self.params.negative_prompt)
        self.paths.insert(at, path)
        self.grids += 1
