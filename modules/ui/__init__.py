"""The gradio page. Builds controls from the shared parameter definitions and hands
requests to the job queue; it holds no generation logic."""
