"""The shipped demo ControlNet (models/ControlNet/demo-shapes-canny) really steers the demo model.

Everything goes through the app's own pieces: the ControlNet library loads the folder for
the demo checkpoint, the canny preprocessor makes the map, and Runner.txt2img runs with a
ControlNetHook. The condition is the canny map of a square in the picture's left half.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from modules.demo import controlnet_eval, controlnet_training, shapes
from modules.demo.embedded import REPO_ROOT

FOLDER = REPO_ROOT / "models" / "ControlNet" / controlnet_training.FOLDER_NAME
STEPS = 12  # DPM++ 2M; bench/controlnet_steering.py measures at 20 (12 steers as well: 20/20, IoU 0.83)


@pytest.fixture(scope="module")
def demo(demo_model, configs_dir):
    from modules.controlnet.models import ControlNetLibrary

    library = ControlNetLibrary([FOLDER.parent], configs_dir)
    return controlnet_eval.Demo(demo_model, library.load(FOLDER.name, demo_model), FOLDER.name)


@pytest.fixture(scope="module")
def runner(demo):
    from modules.generation.runner import Runner

    return Runner(demo.model)


@pytest.fixture(scope="module")
def steering(demo):
    """20 seeds with and without the unit, read back."""
    with torch.inference_mode():
        return controlnet_eval.measure(demo, seeds=range(20), steps=STEPS)


def test_shipped_folder_is_a_small_fp16_diffusers_controlnet_the_library_lists(configs_dir):
    from safetensors import safe_open

    from modules.controlnet.models import ControlNetLibrary

    weights = FOLDER / "diffusion_pytorch_model.safetensors"
    assert json.loads((FOLDER / "config.json").read_text())["_class_name"] == "ControlNetModel"
    assert weights.stat().st_size < 6 * 2**20
    with safe_open(str(weights), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    library = ControlNetLibrary([FOLDER.parent], configs_dir)
    (name,) = [n for n in library.names() if n.startswith(FOLDER.name + " [")]
    assert library.arch_of(name) == "demo-shapes"


def test_training_condition_is_what_the_canny_preprocessor_makes_at_64_px():
    from modules.controlnet.preprocessors import Preprocessors

    picture = shapes.draw(shapes.Scene("red", "star", "blue"), (30.0, 34.0), 17.0)
    made = Preprocessors().run("canny", picture, 64, 100, 200)
    ours = controlnet_training.canny_map(np.asarray(picture))
    assert made.size == (64, 64)
    assert np.array_equal(np.asarray(made.convert("RGB")), ours)
    assert 40 < (ours[..., 0] > 0).sum() < 400  # an outline, not a blank or a filled map


def test_square_edge_map_puts_the_shape_in_the_left_half(steering):
    summary = steering.summary()
    print(controlnet_eval.format_summary(steering))
    assert summary["left_share_with"] >= 0.9
    # without the unit the demo model puts its squares anywhere
    assert summary["left_share_without"] <= 0.75


def test_generated_shape_covers_the_conditioning_silhouette(steering):
    summary = steering.summary()
    assert summary["iou_with"] >= 0.6
    assert summary["iou_without"] < summary["iou_with"] - 0.2


def test_weight_zero_is_the_picture_without_controlnet_bit_for_bit(demo, runner):
    prompt = controlnet_eval.prompts()[0]
    with torch.inference_mode():
        plain = controlnet_eval.generate(runner, demo, prompt, 7, None, batch_size=2, steps=STEPS)
        zero = controlnet_eval.generate(runner, demo, prompt, 7, controlnet_eval.unit_settings(weight=0.0),
                                        batch_size=2, steps=STEPS)
        steered = controlnet_eval.generate(runner, demo, prompt, 7, controlnet_eval.unit_settings(weight=1.0),
                                           batch_size=2, steps=STEPS)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(plain, zero, strict=True))
    assert controlnet_eval.mean_difference(plain, steered) > 5


def test_guidance_end_early_changes_less_than_guidance_to_the_end(demo, runner):
    prompt = controlnet_eval.prompts()[1]
    with torch.inference_mode():
        def run(settings):
            return controlnet_eval.generate(runner, demo, prompt, 3, settings, batch_size=3, steps=STEPS)

        plain = run(None)
        early = run(controlnet_eval.unit_settings(guidance_end=0.3))
        full = run(controlnet_eval.unit_settings(guidance_end=1.0))
    early_change, full_change = controlnet_eval.mean_difference(plain, early), controlnet_eval.mean_difference(plain, full)
    assert 0 < early_change < full_change


def test_shape_mask_reads_a_drawn_square():
    box = controlnet_eval.CONDITION_BOX
    picture = shapes.draw(shapes.Scene("red", "square", "blue"), ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2),
                          (box[2] - box[0]) / 2)
    mask = controlnet_eval.shape_mask(picture)
    assert controlnet_eval.iou(mask, controlnet_eval.silhouette()) > 0.9
    assert controlnet_eval.in_left_half(mask)
    assert controlnet_eval.shape_mask(Image.new("RGB", (64, 64), (30, 60, 220))) is None


def test_training_is_seeded_and_resumes_to_the_same_weights(demo_model, tmp_path):
    recipe = controlnet_training.Recipe.quick()
    whole = controlnet_training.train(recipe, demo_model, tmp_path / "whole")

    class Stop(Exception):
        pass

    def stop_after_checkpoint(step: int, loss: float) -> None:
        if step == recipe.checkpoint_every:
            raise Stop

    with pytest.raises(Stop):
        controlnet_training.train(recipe, demo_model, tmp_path / "resumed", stop_after_checkpoint)
    resumed = controlnet_training.train(recipe, demo_model, tmp_path / "resumed")
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # the zero convolutions have learnt something in six steps
    assert whole.controlnet_mid_block.weight.abs().sum() > 0
    folder = controlnet_training.write_model(whole, tmp_path / "out", recipe)
    assert (folder / "config.json").is_file() and (folder / "diffusion_pytorch_model.safetensors").is_file()
