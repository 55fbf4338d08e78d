"""The Extras job: upscale uploaded images (or a folder of them) and save the results where
A1111 users find them, `outputs/extras-images/00000.png` (no date folder).

Extras run as queue jobs of kind "extras", so they take turns with generation on the one
worker. They are submitted without a payload, so they are not recorded and do not survive a
restart (their images would be gone with the request); nothing needs registering on the queue.

What a result file carries (as A1111): PNG keeps the source's `parameters` chunk unchanged
(and its other text chunks) and adds `postprocessing` and `extras` chunks, both holding the
"Postprocess upscale by: 2, Postprocess upscaler: Lanczos" text. JPEG and WebP hold one text
only, the EXIF UserComment: the source's parameters there, so PNG Info still reads how the
picture was made; the postprocessing text goes there only when the source had none. So the
postprocessing text is kept in full only in PNG files.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from modules.generation import images as imgops
from modules.generation.image_input import read_image
from modules.generation.upscaling import ExtrasParams, UpscaleInterrupted, UpscalerRegistry, info_text, postprocess
from modules.outputs.infotext import read_infotext_from_image
from modules.jobs.queue import login_of
from modules.outputs.naming import NameValues
from modules.outputs.saving import OutputWriter, SaveSettings

if TYPE_CHECKING:
    from modules.jobs.queue import Job
    from modules.postprocessing.face_restoration import FaceRestoration
    from modules.postprocessing.upscalers import UpscalerLibrary

KIND = "extras"


@dataclass(frozen=True)
class ExtrasSettings:
    """A1111's settings for Extras output: `outdir_extras_samples`, `samples_format`,
    `jpeg_quality`, `use_original_name_batch`."""

    directory: Path
    file_format: str = "png"
    jpeg_quality: int = 80
    use_original_name_batch: bool = True
    user_folders: bool = False  # log-ins are on: each user's results go to <directory>/<user>/
    save_txt: bool = False  # A1111's save_txt: a .txt with the infotext beside each image

    def save_settings(self, directory: Path | None = None) -> SaveSettings:
        """A folder the user typed (folder batches) is used as given, without a user folder."""
        return SaveSettings(Path(directory or self.directory), self.file_format, save_to_dirs=False, jpeg_quality=self.jpeg_quality,
                            user_folders=self.user_folders and directory is None, save_txt=self.save_txt)


@dataclass
class ExtrasResult:
    images: list[Image.Image] = field(default_factory=list)  # empty for a folder batch asked not to show them
    paths: list[Path] = field(default_factory=list)  # empty when not saved
    infotexts: list[str] = field(default_factory=list)  # each image's postprocessing text
    parameters: list[str | None] = field(default_factory=list)  # each source's generation parameters, if it had any
    notes: list[str] = field(default_factory=list)  # what was skipped, and why
    count: int = 0  # images done


class ExtrasService:
    """Runs Extras jobs and saves their images. `configure` changes the output settings
    (the Settings tab calls it); jobs already running finish with the settings they began with."""

    def __init__(self, directory: Path, file_format: str = "png", jpeg_quality: int = 80, use_original_name_batch: bool = True,
                 upscalers: "UpscalerRegistry | UpscalerLibrary | None" = None, user_folders: bool = False, faces: "FaceRestoration | None" = None):
        self._upscalers = upscalers or UpscalerRegistry()  # a library (model folders) is asked for its current list each time
        self.faces = faces  # GFPGAN / CodeFormer for the face restoration sliders
        self._lock = threading.Lock()
        self._writers: dict[SaveSettings, OutputWriter] = {}
        self.settings = ExtrasSettings(Path(directory), file_format, jpeg_quality, use_original_name_batch, user_folders)
        self.settings.save_settings()  # a bad format or quality is a ValueError now, not at the first save

    def configure(self, *, directory: Path | None = None, file_format: str | None = None, jpeg_quality: int | None = None,
                  use_original_name_batch: bool | None = None, save_txt: bool | None = None) -> None:
        changes = {"directory": Path(directory) if directory is not None else None, "file_format": file_format, "jpeg_quality": jpeg_quality,
                   "use_original_name_batch": use_original_name_batch, "save_txt": save_txt}
        settings = replace(self.settings, **{k: v for k, v in changes.items() if v is not None})
        settings.save_settings()  # checks the format and quality
        self.settings = settings

    @property
    def upscalers(self) -> UpscalerRegistry:
        """The upscalers now: the built-ins and, with a library, its model files as last scanned."""
        source = self._upscalers
        return source if isinstance(source, UpscalerRegistry) else source.registry

    def params(self, **values) -> ExtrasParams:
        """A validated request against this service's upscalers."""
        return ExtrasParams.create(upscalers=self.upscalers, **values)

    def _watched(self, job: "Job | None") -> UpscalerRegistry:
        """The upscalers for one job: model upscalers count tiles as its steps and stop between
        tiles on interrupt or skip."""
        from modules.postprocessing.upscalers import job_watch

        return self.upscalers.watched(job_watch(job.control, job.progress)) if job is not None else self.upscalers

    def _writer(self, settings: SaveSettings) -> OutputWriter:
        """One writer per folder and format, shared, so numbers never collide."""
        with self._lock:
            return self._writers.setdefault(settings, OutputWriter(settings))

    # -- jobs --------------------------------------------------------------------------

    def run(self, job: "Job | None", images: list[tuple[Image.Image, str | None]], params: ExtrasParams, save: bool = True,
            output_dir: Path | None = None) -> ExtrasResult:
        """Upscale each (image, original name) in turn. A name (batch uploads) is kept as the
        file name when `use_original_name_batch` is on; otherwise files are numbered."""
        settings = self.settings
        result = ExtrasResult()
        upscalers = self._watched(job)
        for index, (image, name) in enumerate(images):
            if _stopped(job, index, len(images)):
                break
            try:
                self._one(image, name, params, settings, save, output_dir, result, keep=True, user=_user(job), upscalers=upscalers)
            except UpscaleInterrupted:
                result.notes.append(f"Interrupted while upscaling image {index + 1} of {len(images)}: it was not finished.")
                break
        return result

    def run_folder(self, job: "Job | None", input_dir: Path | str, output_dir: Path | str | None, params: ExtrasParams, save: bool = True,
                   show_results: bool = True) -> ExtrasResult:
        """A1111's "Batch from Directory": every image in `input_dir` (not its subfolders), in
        name order. Files that are not images are skipped with a note. An empty output folder
        means the Extras folder. Inputs are never overwritten, even when the output folder is the
        input folder: a taken name gets `-1`, `-2`. Without `show_results` the images are saved
        but not kept in the result (a large folder would fill the memory)."""
        source = Path(str(input_dir).strip()) if str(input_dir).strip() else None
        if source is None:
            raise ValueError("Enter the input directory of the batch.")
        if not source.is_dir():
            raise ValueError(f"Input directory {source} does not exist or is not a folder.")
        target = Path(str(output_dir).strip()) if output_dir is not None and str(output_dir).strip() else None
        files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))  # listed once: our own outputs are not inputs
        settings = self.settings
        result = ExtrasResult()
        upscalers = self._watched(job)
        for index, path in enumerate(files):
            if _stopped(job, index, len(files)):
                break
            try:
                image = read_image(str(path), path.name)
            except ValueError:
                result.notes.append(f"Skipped {path.name}: not an image.")
                continue
            try:
                self._one(image, path.name, params, settings, save, target, result, keep=show_results, user=_user(job), upscalers=upscalers)
            except UpscaleInterrupted:
                result.notes.append(f"Interrupted while upscaling {path.name}: it was not finished.")
                break
            finally:
                image.close()
        if not files:
            result.notes.append(f"No files in {source}.")
        return result

    def _one(self, image: Image.Image, name: str | None, params: ExtrasParams, settings: ExtrasSettings, save: bool, output_dir: Path | None,
             result: ExtrasResult, keep: bool, user: str | None = None, upscalers: UpscalerRegistry | None = None) -> None:
        source_text = read_infotext_from_image(image)
        kept = {k: v for k, v in (image.info or {}).items() if isinstance(k, str) and isinstance(v, str) and k != "parameters"}
        done = postprocess(imgops.open_image(image), params, upscalers or self.upscalers, faces=self.faces)
        text = info_text(done.info)
        picture = done.image
        picture.info = {**kept, "postprocessing": text, "extras": text}
        if source_text:
            picture.info["parameters"] = source_text  # for whoever gets the image itself (the API, the gallery)
        if save:
            writer = self._writer(settings.save_settings(output_dir))
            embedded = source_text if settings.file_format == "png" else (source_text or text)
            values = NameValues(user=user)
            if name and settings.use_original_name_batch:
                path = writer.save_as(picture, _stem(name), infotext=embedded, values=values)
            else:
                path = writer.save_image(picture, infotext=embedded, values=values)
            result.paths.append(path)
        if keep:
            result.images.append(picture)
        result.infotexts.append(text)
        result.parameters.append(source_text)
        result.count += 1


def _user(job: "Job | None") -> str | None:
    return login_of(job.user) if job is not None else None


def _stem(name: str) -> str:
    """A file name's stem, whatever path or separators the client sent with it."""
    return Path(name.replace("\\", "/")).stem or "image"


def _stopped(job: "Job | None", index: int, total: int) -> bool:
    """Progress for the page, and whether the job was interrupted before image `index`."""
    if job is None:
        return False
    if job.control.interrupted:
        return True
    p = job.progress
    p.batch_index, p.batch_count, p.step, p.steps = index, total, 0, 1
    return False
