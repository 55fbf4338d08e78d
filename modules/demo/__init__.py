"""The embedded demo model: its procedural pictures, prompt grammar, judge and training.

Nothing here imports gradio; torch is imported only by the training and evaluation code.
"""
