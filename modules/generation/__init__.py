"""The generation core: parameters, samplers, seeds and noise, devices and precision,
prompt encoding and the runner. It imports no gradio and no FastAPI, so scripts, tests and
notebooks can use it directly."""
