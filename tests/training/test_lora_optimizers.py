"""kohya's AdamW8bit (bitsandbytes, which runs its 8-bit optimisers on the CPU too): a run
trains with it, records it in the file, and resumes with its quantised state exactly. Slow (two more demo-model runs): `pytest -m slow`."""

from __future__ import annotations

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from tests.training.test_lora_training import draw_set, tiny_params, trainer_for

pytestmark = pytest.mark.slow

pytest.importorskip("bitsandbytes")


def test_adamw8bit_trains_and_resumes_exactly(tmp_path):
    from modules.training.lora_trainer import Hooks

    folder = draw_set(tmp_path / "data" / "shapes", 4)
    params = tiny_params(folder, optimizer_type="AdamW8bit", max_train_steps=4, learning_rate=5e-3)
    whole = trainer_for(params, folder, tmp_path / "a", tmp_path / "a.safetensors")
    assert type(whole.optimizer).__name__ == "AdamW8bit"
    done = whole.train()
    with safe_open(str(done.lora), framework="pt") as f:
        assert f.metadata()["ss_optimizer"] == "bitsandbytes.optim.adamw.AdamW8bit"

    steps = []
    cut = trainer_for(params, folder, tmp_path / "b", tmp_path / "b.safetensors").train(
        Hooks(should_stop=lambda: len(steps) >= 2, on_step=lambda s, t, loss: steps.append(s)))
    assert cut.steps == 2
    resumed = trainer_for(params, folder, tmp_path / "b", tmp_path / "b.safetensors").train()
    assert resumed.resumed_from == 2 and resumed.steps == 4
    a, b = load_file(str(done.lora)), load_file(str(resumed.lora))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
