"""The embedded demo model: its procedural pictures, prompt grammar, judge and training;
and the demo 4× upscaler (upscaler_training, upscaler_eval) trained on the same pictures.

Nothing here imports gradio; torch is imported only by the training and evaluation code.
"""
