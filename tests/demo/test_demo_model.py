"""The shipped demo model: its pictures answer the prompt (checked pixel by pixel)."""

from __future__ import annotations

from safetensors import safe_open

from modules.demo import judge
from modules.demo.embedded import EMBEDDED_PATH
from modules.demo.evaluation import generate
from modules.generation.runner import Runner
from modules.models.arch import detect_architecture, read_checkpoint_shapes


def test_the_shipped_file_is_a_small_fp16_a1111_checkpoint():
    assert EMBEDDED_PATH.stat().st_size <= 25 * 2**20
    assert detect_architecture(read_checkpoint_shapes(EMBEDDED_PATH)) == "demo-shapes"
    with safe_open(str(EMBEDDED_PATH), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys() if k.startswith(("model.", "first_stage_model.", "cond_stage_model."))} <= {"F16", "I64"}


def test_txt2img_gives_the_asked_colours_for_several_seeds(demo_model):
    runner = Runner(demo_model)
    for prompt, background, colour in (
        ("a red circle on a blue background", "blue", "red"),
        ("a yellow star on a black background", "black", "yellow"),
        ("a white square on a green background", "green", "white"),
        ("a orange triangle on a purple background", "purple", "orange"),
    ):
        for seed, image in enumerate(generate(runner, prompt, 100, batch_size=4), start=100):
            reading = judge.read_picture(image)
            assert (reading.background, reading.colour) == (background, colour), f"{prompt!r}, seed {seed}: {reading}"


def test_a_colour_in_the_negative_prompt_keeps_it_out(demo_model):
    runner = Runner(demo_model)

    def readings(prompt: str, negative: str) -> list[judge.Reading]:
        pictures = [p for seed in (0, 8) for p in generate(runner, prompt, seed, negative=negative, batch_size=8)]
        return [judge.read_picture(p) for p in pictures]

    # "a square" alone comes in many colours, yellow most often; "yellow" in the negative removes it.
    assert sum(r.colour == "yellow" for r in readings("a square", "")) >= 3
    assert sum(r.colour == "yellow" for r in readings("a square", "yellow")) == 0
    # A yellow star's background is often orange (5 in 16) unless the negative prompt says otherwise.
    assert sum(r.background == "orange" for r in readings("a yellow star", "")) >= 4
    assert sum(r.background == "orange" for r in readings("a yellow star", "orange background")) == 0
