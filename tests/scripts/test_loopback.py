"""Loopback: img2img of the previous picture, loop after loop, its denoising strength on A1111's curves."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from PIL import Image, ImageChops

from modules.generation.params import GenerationParams, Img2ImgParams
from modules.generation.runner import InitImages
from modules.outputs.infotext import parse_infotext
from modules.scripts.base import LARGEST_SEED
from sdext_classic_scripts.scripts.loopback import INTERROGATORS, denoising_strength


@pytest.mark.parametrize("curve, middle", [("Linear", 0.5), ("Aggressive", math.sin(math.pi / 4)), ("Lazy", 1 - math.cos(math.pi / 4))])
def test_curves_run_from_the_requests_strength_to_the_final_one(curve, middle):
    strengths = [denoising_strength(loop, 3, 0.2, 0.6, curve) for loop in range(3)]
    assert strengths[0] == pytest.approx(0.2)
    assert strengths[1] == pytest.approx(0.2 + 0.4 * middle)
    assert strengths[2] == pytest.approx(0.6)


def test_a_single_loop_keeps_the_requests_strength():
    assert denoising_strength(1, 1, 0.3, 0.9, "Linear") == 0.3


def test_aggressive_is_above_linear_and_lazy_below():
    args = (2, 5, 0.1, 0.9)
    assert denoising_strength(*args, "Aggressive") > denoising_strength(*args, "Linear") > denoising_strength(*args, "Lazy")


def _same(a, b) -> bool:
    return ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


@pytest.fixture(scope="module")
def start_picture():
    return Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def test_each_loop_is_img2img_of_the_previous_picture(script_app, start_picture):
    params = Img2ImgParams.create(prompt="a cat", width=64, height=64, steps=4, seed=30, denoising_strength=0.75)
    init = InitImages((start_picture,))
    result = script_app.run("Loopback", "img2img", params, [3, 0.25, "Linear", "None"], init=init)
    assert result.grids == 1 and len(result.images) == 4
    assert result.images[0].size == (3 * 64, 64)  # the grid: one row of the loops
    texts = [parse_infotext(t) for t in result.infotexts[1:]]
    assert [t["Denoising strength"] for t in texts] == ["0.75", "0.5", "0.25"]
    assert result.seeds[1:] == [30, 31, 32]
    # loop 2 is the single img2img job of loop 1's picture
    single = script_app.single(params.model_copy(update={"seed": 31, "denoising_strength": 0.5}), InitImages((result.images[1],)))
    assert _same(single.images[0], result.images[2])
    assert not _same(result.images[1], result.images[2])


def test_a_batch_count_loops_again_from_the_start_and_returns_each_last_picture(script_app, start_picture):
    params = Img2ImgParams.create(prompt="a cat", width=64, height=64, steps=2, seed=40, n_iter=2, denoising_strength=0.5)
    result = script_app.run("Loopback", "img2img", params, [2, 1.0, "Aggressive", "None"], init=InitImages((start_picture,)))
    # as A1111 (one history for the whole run): the grid is a row of each batch's last picture
    assert result.grids == 1 and len(result.images) == 3 and result.images[0].size == (2 * 64, 64)
    assert _same(result.images[0].crop((0, 0, 64, 64)), result.images[1])
    assert _same(result.images[0].crop((64, 0, 128, 64)), result.images[2])
    assert result.seeds[1:] == [41, 43]  # seeds go on counting across the batches
    assert {parse_infotext(t)["Denoising strength"] for t in result.infotexts[1:]} == {"1"}


def test_loopback_is_refused_without_a_picture_or_on_txt2img(script_app):
    params = Img2ImgParams.create(width=64, height=64, steps=2)
    with pytest.raises(ValueError, match="init image"):
        script_app.start("Loopback", "img2img", params, [])
    with pytest.raises(ValueError, match="not found for txt2img"):
        script_app.start("Loopback", "txt2img", GenerationParams.create(width=64, height=64, steps=2), [])


def test_interrupt_stops_the_loops(script_app, start_picture):
    params = Img2ImgParams.create(prompt="a cat", width=64, height=64, steps=2, seed=50)
    runs, submitted = [], []

    def on_submit(job):
        submitted.append(job)
        if len(submitted) == 2:  # Interrupt pressed while the second loop waits
            runs[0].interrupt()

    runs.append(script_app.start("Loopback", "img2img", params, [4], init=InitImages((start_picture,)), on_submit=on_submit))
    assert runs[0].done.wait(300)
    result = runs[0].result
    assert runs[0].error is None and result.interrupted
    assert len(submitted) == 2 and result.grids == 0 and result.seeds == [50]


class _Interrogator:
    """Stands in for the app's InterrogateService: a caption naming the model and the picture's first pixel."""

    def __init__(self, missing: str | None = None):
        self.missing, self.seen = missing, []

    def check(self, model):
        if model == self.missing:
            raise ValueError(f"models/{model} is empty")

    def run(self, job, image, model):
        self.seen.append(image)
        return f"{model} {image.getpixel((0, 0))[0]}"


@pytest.fixture
def with_interrogator(script_app):
    env = script_app.runner.env
    stub = _Interrogator(missing="deepdanbooru")
    script_app.runner.env = dataclasses.replace(env, interrogator=stub)
    yield stub
    script_app.runner.env = env


def test_each_loop_appends_the_caption_of_its_starting_picture(script_app, start_picture, with_interrogator):
    params = Img2ImgParams.create(prompt="a cat", width=64, height=64, steps=2, seed=60)
    result = script_app.run("Loopback", "img2img", params, [2, 0.5, "Linear", "CLIP"], init=InitImages((start_picture,)))
    first, second = with_interrogator.seen
    assert _same(first, start_picture) and _same(second, result.images[1])
    assert result.prompts[1:] == [f"a cat, clip {first.getpixel((0, 0))[0]}", f"a cat, clip {second.getpixel((0, 0))[0]}"]
    with pytest.raises(ValueError, match=r"DeepBooru\): models/deepdanbooru is empty"):
        script_app.start("Loopback", "img2img", params, [2, 0.5, "Linear", "DeepBooru"], init=InitImages((start_picture,)))


def test_interrogation_is_refused_where_the_server_has_none(script_app, start_picture):
    params = Img2ImgParams.create(width=64, height=64, steps=2)
    with pytest.raises(ValueError, match="not available"):
        script_app.start("Loopback", "img2img", params, [2, 0.5, "Linear", "CLIP"], init=InitImages((start_picture,)))


def test_runs_the_server_would_refuse_are_refused_before_any_job(script_app, start_picture, monkeypatch):
    before = len(script_app.queue.list())
    init = InitImages((start_picture,))
    params = Img2ImgParams.create(prompt="a cat", width=64, height=64, steps=2, seed=LARGEST_SEED - 2, n_iter=2)
    with pytest.raises(ValueError, match=f"Loopback: seed {LARGEST_SEED - 2} goes up by 3 .one per loop., past the largest seed"):
        script_app.start("Loopback", "img2img", params, [2], init=init)
    monkeypatch.setitem(script_app.settings.values, "script_max_jobs", 3)
    with pytest.raises(ValueError, match=r"Loopback would queue 4 jobs \(loops x batch count\); the most one run may queue is 3"):
        script_app.start("Loopback", "img2img", params, [2], init=init)
    monkeypatch.setattr(script_app.service, "limits", dataclasses.replace(script_app.service.limits, megapixel_steps=1))
    big = Img2ImgParams.create(prompt="a cat", width=512, height=512, steps=4, seed=1)
    with pytest.raises(ValueError, match="Loopback: This job asks for 2 megapixel-steps"):
        script_app.start("Loopback", "img2img", big, [2], init=init)
    assert len(script_app.queue.list()) == before


def test_the_interrogator_choices_cannot_be_changed_at_run_time():
    with pytest.raises(TypeError):
        INTERROGATORS["CLIP"] = "other"
