"""Judging the demo model through the project's own generation core.

Used by the build script's last phase and by ``bench/demo_model_eval.py``: every
held-out scene is prompted as "a COLOUR SHAPE on a COLOUR background" (a sentence the
model never saw in training, since the scene itself never occurs there), generated at
the model's native size, and read back with :mod:`modules.demo.judge`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path


from modules.demo import judge, shapes

DEFAULT_CFG = 5.0
DEFAULT_STEPS = 20
DEFAULT_SAMPLER = "DPM++ 2M"


@dataclass
class Evaluation:
    scores: dict[str, float]
    seconds: list[float]  # per picture, batch size 1
    pictures: list = field(repr=False, default_factory=list)  # PIL images, scene order

    @property
    def images(self) -> int:
        return len(self.seconds)

    @property
    def seconds_per_image(self) -> float:
        """The median: on a shared 2-core VM single pictures stall now and then."""
        return statistics.median(self.seconds)

    @property
    def mean_seconds(self) -> float:
        return statistics.fmean(self.seconds)


def load_demo(checkpoint: Path, configs_dir: Path, device: str = "cpu"):
    import torch

    from modules.models.loader import load_checkpoint

    return load_checkpoint(checkpoint, configs_dir=configs_dir, device=torch.device(device),
                           dtype=torch.float32, vae_dtype=torch.float32)


def generate(runner, prompt: str, seed: int, *, negative: str = "", cfg: float = DEFAULT_CFG,
             steps: int = DEFAULT_STEPS, sampler: str = DEFAULT_SAMPLER, batch_size: int = 1, hooks=None):
    """txt2img pictures for one prompt from a ``Runner`` (seeds ``seed``, ``seed+1``, ...);
    ``hooks`` are the job's add-ons (a ControlNet unit)."""
    from modules.generation.params import GenerationParams

    params = GenerationParams.create(prompt=prompt, negative_prompt=negative, seed=seed, steps=steps,
                                     cfg_scale=cfg, sampler_name=sampler, width=shapes.SIZE,
                                     height=shapes.SIZE, batch_size=batch_size)
    return [image for batch in runner.txt2img(params, seed, hooks=hooks) for image in batch.images]


def evaluate(model, scenes=None, seeds=(0,), cfg: float = DEFAULT_CFG, steps: int = DEFAULT_STEPS,
             sampler: str = DEFAULT_SAMPLER, progress=None) -> Evaluation:
    """Generate one picture per scene and seed (batch size 1, timed) and score them.

    One runner serves every prompt, as in the app, so the time per image is what a user
    waits for one picture, prompt encoding and decoding included.
    """
    from modules.generation.runner import Runner

    runner = Runner(model)
    scenes = list(scenes or shapes.held_out_scenes())
    pictures, judged, seconds = [], [], []
    for _ in range(3):  # warm-up
        generate(runner, scenes[0].prompt(), 0, cfg=cfg, steps=steps, sampler=sampler)
    for seed in seeds:
        for scene in scenes:
            started = time.perf_counter()
            pictures += generate(runner, scene.prompt(), seed, cfg=cfg, steps=steps, sampler=sampler)
            seconds.append(time.perf_counter() - started)
            judged.append(scene)
            if progress is not None:
                progress.update(1)
    return Evaluation(judge.score(pictures, judged), seconds, pictures)


def contact_sheet(pictures, columns: int = 16):
    """One image with the pictures in rows of ``columns`` (the app's own grid tiling)."""
    from modules.outputs.saving import make_grid

    return make_grid(pictures, rows=-(-len(pictures) // columns))
