import hashlib
import subprocess
import sys

import pytest

from modules.models.arch import read_checkpoint_shapes
from tests.conftest import REPO

WRITE = "from pathlib import Path; from modules.models.tiny import write_tiny_checkpoint; write_tiny_checkpoint(Path({path!r}), Path('configs'))"


@pytest.mark.slow  # two extra Python processes
def test_the_builder_is_byte_identical_across_processes(tmp_path, tiny_checkpoint):
    outs = [tmp_path / f"run{i}.safetensors" for i in range(2)]
    # the two fresh processes run side by side: each spends its time importing, on a core of its own
    runs = [subprocess.Popen([sys.executable, "-c", WRITE.format(path=str(out))], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for out in outs]
    for run in runs:
        output, _ = run.communicate(timeout=300)
        assert run.returncode == 0, output.decode(errors="replace")
    digests = {hashlib.sha256(out.read_bytes()).hexdigest() for out in outs}
    digests.add(hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_the_tiny_model_has_sd1_key_layout_in_fp16(tiny_checkpoint):
    shapes = read_checkpoint_shapes(tiny_checkpoint)
    assert shapes["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (32, 32)
    assert shapes["model.diffusion_model.output_blocks.11.1.proj_out.weight"][0] == 32
    assert shapes["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"] == (77, 32)
    assert "first_stage_model.decoder.mid.attn_1.q.weight" in shapes
    assert tiny_checkpoint.stat().st_size < 12_000_000
