"""Prompts from file or textbox: A1111's options lines, each line its own job."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import ImageChops

from modules.generation.params import GenerationParams
from modules.outputs.infotext import parse_infotext
from modules.scripts.base import ScriptEnv, ScriptRequest
from modules.scripts.base import LARGEST_SEED
from sdext_classic_scripts.scripts.prompts_from_file import joined, parse_options, plan, read_lines

# The wiki's examples, and what A1111's parser reads from them.
EXAMPLES = [
    ('--prompt "photo of sunset"', {"prompt": "photo of sunset"}),
    ('--prompt "photo of sunset" --negative_prompt "orange, pink, red, sea, water, lake" --width 1024 --height 768 '
     '--sampler_name "DPM++ 2M Karras" --steps 10 --batch_size 2 --cfg_scale 3 --seed 9',
     {"prompt": "photo of sunset", "negative_prompt": "orange, pink, red, sea, water, lake", "width": 1024, "height": 768,
      "sampler_name": "DPM++ 2M Karras", "steps": 10, "batch_size": 2, "cfg_scale": 3.0, "seed": 9}),
    ('--prompt "photo of winter mountains" --steps 7 --sampler_name "DDIM"',
     {"prompt": "photo of winter mountains", "steps": 7, "sampler_name": "DDIM"}),
    # unquoted prompts take every word up to the next option
    ("--prompt a red cat --negative_prompt blurry dog --tiling true --restore_faces false",
     {"prompt": "a red cat", "negative_prompt": "blurry dog", "tiling": True, "restore_faces": False}),
    ("--subseed 3 --subseed_strength 0.5 --seed_resize_from_w 128 --seed_resize_from_h 96 --n_iter 2 --sampler_index 6",
     {"subseed": 3, "subseed_strength": 0.5, "seed_resize_from_w": 128, "seed_resize_from_h": 96, "n_iter": 2, "sampler_index": 6}),
    ('--sd_model tiny --styles "a, b" --do_not_save_samples true --do_not_save_grid true --prompt_for_display x',
     {"sd_model": "tiny", "styles": "a, b", "do_not_save_samples": True, "do_not_save_grid": True, "prompt_for_display": "x"}),
]


@pytest.mark.parametrize("line, options", EXAMPLES)
def test_options_lines_read_as_a1111_reads_them(line, options):
    assert parse_options(line) == options


@pytest.mark.parametrize("line, words", [
    ("--steps ten", ["--steps", "whole number", "'ten'"]),
    ("--cfg_scale high", ["--cfg_scale", "number"]),
    ("--tiling maybe", ["--tiling", "true or false", "'maybe'"]),
    ("--colour red", ["unknown option --colour"]),
    ("--steps", ["--steps needs a value"]),
    ("--steps 3 extra", ["'extra'"]),
    ('--prompt "unclosed', ["cannot be split"]),
    ("--sampler_name Nonesuch", ["--sampler_name", "Nonesuch"]),
    ("--scheduler Nonesuch", ["--scheduler", "Nonesuch"]),
    ("--outpath_samples /etc", ["--outpath_samples", "not accepted"]),
    ("--outpath_grids ../x", ["--outpath_grids", "not accepted"]),
])
def test_bad_options_are_refused_naming_the_option(line, words):
    with pytest.raises(ValueError) as error:
        parse_options(line)
    for word in words:
        assert word in str(error.value)


def test_lines_are_numbered_as_in_the_text_and_plain_lines_are_prompts():
    lines = read_lines("a cat\n\n  --prompt dog --steps 3  \nbird -- with dashes\n")
    assert [(l.number, l.options) for l in lines] == [
        (1, {"prompt": "a cat"}), (3, {"prompt": "dog", "steps": 3}), (4, {"prompt": "bird -- with dashes"})]
    with pytest.raises(ValueError, match="line 3: --steps needs a whole number"):
        read_lines("a\nb\n--steps x")


def test_prompts_go_before_or_after_the_requests():
    assert joined("base", "line", "start") == "line base"
    assert joined("base", "line", "end") == "base line"
    assert joined("", "line", "end") == "line"
    assert joined("base", None, "end") == "base"
    assert joined("base", "", "end") == ""  # A1111 sets an empty --prompt as it is


def _find_checkpoint(name):
    if name != "tiny":
        raise ValueError(f"Checkpoint '{name}' not found")
    return "tiny.safetensors [abc]"


def _plan(text, iterate=False, same=False, position="start", **params):
    request = ScriptRequest("txt2img", GenerationParams(prompt="base", negative_prompt="neg", **params))
    return plan(request, read_lines(text), ScriptEnv(find_checkpoint=_find_checkpoint), iterate, same, position)


def test_each_line_overrides_the_request_for_its_job():
    first, second = _plan("--prompt cat --steps 3 --seed 7 --sampler_name \"Euler a\" --width 64 --height 96\n"
                          "--negative_prompt ugly --sd_model tiny --do_not_save_samples true --sampler_index 7 --styles \"s1, s2\"",
                          position="end", steps=20)
    p = first.params
    assert (p.prompt, p.negative_prompt, p.steps, p.seed, p.sampler_name, p.width, p.height) == ("base cat", "neg", 3, 7, "Euler a", 64, 96)
    assert first.keywords == {}
    q = second.params
    assert (q.prompt, q.negative_prompt, q.steps, q.sampler_name, q.styles) == ("base", "neg ugly", 20, "Euler", ("s1", "s2"))
    assert second.keywords == {"checkpoint": "tiny.safetensors [abc]", "save": False}


@pytest.mark.parametrize("text, words", [
    ("a\n--sd_model nonesuch", ["line 2", "--sd_model", "nonesuch"]),
    ("--width 65", ["line 1", "Width", "multiple of 8"]),
    ("--steps 0", ["line 1", "Sampling steps"]),
    ("--sampler_index 99", ["line 1", "--sampler_index 99"]),
])
def test_values_the_job_would_refuse_are_refused_naming_the_line(text, words):
    with pytest.raises(ValueError) as error:
        _plan(text)
    for word in words:
        assert word in str(error.value)


def test_seeds_as_a1111_iterate_or_share_or_stay_random():
    assert [c.params.seed for c in _plan("a\nb\nc", seed=10)] == [10, 10, 10]
    assert [c.params.seed for c in _plan("a\nb\nc", iterate=True, seed=10, batch_size=2, n_iter=3)] == [10, 16, 22]
    assert [c.params.seed for c in _plan("a\n--seed 5\nc", iterate=True, seed=10)] == [10, 5, 12]
    assert [c.params.seed for c in _plan("a\nb")] == [-1, -1]  # each job draws its own
    shared = [c.params.seed for c in _plan("a\nb", same=True)]
    assert shared[0] == shared[1] >= 0
    counted = [c.params.seed for c in _plan("a\nb", iterate=True)]
    assert counted[1] == counted[0] + 1 and counted[0] >= 0


def test_iterated_seeds_stay_valid_seeds():
    assert [c.params.seed for c in _plan("a\nb", iterate=True, seed=LARGEST_SEED - 2, n_iter=2)] == [LARGEST_SEED - 2, LARGEST_SEED]
    with pytest.raises(ValueError, match=f"seed {LARGEST_SEED - 2} goes up by 4 .Iterate seed every line., past the largest seed"):
        _plan("a\nb\nc", iterate=True, seed=LARGEST_SEED - 2, n_iter=2)


def test_the_yes_no_words_of_the_shared_reader_are_read():
    assert parse_options("--tiling yes --restore_faces 0") == {"tiling": True, "restore_faces": False}


def _same(a, b) -> bool:
    return ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


def test_each_line_is_a_job_with_its_options_in_the_infotext(script_app):
    params = GenerationParams.create(prompt="base", width=64, height=64, steps=2, seed=11)
    text = ('--prompt "a cat" --steps 3 --seed 7 --sampler_name "Euler a" --cfg_scale 5\n\n   a dog  \n--negative_prompt ugly --height 72\n'
            '--subseed 3 --subseed_strength 0.5 --seed_resize_from_w 128 --seed_resize_from_h 96 --tiling true')
    result = script_app.run("Prompts from file or textbox", "txt2img", params, [False, False, "end", text])
    assert result.grids == 0 and len(result.images) == 4
    first, second, third, fourth = (parse_infotext(t) for t in result.infotexts)
    assert (fourth["Variation seed"], fourth["Variation seed strength"], fourth["Seed resize from"], fourth["Tiling"]) == (
        "3", "0.5", "128x96", "True")
    assert (first["Prompt"], first["Steps"], first["Seed"], first["Sampler"], first["CFG scale"]) == ("base a cat", "3", "7", "Euler a", "5")
    assert (second["Prompt"], second["Steps"], second["Seed"]) == ("base a dog", "2", "11")
    assert (third["Prompt"], third["Negative prompt"], third["Size"]) == ("base", "ugly", "64x72")
    assert result.images[2].size == (64, 72)
    single = script_app.single(params.model_copy(update={"prompt": "base a cat", "steps": 3, "seed": 7, "sampler_name": "Euler a",
                                                         "cfg_scale": 5.0}))
    assert _same(single.images[0], result.images[0])


def test_iterated_seeds_and_a_lines_batch_from_an_uploaded_file(script_app):
    params = GenerationParams.create(prompt="p", width=64, height=64, steps=2, seed=20)
    uploaded = "a\n--prompt b --batch_size 2\nc"  # the upload's lines replace the textbox's
    result = script_app.run("Prompts from file or textbox", "txt2img", params, [True, False, "start", "ignored", uploaded])
    assert result.seeds == [20, 21, 22, 22]  # the line's batch counts up from its seed; lines step by the request's batch
    assert result.prompts == ["a p", "b p", "b p", "c p"]


def test_a_bad_line_is_refused_before_any_job(script_app):
    before = len(script_app.queue.list())
    params = GenerationParams.create(width=64, height=64, steps=2)
    for text, message in [("a cat\n--steps 3 --colour red", "line 2: unknown option --colour"),
                          ("--outpath_samples /tmp/x", "line 1: --outpath_samples is not accepted"),
                          ("", "empty")]:
        with pytest.raises(ValueError, match=message):
            script_app.start("Prompts from file or textbox", "txt2img", params, [False, False, "start", text])
    script_app.settings.values["script_max_jobs"] = 2
    try:
        with pytest.raises(ValueError, match=r"would queue 3 jobs \(one per line\); the most one run may queue is 2"):
            script_app.start("Prompts from file or textbox", "txt2img", params, [False, False, "start", "a\nb\nc"])
        # the lines are counted before any is parsed: a long list is refused without reading its options
        with pytest.raises(ValueError, match="would queue 3 jobs"):
            script_app.start("Prompts from file or textbox", "txt2img", params, [False, False, "start", "a\n\nb\n--colour red"])
    finally:
        script_app.settings.values["script_max_jobs"] = 200
    assert len(script_app.queue.list()) == before


@pytest.mark.parametrize("line, words", [
    ("--width 2048 --height 2048 --steps 150 --batch_size 8 --n_iter 100", ["line 2", "megapixel-steps", "limit_megapixel_steps"]),
    ("--prompt " + "x" * 40_000, ["line 2", "Prompt length: 40,00", "limit_prompt_characters"]),
])
def test_a_line_over_the_servers_limits_is_refused_before_any_job(script_app, line, words):
    before = len(script_app.queue.list())
    params = GenerationParams.create(prompt="base", width=64, height=64, steps=2)
    with pytest.raises(ValueError) as error:
        script_app.start("Prompts from file or textbox", "txt2img", params, [False, False, "end", "a cat\n" + line])
    for word in words:
        assert word in str(error.value)
    assert len(script_app.queue.list()) == before


def test_a_tighter_limit_set_on_the_server_applies_to_each_line(script_app, monkeypatch):
    monkeypatch.setattr(script_app.service, "limits", dataclasses.replace(script_app.service.limits, megapixel_steps=1))
    params = GenerationParams.create(prompt="base", width=64, height=64, steps=2)
    with pytest.raises(ValueError, match="line 3: This job asks for 2 megapixel-steps"):
        script_app.start("Prompts from file or textbox", "txt2img", params, [False, False, "end", "a\n\n--width 512 --height 512 --steps 4"])
