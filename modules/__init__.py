"""The web UI's Python code.

Subpackages: `models` (finding and loading checkpoints), `generation` (the core that turns
parameters into images; no gradio or FastAPI here), `outputs` (files, names, infotext),
`jobs` (the work queue, progress, interrupt and skip), `ui` (the gradio page).
"""
