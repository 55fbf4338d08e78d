"""A1111's `from modules import processing` / `from modules.processing import process_images,
Processed` for extension code: the extension API's processing object and results."""

from modules.extensions.api import (  # noqa: F401 - re-exported
    Processed,
    StableDiffusionProcessing,
    StableDiffusionProcessingImg2Img,
    StableDiffusionProcessingTxt2Img,
    process_images,
)
