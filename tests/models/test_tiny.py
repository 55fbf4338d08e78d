import hashlib
import subprocess
import sys

from modules.models.arch import read_checkpoint_shapes
from tests.conftest import REPO

WRITE = "from pathlib import Path; from modules.models.tiny import write_tiny_checkpoint; write_tiny_checkpoint(Path({path!r}), Path('configs'))"


def test_the_builder_is_byte_identical_across_processes(tmp_path, tiny_checkpoint):
    digests = set()
    for i in range(2):
        out = tmp_path / f"run{i}.safetensors"
        subprocess.run([sys.executable, "-c", WRITE.format(path=str(out))], cwd=REPO, check=True, capture_output=True)
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    digests.add(hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_the_tiny_model_has_sd1_key_layout_in_fp16(tiny_checkpoint):
    shapes = read_checkpoint_shapes(tiny_checkpoint)
    assert shapes["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (32, 32)
    assert shapes["model.diffusion_model.output_blocks.11.1.proj_out.weight"][0] == 32
    assert shapes["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"] == (77, 32)
    assert "first_stage_model.decoder.mid.attn_1.q.weight" in shapes
    assert tiny_checkpoint.stat().st_size < 12_000_000
