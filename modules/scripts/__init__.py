"""A1111's selectable scripts (the Script menu and the API's script_name/script_args): what a
script is, its arguments, the context it runs in and the registry. The built-in ones (X/Y/Z
plot, prompt matrix, prompts from file, loopback, SD upscale, outpainting) are the built-in
extension extensions-builtin/classic-scripts, written on modules.extensions.api.

A script never runs its own sampling loop: it plans jobs, queues each as the same
txt2img/img2img job a single request makes (so each picture is bit for bit that job's, and
progress, interrupt and other users' turns work as usual), waits for them from its own
thread, and assembles grids or stitched pictures from their results. No gradio, no FastAPI.
"""
