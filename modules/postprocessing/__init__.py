"""Postprocessing models: upscaler networks (spandrel), face restoration, interrogation and
their folders. Used by Extras, hires fix and scripts alike; like the generation core it
imports no gradio and no FastAPI, and it holds no module-level state: the app owns the
loaded models and hands them to whoever needs them.
"""
