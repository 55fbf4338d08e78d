"""The interrogate job: A1111's "Interrogate CLIP" / "Interrogate DeepBooru" (API models `clip`
and `deepdanbooru`) run as queue jobs of kind "interrogate", so they take turns with generation
on the one worker, as Extras do. Not recorded: a caption is not worth resuming after a restart.

`InterrogateService.check` refuses an unknown model name or missing weights before anything
waits in the queue; the job itself returns the caption text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from modules.postprocessing.interrogate import ClipInterrogator, InterrogateOptions
from modules.postprocessing.tagger import Tagger

if TYPE_CHECKING:
    from modules.jobs.queue import Job, JobQueue

KIND = "interrogate"
MODELS = ("clip", "deepdanbooru")  # A1111's API names


class UnknownInterrogator(ValueError):
    """The model name is neither `clip` nor `deepdanbooru` (A1111 answers 404)."""


class InterrogateService:
    """The app's interrogators and the settings they read. `settings()` returns config.json's
    current values (A1111's Interrogate keys)."""

    def __init__(self, clip: ClipInterrogator, tagger: Tagger, settings: Callable[[], Mapping[str, Any]] = dict):
        self.clip, self.tagger, self.settings = clip, tagger, settings

    @classmethod
    def for_folders(cls, folders: Mapping[str, Path], settings: Callable[[], Mapping[str, Any]] = dict, use_cpu: bool = False,
                    no_half: bool = False, device_id: int | None = None) -> "InterrogateService":
        """Over the models/ folders (`downloadable.model_folders`): BLIP, CLIP, deepbooru. On CUDA
        the BLIP and CLIP models run in fp16 unless `no_half` (A1111's --no-half). Cheap: nothing
        is imported or loaded before the first interrogation."""
        return cls(ClipInterrogator(folders["BLIP"], folders["CLIP"], use_cpu=use_cpu, half=not no_half, device_id=device_id), Tagger(folders["deepbooru"], use_cpu),
                   settings)

    def options(self) -> InterrogateOptions:
        return InterrogateOptions.from_settings(self.settings())

    def interrogator(self, model: str | None):
        """The interrogator behind an API model name (`clip` when none is given); UnknownInterrogator
        for any other name, MissingModel (naming the catalog entries) when its files are absent."""
        name = (model or "clip").strip().lower()
        if name not in MODELS:
            raise UnknownInterrogator(f"Model not found: '{model}'. Interrogate models: {', '.join(MODELS)}.")
        chosen = self.clip if name == "clip" else self.tagger
        chosen.files()
        return chosen

    def check(self, model: str | None) -> None:
        self.interrogator(model)

    def run(self, job: "Job | None", image: Image.Image, model: str | None) -> str:
        """The caption of `image` (the job's work, on the worker)."""
        if job is not None:
            p = job.progress
            p.batch_index, p.batch_count, p.step, p.steps = 0, 1, 0, 1
        return self.interrogator(model).interrogate(image, self.options())

    def submit(self, queue: "JobQueue", image: Image.Image, model: str | None, user: str = "") -> "Job":
        """Check, then queue in the caller's lane."""
        self.check(model)
        return queue.submit(KIND, lambda job: self.run(job, image, model), user=user)
