"""A model's webui.json may carry the Train tab's starting values ("training"): the demo model's
recipe is read, and a bad name or value is refused with a sentence (the file is then ignored, as
for bad generation defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modules.models.hints import ModelHints

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_the_demo_models_training_recipe_is_read():
    hints = ModelHints.read(CONFIGS / "demo-shapes")
    assert dict(hints.training) == {"resolution": 64, "enable_bucket": False, "network_dim": 8, "network_alpha": 8, "conv_dim": 8,
                                    "conv_alpha": 8, "learning_rate": 0.005, "max_train_steps": 800, "lr_scheduler": "cosine", "train_batch_size": 8,
                                    "sample_steps": 20}
    assert hints.defaults["width"] == 64  # the generation defaults are still there
    assert ModelHints.parse({"guide": "g"}).training == {}  # optional


def test_bad_training_values_are_refused_and_the_file_ignored(tmp_path):
    with pytest.raises(ValueError, match=r"'training': Resolution: Input should be greater than or equal to 64; "
                                         r"rank: is not a known parameter"):
        ModelHints.parse({"training": {"resolution": 32, "rank": 8}})
    with pytest.raises(ValueError, match="'training' must be an object"):
        ModelHints.parse({"training": [64]})
    (tmp_path / "webui.json").write_text('{"guide": "g", "training": {"network_dim": 0}}')
    assert ModelHints.read(tmp_path) == ModelHints()
