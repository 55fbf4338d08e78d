"""Training on the selected checkpoint: LoRA (kohya-style options, kohya-layout .safetensors
into models/Lora/) and textual-inversion embeddings, as queue jobs whose run folders under
`<data_dir>/train/` hold the parameters, the loss log, samples, scores and the resume state.
The training folder, the trainers, the kohya export, scores and the service live here; this
package imports no gradio, and FastAPI only in its two route modules (`routes.py`,
`embedding_routes.py`)."""
