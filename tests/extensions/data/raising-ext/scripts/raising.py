"""An always-on script and callbacks that raise: each job goes on without them, and says so."""

from modules import script_callbacks, scripts


class Raising(scripts.Script):
    def title(self):
        return "Raising"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        raise RuntimeError("raising-ext broke on purpose")


def broken_denoiser(params):
    raise RuntimeError("raising-ext denoiser broke on purpose")


script_callbacks.on_cfg_denoiser(broken_denoiser)
