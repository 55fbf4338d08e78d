#!/usr/bin/env python
"""What A1111's prompt features cost in the generation core, measured in one run on the tiny
test model (CPU, fp32, 64x64, Euler a, 20 steps):

1. a plain prompt vs a weighted 140-token prompt (two chunks, cond and uncond padded): the
   encoder is cached, so the cost is the longer cross-attention;
2. the same plain prompt with one and with two LoRAs active (peft, unmerged) vs none. The runs
   alternate and a job without LoRAs removes them, so each LoRA run here also reads and injects
   its files again: the worst case, as when two users take turns with and without a LoRA;
3. the plain prompt after the LoRAs were removed vs before they were ever loaded: the ratio
   should be 1.00 and the images identical, i.e. nothing is left behind.

Each pair alternates A/B after a warm-up and prints medians and ratios.
Run from the repository root:  venv/bin/python bench/prompt_addons.py [--rounds N]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PLAIN = "a red circle on a blue background"
LONG = "a (red:1.3) circle on a [blue] background, " + ", ".join(["highly detailed", "sharp focus", "studio lighting"] * 15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import numpy as np
    import torch

    from modules.generation.params import GenerationParams
    from modules.generation.runner import PromptSetup, Runner
    from modules.models.catalog import HashCache
    from modules.models.loader import load_checkpoint
    from modules.models.lora import LoraLibrary
    from modules.models.tiny import write_tiny_checkpoint
    from tests.models.test_lora import write_test_lora

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    work = Path(tempfile.mkdtemp(prefix="bench-prompts-"))
    ckpt = write_tiny_checkpoint(work / "tiny.safetensors", REPO / "configs")
    model = load_checkpoint(ckpt, configs_dir=REPO / "configs", device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)
    for name, seed in (("one", 1), ("two", 2)):
        write_test_lora(work / "Lora" / f"{name}.safetensors", model, seed=seed, strength=0.05)
    runner = Runner(model, PromptSetup(loras=LoraLibrary((work / "Lora",), HashCache(None))))

    def timed(prompt: str) -> tuple[float, np.ndarray]:
        params = GenerationParams.create(prompt=prompt, negative_prompt="blurry", width=64, height=64, steps=20, sampler_name="Euler a", seed=3)
        start = time.perf_counter()
        images = [im for batch in runner.txt2img(params, 3) for im in batch.images]
        return time.perf_counter() - start, np.asarray(images[0], dtype=np.int16)

    def pair(label: str, a: str, b: str) -> tuple[float, np.ndarray, np.ndarray]:
        timed(a), timed(b)  # warm-up (and prompt cache)
        times_a, times_b = [], []
        for _ in range(args.rounds):
            ta, image_a = timed(a)
            tb, image_b = timed(b)
            times_a.append(ta)
            times_b.append(tb)
        ma, mb = statistics.median(times_a), statistics.median(times_b)
        print(f"| {label:<44} | {ma:10.3f} | {mb:10.3f} | {mb / ma:6.3f} |")
        return mb / ma, image_a, image_b

    print(f"tiny model, CPU fp32, 64x64, Euler a, 20 steps, {args.rounds} alternating rounds, torch threads {torch.get_num_threads()}\n")
    print(f"| {'B vs A':<44} | A median s | B median s | B / A |")
    print(f"|{'-' * 46}|------------|------------|--------|")
    plain_before = statistics.median(timed(PLAIN)[0] for _ in range(args.rounds))
    _, before, _ = pair("140-token weighted prompt vs plain", PLAIN, LONG)
    pair("1 LoRA vs none", PLAIN, PLAIN + " <lora:one:1>")
    pair("2 LoRAs vs none", PLAIN, PLAIN + " <lora:one:1> <lora:two:1>")
    runner.prepare(GenerationParams.create(prompt=PLAIN))  # a job without LoRAs: they are switched off
    runs = [timed(PLAIN) for _ in range(args.rounds)]
    plain_after = statistics.median(t for t, _ in runs)
    label = "plain after the LoRAs vs before any LoRA"
    print(f"| {label:<44} | {plain_before:10.3f} | {plain_after:10.3f} | {plain_after / plain_before:6.3f} |")
    print(f"\nAfter the LoRAs, the plain prompt's image equals the one from before any LoRA: {np.array_equal(before, runs[-1][1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
