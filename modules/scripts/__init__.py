"""A1111's selectable scripts (the Script menu and the API's script_name/script_args): what a
script is, its arguments, the context it runs in and the registry. The built-in ones (X/Y/Z
plot, prompt matrix, prompts from file, loopback, SD upscale, outpainting) are the built-in
extension extensions-builtin/classic-scripts, written on modules.extensions.api.

A script never runs its own sampling loop: it plans jobs, queues each as the same
txt2img/img2img job a single request makes (so each picture is bit for bit that job's, and
progress, interrupt and other users' turns work as usual), waits for them from its own
thread, and assembles grids or stitched pictures from their results. No gradio, no FastAPI.
"""

_A1111_NAMES = ("Script", "AlwaysVisible", "PostprocessImageArgs", "basedir")


def __getattr__(name: str):
    """A1111's `from modules import scripts; scripts.Script / scripts.AlwaysVisible`: the
    extension API's (modules.extensions.api), looked up late to avoid an import cycle."""
    if name in _A1111_NAMES:
        from modules.extensions import api

        return getattr(api, name)
    raise AttributeError(f"module 'modules.scripts' has no attribute {name!r}")
