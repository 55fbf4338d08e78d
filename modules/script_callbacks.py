"""A1111's `from modules import script_callbacks` for extension code: the callbacks of the
extension API (modules.extensions.api), under the names A1111's extensions use."""

from modules.extensions.api import (  # noqa: F401 - re-exported
    CFGDenoiserParams,
    ImageSaveParams,
    on_app_started,
    on_before_image_saved,
    on_cfg_denoiser,
    on_image_saved,
    on_infotext_pasted,
    on_ui_settings,
    on_ui_tabs,
)
