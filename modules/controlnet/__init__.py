"""ControlNet, built in the way Forge ships it: a package that reaches the generation core only
through the hook points of modules.generation.hooks, and speaks the A1111 ControlNet
extension's (sd-webui-controlnet) names: unit fields, module and model names, routes, infotext.

units.py (what a request asks for), models.py (ControlNet files), preprocessors.py and
annotators.py (detected maps), resize.py (fitting a map to the picture), hook.py (residuals
per UNet call), service.py (what a job does with its units), routes.py (the extension's API).
"""
