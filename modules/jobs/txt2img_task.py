"""What the worker does for a txt2img job: run the core, then save each image with its
infotext and the grid, reporting progress as it goes. The page and the API both end here."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

from tqdm import tqdm

from modules.generation.control import StepInfo
from modules.generation.params import GenerationParams, infotext_fields
from modules.jobs.queue import Job
from modules.models.manager import ActiveModel, ModelManager
from modules.options import OutputSettings
from modules.outputs.infotext import format_infotext
from modules.outputs.saving import OutputWriter, SaveSettings
from modules.version import VERSION

if TYPE_CHECKING:
    from PIL import Image

    from modules.generation.runner import Txt2Img

log = logging.getLogger(__name__)


@dataclass
class Txt2ImgResult:
    params: GenerationParams
    seeds: list[int] = field(default_factory=list)
    images: list["Image.Image"] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    grid_path: Path | None = None


class Txt2ImgService:
    """Holds the writers and the per-model runner (whose prompt cache lives as long as the model)."""

    def __init__(self, models: ModelManager, settings: OutputSettings, data_dir: Path, console_progress: bool = True):
        self.models = models
        self.settings = settings
        self.console_progress = console_progress
        self.images_writer = OutputWriter(
            SaveSettings(settings.resolve(data_dir, settings.outdir_txt2img_samples), settings.samples_format, settings.save_to_dirs, jpeg_quality=settings.jpeg_quality)
        )
        self.grids_writer = OutputWriter(
            SaveSettings(settings.resolve(data_dir, settings.outdir_txt2img_grids), settings.grid_format, settings.grid_save_to_dirs, jpeg_quality=settings.jpeg_quality)
        )
        self._runner: tuple[ActiveModel, Txt2Img] | None = None
        models.add_unload_listener(self._drop_runner)

    def _drop_runner(self) -> None:
        self._runner = None

    def runner(self) -> tuple[ActiveModel, "Txt2Img"]:
        from modules.generation.runner import Txt2Img  # imports diffusers: not needed to serve the page

        active = self.models.active or self.models.load()
        if self._runner is None or self._runner[0] is not active:
            self._runner = (active, Txt2Img(active.model))
        return self._runner

    def infotext(self, params: GenerationParams, seed: int, active: ActiveModel) -> str:
        fields = infotext_fields(
            params, seed=seed, model_hash=active.info.shorthash, model_name=active.info.model_name, version=VERSION,
            clip_skip_applies=active.model.honours_clip_skip,
        )
        return format_infotext(params.prompt, params.negative_prompt, fields)

    def run(self, job: Job, params: GenerationParams) -> Txt2ImgResult:
        active, runner = self.runner()
        from modules.generation.noise import resolve_seed

        first_seed = resolve_seed(params.seed)
        result = Txt2ImgResult(params)
        bar = tqdm(total=params.n_iter * params.steps, desc=job.id, unit="step", disable=not self.console_progress)
        report = job.control.on_step

        def on_step(info: StepInfo) -> None:
            report(info)
            bar.n = info.batch_index * info.steps + info.step
            bar.refresh()

        job.control.on_step = on_step
        try:
            for batch in runner.run(params, first_seed, job.control):
                for image, seed in zip(batch.images, batch.seeds):
                    text = self.infotext(params, seed, active)
                    result.images.append(image)
                    result.seeds.append(seed)
                    result.infotexts.append(text)
                    if self.settings.samples_save:
                        result.paths.append(self.images_writer.save_image(image, seed=seed, prompt=params.prompt, infotext=text))
        finally:
            job.control.on_step = report
            bar.close()
        if self.settings.grid_save and len(result.images) > 1:
            result.grid_path = self.grids_writer.save_grid(result.images, infotext=result.infotexts[0])
        return result
