"""What a generation job does with its ControlNet units: check them before queueing, then,
once the checkpoint is loaded, run each unit's preprocessor, load its ControlNet and hand the
runner one hook. The API, the page and the queue's restart path all come through here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from modules.controlnet.units import ControlUnit, infotext_value

if TYPE_CHECKING:
    from PIL import Image

    from modules.controlnet.hook import ControlNetHook
    from modules.controlnet.models import ControlNetLibrary
    from modules.controlnet.preprocessors import Preprocessors
    from modules.models.loaded import LoadedModel


@dataclass
class ControlJob:
    """A job's units made ready on the loaded checkpoint."""

    hook: "ControlNetHook | None" = None
    infotext: list[tuple[str, str]] = field(default_factory=list)  # ("ControlNet 0", "Module: canny, ...")
    detected_maps: list["Image.Image"] = field(default_factory=list)  # to show after the images (save_detected_map)


class ControlNetService:
    """Owns the ControlNet library and the preprocessors (the App makes one)."""

    def __init__(self, library: "ControlNetLibrary", preprocessors: "Preprocessors", unit_count: int = 3, no_detectmap: bool = False,
                 annotator_device: str = "auto"):
        self.library = library
        self.preprocessors = preprocessors
        self.unit_count = unit_count
        self.no_detectmap = no_detectmap
        # "auto": annotator models (depth, pose...) run on the checkpoint's device, known once it has loaded
        self.annotator_device = annotator_device

    def unload(self) -> None:
        """Free the loaded ControlNets and annotator models (the checkpoint changed or was unloaded)."""
        self.library.clear()
        self.preprocessors.unload()

    def use_settings(self, changed: Mapping[str, Any]) -> None:
        """The extension's settings from config.json (unit count takes effect on the next page load)."""
        if "control_net_unit_count" in changed:
            self.unit_count = max(1, min(int(changed["control_net_unit_count"]), 10))
        if "control_net_no_detectmap" in changed:
            self.no_detectmap = bool(changed["control_net_no_detectmap"])
        self.library.use_settings(changed)

    # ------------------------------------------------------------------ before queueing

    def check(self, units: Sequence[ControlUnit], img2img: bool) -> None:
        """Refuse what can be refused before the job waits its turn: an unknown model or
        module (naming the choices), an enabled unit with nothing to look at, too many units."""
        enabled = [(i, u) for i, u in enumerate(units) if u.settings.enabled]
        if len(enabled) > self.unit_count:
            raise ValueError(f"{len(enabled)} ControlNet units are enabled; this server allows {self.unit_count} "
                             "(setting control_net_unit_count).")
        for index, unit in enabled:
            s = unit.settings
            self.preprocessors.get(s.module)  # ValueError naming the choices
            if not s.has_model:
                raise ValueError(f"ControlNet unit {index}: choose a model (one of: {', '.join(self.library.names()) or 'none installed'}).")
            self.library.find(s.model)  # ValueError naming the choices
            if unit.image is None and not img2img:
                raise ValueError(f"ControlNet unit {index} is enabled but has no image: upload one "
                                 "(in img2img it may use the img2img picture instead).")

    def detect(self, module: str, images: Sequence["Image.Image"], processor_res: float = -1, threshold_a: float = -1,
               threshold_b: float = -1, masks: Sequence["Image.Image | None"] = ()) -> list["Image.Image"]:
        """A preprocessor run alone (`/controlnet/detect`, the page's preview)."""
        from modules.controlnet.resize import display_image

        masks = list(masks) + [None] * (len(images) - len(masks))
        return [display_image(self.preprocessors.run(module, im, processor_res, threshold_a, threshold_b, mask=m))
                for im, m in zip(images, masks)]

    # ------------------------------------------------------------------ in the job

    def prepare(self, units: Sequence[ControlUnit], model: "LoadedModel", width: int, height: int,
                init: "Image.Image | None" = None, init_mask: "Image.Image | None" = None, seed: int | None = None) -> ControlJob:
        """Preprocess and load every enabled unit for a job on `model` at `width` x `height`.
        `init`/`init_mask` are img2img's picture and mask, which a unit without a picture of
        its own uses (as the extension does). ValueError for a unit that cannot run."""
        from modules.controlnet.hook import ControlNetHook, PreparedUnit
        from modules.controlnet.resize import display_image

        prepared: list[PreparedUnit] = []
        job = ControlJob()
        if self.annotator_device == "auto" and self.preprocessors.device != model.device.type:
            self.preprocessors.unload()  # detectors loaded for another device
            self.preprocessors.device = model.device.type
        for index, unit in enumerate(units):
            s = unit.settings
            if not s.enabled:
                continue
            if getattr(model, "family", "sd") != "sd":  # Flux / SD 3: no ControlNet models of theirs are supported here
                raise ValueError(f"ControlNet unit {index}: ControlNet runs on SD 1.x, 2.x and SDXL checkpoints, and the "
                                 f"loaded one is {model.arch}; disable the unit or load an SD checkpoint.")
            image, mask = unit.image, unit.mask
            if image is None or s.use_img2img_input and init is not None:
                image, mask = init, mask if mask is not None else init_mask
            if image is None:
                raise ValueError(f"ControlNet unit {index} is enabled but has no image.")
            pre = self.preprocessors.get(s.module)
            resolution = s.processor_res
            if s.pixel_perfect:
                resolution = self.preprocessors.pixel_perfect_resolution(image.size, width, height, s.resize_mode)
            resolution, a, b = self.preprocessors.settle(pre.name, resolution, s.threshold_a, s.threshold_b)
            entry = self.library.find(s.model)
            if entry is None:
                raise ValueError(f"ControlNet unit {index}: choose a model.")
            settings = s.model_copy(update={"module": pre.name, "model": entry.name, "processor_res": resolution,
                                            "threshold_a": a, "threshold_b": b})
            job.infotext.append((f"ControlNet {index}", infotext_value(settings)))
            if s.weight == 0:  # leaves the picture as without the unit: nothing to load or run
                continue
            detected = self.preprocessors.run(pre.name, image, resolution, a, b, mask=mask, seed=seed)
            controlnet = self.library.load(entry, model)  # the entry found above: no second folder scan
            prepared.append(PreparedUnit(settings, controlnet, detected, pre.name))
            if s.save_detected_map and not self.no_detectmap:
                job.detected_maps.append(display_image(detected))
        job.hook = ControlNetHook(prepared) if prepared else None
        return job


def check_resolution(resolution: float, size: tuple[int, int], max_pixels: int | None, what: str,
                     setting: str = "Preprocessor Resolution") -> None:
    """A preprocessor scales the picture so its short side is `resolution`: bounded like an
    upload (the server's pixel limit), so one request cannot make it allocate gigabytes."""
    if resolution <= 0 or not max_pixels:
        return
    short, long = sorted(size)
    pixels = int(resolution) * math.ceil(int(resolution) * long / max(short, 1))
    if pixels > max_pixels:
        raise ValueError(f"{setting} {int(resolution)} would make {what} {pixels / 1e6:.1f} megapixels, over this server's "
                         f"{max_pixels / 1e6:g} megapixels (setting 'Largest image accepted'): use a lower resolution.")
