"""A LoRA trained in the queue teaches the demo model a shape it has never seen: a cross.

About 40 drawings of coloured crosses (made here) and the same number of pictures of the
shapes it knows (kohya's regularisation images, so the old words keep their meaning) go
through the Train tab's service on the CPU. Before, "a red cross on a white background"
never gives a cross (the word is untrained: it draws one of its four shapes); with
`<lora:cross:1>` at least 80 % of seeds do; without the tag the pictures are the base
model's, bit for bit. Slow (a few minutes on two cores): `pytest -m slow`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.demo import judge, shapes
from modules.demo.embedded import EMBEDDED_PATH
from modules.training.params import LoraTrainingParams

pytestmark = pytest.mark.slow

ARM = 1 / 3
CROSS = ((ARM, 0), (1 - ARM, 0), (1 - ARM, ARM), (1, ARM), (1, 1 - ARM), (1 - ARM, 1 - ARM), (1 - ARM, 1), (ARM, 1), (ARM, 1 - ARM),
         (0, 1 - ARM), (0, ARM), (ARM, ARM))
OUTLINES = {**judge.TEMPLATES, "cross": (CROSS,)}
PROMPTS = [("red", "white"), ("blue", "yellow"), ("green", "black"), ("white", "purple"), ("orange", "blue"), ("black", "green")]
SEEDS_PER_PROMPT = 4


def draw_cross(colour: str, background: str, rng: np.random.Generator) -> Image.Image:
    half = rng.uniform(*shapes.HALF_SIZE)
    low, high = shapes.BORDER + half, shapes.SIZE - shapes.BORDER - half
    cx, cy = rng.uniform(low, high), rng.uniform(low, high)
    ss = shapes.SUPERSAMPLE
    big = Image.new("RGB", (shapes.SIZE * ss,) * 2, shapes.PALETTE[background])
    box = [(cx - half) * ss, (cy - half) * ss, (cx + half) * ss, (cy + half) * ss]
    ImageDraw.Draw(big).polygon([(box[0] + x * (box[2] - box[0]), box[1] + y * (box[3] - box[1])) for x, y in CROSS],
                                fill=shapes.PALETTE[colour])
    return big.resize((shapes.SIZE,) * 2, Image.BOX)


def write_dataset(root: Path, crosses: int = 40, known: int = 40) -> Path:
    rng = np.random.default_rng(7)
    (root / "crosses").mkdir(parents=True)
    (root / "known").mkdir()
    for k in range(crosses):
        colour = shapes.COLOURS[k % 8]
        background = [c for c in shapes.COLOURS if c != colour][(k // 8) % 7]
        draw_cross(colour, background, rng).save(root / "crosses" / f"{k:02d}.png")
        (root / "crosses" / f"{k:02d}.txt").write_text(f"a {colour} cross on a {background} background")
    scenes = shapes.training_scenes()
    for k in range(known):
        scene = scenes[int(rng.integers(len(scenes)))]
        Image.fromarray(shapes.random_picture(scene, rng)).save(root / "known" / f"{k:02d}.png")
        (root / "known" / f"{k:02d}.txt").write_text(scene.prompt())
    return root


def crosses_drawn(runner, tag: str = "") -> tuple[float, list]:
    from modules.generation.params import GenerationParams

    readings, pictures = [], []
    for k, (colour, background) in enumerate(PROMPTS):
        params = GenerationParams.create(prompt=f"a {colour} cross on a {background} background{tag}", width=64, height=64, steps=20,
                                         cfg_scale=5, sampler_name="Euler a", batch_size=SEEDS_PER_PROMPT)
        prepared = runner.prepare(params)
        assert not prepared.warnings
        for batch in runner.txt2img(params, 100 + k * SEEDS_PER_PROMPT, prompts=prepared):
            pictures += [np.asarray(im) for im in batch.images]
            readings += [judge.read_picture(im, outlines=OUTLINES).shape for im in batch.images]
    return sum(r == "cross" for r in readings) / len(readings), pictures


def test_a_lora_teaches_the_demo_model_a_new_shape(tmp_path):
    import webui
    from modules.jobs.queue import JobStatus
    from modules.options import parse_args

    data = tmp_path / "data"
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(EMBEDDED_PATH, data / "models" / "Stable-diffusion" / EMBEDDED_PATH.name)
    write_dataset(data / "cross-set")
    app = webui.App.create(parse_args(["--data-dir", str(data), "--disable-console-progressbars"]))
    try:
        assert app.start(EMBEDDED_PATH.name).wait(120)
        from modules.generation.runner import PromptSetup, Runner

        runner = Runner(app.models.ensure().model, PromptSetup(loras=app.service.libraries.loras))  # one, as the app keeps one per model
        before, plain = crosses_drawn(runner)
        assert before <= 0.1

        params = LoraTrainingParams.from_request(RECIPE | {"output_name": "cross", "train_data_dir": "cross-set"})
        job = app.training.submit(app.queue, params)
        assert job.wait(1200) and job.status is JobStatus.DONE, job.error

        after, _ = crosses_drawn(runner, " <lora:cross:1>")
        print(f"crosses: {before:.0%} of pictures before training, {after:.0%} with the LoRA")
        assert after >= 0.8, f"crosses in {after:.0%} of pictures"
        _, again = crosses_drawn(runner)
        assert all(np.array_equal(a, b) for a, b in zip(plain, again))  # the LoRA off: the base model's pictures
    finally:
        app.queue.shutdown()


RECIPE = dict(network_dim=8, network_alpha=8, conv_dim=8, conv_alpha=8, learning_rate=5e-3, lr_scheduler="cosine", max_train_steps=800,
              train_batch_size=8, resolution=64, enable_bucket=False, seed=1)
