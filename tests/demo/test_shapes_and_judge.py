"""The demo model's pictures, prompt grammar and the judge that reads pictures back."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules.demo import judge, shapes
from modules.models.loader import build_tokenizer


def test_held_out_scenes_never_occur_in_training_but_their_word_pairs_do():
    held, train = set(shapes.held_out_scenes()), set(shapes.training_scenes())
    assert len(held) == 64 and not held & train and len(held | train) == 224
    for s in held:
        assert any(t.colour == s.colour and t.shape == s.shape for t in train)
        assert any(t.colour == s.colour and t.background == s.background for t in train)
        assert any(t.shape == s.shape and t.background == s.background for t in train)


def test_every_grammar_word_is_one_clip_token(configs_dir):
    tokenizer = build_tokenizer(configs_dir)
    for word in (*shapes.COLOURS, *shapes.SHAPES, "background"):
        assert len(tokenizer(word).input_ids) == 3, word  # start, the word, end


def test_the_same_generator_draws_the_same_pictures():
    a, scenes_a = shapes.random_batch(shapes.all_scenes(), 8, np.random.default_rng(3))
    b, scenes_b = shapes.random_batch(shapes.all_scenes(), 8, np.random.default_rng(3))
    assert scenes_a == scenes_b and np.array_equal(a, b)


def test_judge_reads_every_drawn_picture_correctly():
    pictures, scenes = shapes.random_batch(shapes.all_scenes(), 200, np.random.default_rng(0))
    assert judge.score(list(pictures), scenes) == {"background": 1.0, "colour": 1.0, "shape": 1.0, "all": 1.0}


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_judge_tells_each_shape_from_the_others(shape):
    picture = shapes.draw(shapes.Scene("red", shape, "white"), (30, 34), 18)
    reading = judge.read_picture(picture)
    assert (reading.background, reading.colour, reading.shape) == ("white", "red", shape)
    assert reading.shape_iou > 0.9


def test_judge_finds_no_shape_in_a_plain_picture_or_a_shapeless_smear():
    plain = Image.new("RGB", (64, 64), shapes.PALETTE["blue"])
    assert judge.read_picture(plain) == judge.Reading("blue", None, None, 0.0)
    smear = np.full((64, 64, 3), shapes.PALETTE["blue"], dtype=np.uint8)
    smear[20:24, 4:60] = shapes.PALETTE["yellow"]  # a thin bar fits no outline well
    smear[24:44, 28:32] = shapes.PALETTE["yellow"]
    reading = judge.read_picture(smear)
    assert reading.colour == "yellow" and reading.shape is None
