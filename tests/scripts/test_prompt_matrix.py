"""Prompt matrix: A1111's combinations of the `|` parts, one job each, and the labelled grid."""

from __future__ import annotations

import dataclasses
import random
import time

import pytest
from PIL import ImageChops

from modules.generation.params import GenerationParams
from modules.outputs.infotext import parse_infotext
from modules.scripts.base import LARGEST_SEED, counted_seeds
from sdext_classic_scripts.scripts.prompt_matrix import DELIMITERS, combinations, grid_labels, grid_shape, split_parts


def test_combinations_follow_a1111s_bit_order_and_joining():
    parts = split_parts("a cat|red, | big")
    assert combinations(parts, False, ", ") == ["a cat", "a cat, red", "a cat, big", "a cat, red, big"]
    assert combinations(parts, True, " ") == ["a cat", "red a cat", "big a cat", "red big a cat"]
    assert combinations(split_parts("no parts"), False, ", ") == ["no parts"]


@pytest.mark.parametrize("optional, shape", [(0, (1, 1)), (1, (2, 1)), (2, (2, 2)), (3, (4, 2)), (4, (4, 4))])
def test_grid_puts_the_first_half_of_the_parts_across(optional, shape):
    assert grid_shape(optional) == shape


def test_labels_mark_which_parts_each_column_and_row_has():
    columns, rows = grid_labels(split_parts("base | a | b | c"))
    assert [[(l.text, l.active) for l in col] for col in columns] == [
        [("a", False), ("b", False)], [("a", True), ("b", False)], [("a", False), ("b", True)], [("a", True), ("b", True)]]
    assert [[(l.text, l.active) for l in row] for row in rows] == [[("c", False)], [("c", True)]]


def _same(a, b) -> bool:
    return ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


def test_each_combination_is_a_job_and_the_grid_shows_them_in_order(script_app):
    params = GenerationParams.create(prompt="a cat | red | big", negative_prompt="ugly", width=64, height=64, steps=2, seed=5)
    result = script_app.run("Prompt matrix", "txt2img", params, [False, False, "positive", "comma", 4])
    assert result.grids == 1 and len(result.images) == 5
    texts = [parse_infotext(t) for t in result.infotexts[1:]]
    prompts = ["a cat ", "a cat , red", "a cat , big", "a cat , red, big"]  # A1111 keeps the first part as written
    assert result.prompts[1:] == prompts and [t["Prompt"] for t in texts] == [p.strip() for p in prompts]
    assert {t["Seed"] for t in texts} == {"5"} and {t["Negative prompt"] for t in texts} == {"ugly"}
    grid = result.images[0]
    # 2x2 cells 4 px apart, labels for "big" on the left, "red" above
    pad_left, pad_top = grid.width - 2 * 64 - 4, grid.height - 2 * 64 - 4
    assert pad_left > 0 and pad_top > 0
    for index, image in enumerate(result.images[1:]):
        x, y = pad_left + index % 2 * 68, pad_top + index // 2 * 68
        assert _same(grid.crop((x, y, x + 64, y + 64)), image)
    single = script_app.single(params.model_copy(update={"prompt": "a cat , red, big"}))
    assert _same(single.images[0], result.images[4])


def test_negative_prompt_matrix_with_a_seed_per_picture(script_app):
    params = GenerationParams.create(prompt="a cat", negative_prompt="blurry|dark", width=64, height=64, steps=2, seed=9,
                                     subseed_strength=0.3)
    result = script_app.run("Prompt matrix", "txt2img", params, [True, True, "negative", "space"])
    texts = [parse_infotext(t) for t in result.infotexts[1:]]
    assert len({t["Variation seed"] for t in texts}) == 1  # a random variation seed is drawn once, as A1111's fix_seed
    assert [t["Negative prompt"] for t in texts] == ["blurry", "dark blurry"]
    assert [t["Prompt"] for t in texts] == ["a cat", "a cat"]
    assert [t["Seed"] for t in texts] == ["9", "10"] and result.seeds[1:] == [9, 10]
    grid = result.images[0]
    assert grid.width == 2 * 64 and grid.height > 64  # one part: two columns labelled above, no row labels


def test_too_many_combinations_are_refused_before_any_job(script_app):
    before = len(script_app.queue.list())
    params = GenerationParams.create(prompt="x" + "|a" * 9, width=64, height=64, steps=2)
    with pytest.raises(ValueError, match="would queue 512 pictures; the most one run may queue is 200"):
        script_app.start("Prompt matrix", "txt2img", params, [])
    assert len(script_app.queue.list()) == before


def test_a_matrix_of_two_to_the_forty_is_refused_at_once(script_app):
    """Counted before the prompts are built: building 2**40 of them would never finish."""
    params = GenerationParams.create(prompt="x" + "|a" * 40, width=64, height=64, steps=2)
    started = time.monotonic()
    with pytest.raises(ValueError, match=f"would queue {2 ** 40} pictures"):
        script_app.start("Prompt matrix", "txt2img", params, [])
    assert time.monotonic() - started < 5


def test_img2img_matrix_starts_each_picture_from_the_init_image(script_app):
    from PIL import Image

    from modules.generation.params import Img2ImgParams
    from modules.generation.runner import InitImages

    init = InitImages((Image.new("RGB", (64, 64), (200, 40, 40)),))
    params = Img2ImgParams.create(prompt="a|b", width=64, height=64, steps=2, seed=3, denoising_strength=0.5)
    result = script_app.run("Prompt matrix", "img2img", params, [], init=init)
    assert result.prompts[1:] == ["a", "a, b"] and len(result.images) == 3
    single = script_app.single(params.model_copy(update={"prompt": "a, b"}), init)
    assert _same(single.images[0], result.images[2])


@pytest.mark.parametrize("limits, prompt, words", [
    ({"megapixel_steps": 1}, "a cat|red", ["picture 1", "megapixel-steps", "limit_megapixel_steps"]),
    ({"prompt_characters": 12}, "a cat|a very long part", ["picture 2", "'a cat, a very long part'", "limit_prompt_characters"]),
])
def test_a_picture_over_the_servers_limits_is_refused_before_any_job(script_app, monkeypatch, limits, prompt, words):
    monkeypatch.setattr(script_app.service, "limits", dataclasses.replace(script_app.service.limits, **limits))
    before = len(script_app.queue.list())
    params = GenerationParams.create(prompt=prompt, width=512, height=512, steps=4, seed=1)
    with pytest.raises(ValueError) as error:
        script_app.start("Prompt matrix", "txt2img", params, [])
    for word in words:
        assert word in str(error.value)
    assert len(script_app.queue.list()) == before


def test_a_seed_per_picture_stays_a_valid_seed(script_app):
    params = GenerationParams.create(prompt="a|b|c", width=64, height=64, steps=2, seed=LARGEST_SEED - 2)
    with pytest.raises(ValueError, match=f"seed {LARGEST_SEED - 2} goes up by 3 .one per picture., past the largest seed"):
        script_app.start("Prompt matrix", "txt2img", params, [False, True])


class _HighestDraw(random.Random):
    def randrange(self, stop):
        return stop - 1


def test_a_random_first_seed_is_drawn_low_enough_to_count_up():
    fixed = counted_seeds(GenerationParams(seed=-1, subseed=-1), 511, "Prompt matrix", "one per picture", _HighestDraw())
    assert fixed["seed"] + 511 <= LARGEST_SEED and fixed["subseed"] >= 0
    assert counted_seeds(GenerationParams(seed=LARGEST_SEED - 511, subseed=5), 511, "Prompt matrix", "one per picture") == {}


def test_the_joining_choices_cannot_be_changed_at_run_time():
    with pytest.raises(TypeError):
        DELIMITERS["comma"] = ";"
