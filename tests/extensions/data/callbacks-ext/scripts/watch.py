"""Callbacks that change what is drawn and what is saved: the text conditioning is zeroed when
the setting says so, every saved file's infotext gets a line, and each saved path is noted."""

from pathlib import Path

from modules import script_callbacks
from modules.extensions.api import add_setting, basedir

LOG = Path(basedir()) / "saved.txt"


def zero_text(params):
    if params.p is not None and params.p.opts.watch_zero_text:
        params.text_cond = params.text_cond * 0


def before_saved(params):
    params.pnginfo["parameters"] += ", Watched: yes"


def saved(params):
    with LOG.open("a", encoding="utf-8") as file:
        file.write(params.filename + "\n")


add_setting("watch_zero_text", False, "Zero the text conditioning", section=("watch", "Watch"))
script_callbacks.on_cfg_denoiser(zero_text)
script_callbacks.on_before_image_saved(before_saved)
script_callbacks.on_image_saved(saved)
