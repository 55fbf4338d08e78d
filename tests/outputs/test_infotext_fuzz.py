"""Property-based fuzzing of the infotext reader (hypothesis): `parse_infotext` and the paste
layer never raise on any text and return strings, the params-line scanner gives exactly what
A1111's expression finds (in linear time), and what the writer writes comes back: the text
layer key for key, the paste layer parameter for parameter. Bounded so it runs in seconds."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from modules.generation import samplers
from modules.generation.params import EMPHASIS_MODES, HIRES_UPSCALERS, RNG_SOURCES, GenerationParams, Img2ImgParams, infotext_fields
from modules.outputs.infotext import _PARAM_RE, _find_params, format_infotext, is_params_line, parse_infotext, parse_params_line
from modules.outputs.paste import params_from_infotext

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)  # no .hypothesis folder in the checkout

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=300)
PIECES = ["Steps", "Sampler", "Seed", "Size", "CFG scale", "Negative prompt:", ": ", ":", ", ", ",", "\n", " ", '"', '\\"', "\\", "20", "7.5",
          "64x64", "0x0", "Euler a", "nan", "inf", "-inf", "1e999", "Hires upscale", "Hires resize", "Model", "Lora hashes", "-", "/", "\u00e9",
          "\x00", "Schedule max sigma", "Clip skip", "Denoising strength", "Mask blur", "True", "99999999999999999999"]
INFOTEXT = st.one_of(ANY_TEXT, st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)), max_size=60).map("".join))


# --------------------------------------------------------------------------- text layer


@FUZZ
@given(INFOTEXT)
def test_parse_never_raises_and_returns_strings(text):
    result = parse_infotext(text)
    assert result["Prompt"] is not None and "Negative prompt" in result
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.items())


@FUZZ
@given(INFOTEXT)
def test_the_params_scanner_is_exactly_a1111s_expression(line):
    assert _find_params(line) == _PARAM_RE.findall(line)
    assert is_params_line(line) == (len(_PARAM_RE.findall(line)) >= 3)


LINE_TEXT = st.text(st.characters(exclude_characters="\n", exclude_categories=("Cs",)), max_size=40).map(str.strip)
KEY = st.from_regex(r"[A-Za-z][A-Za-z0-9 \-/]{0,14}[A-Za-z0-9]", fullmatch=True).filter(lambda k: k not in ("Prompt", "Negative prompt"))
VALUE = st.one_of(
    st.integers(-10**9, 10**9).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(str),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30),
).map(str.strip).filter(lambda v: v and not v.startswith('"'))


@FUZZ
@given(st.lists(LINE_TEXT, max_size=4).map("\n".join).filter(lambda p: p == p.lstrip() and not any(
           line.startswith("Negative prompt:") for line in p.split("\n"))),
       LINE_TEXT.filter(lambda n: not n.startswith("Negative prompt:")),
       st.dictionaries(KEY, VALUE, min_size=3, max_size=8))
def test_what_is_written_reads_back_key_for_key(prompt, negative, fields):
    assume(all(value != key for key, value in fields.items()))  # A1111 writes those bare: no value to read back
    text = format_infotext(prompt, negative, list(fields.items()))
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == prompt and parsed["Negative prompt"] == negative
    for key, value in fields.items():
        assert parsed[key] == value, (key, value, text)


@FUZZ
@given(st.lists(st.tuples(KEY, VALUE), max_size=6))
def test_params_line_keys_and_values_are_strings(pairs):
    line = ", ".join(f"{k}: {v}" for k, v in pairs)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in parse_params_line(line).items())


@pytest.mark.parametrize("line", ["a " * 250_000, "a-" * 250_000 + ":", "k: \"\\\", " * 60_000, "Key: " + '"' * 200_000, ":" * 500_000,
                                  "word " * 100_000 + "Steps: 2, Seed: 1, Size: 64x64"],
                         ids=["words", "dashes", "escaped-quotes", "quotes", "colons", "long-then-params"])
def test_half_a_megabyte_line_parses_in_well_under_a_second(line):
    """A1111's expression retries every start inside a long run of key characters: 100 kB took
    seconds, 500 kB minutes. PNG Info and the API's `infotext` read whatever a client sends."""
    start = time.perf_counter()
    parse_infotext("a prompt\n" + line)
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------- paste layer


@FUZZ
@given(INFOTEXT, st.booleans())
def test_paste_never_raises_and_reports_in_strings(text, img2img):
    pasted = params_from_infotext(text, img2img=img2img)
    model = Img2ImgParams if img2img else GenerationParams
    assert set(pasted.values) <= set(model.model_fields)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in pasted.skipped.items())
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in pasted.settings.items())
    for name, value in pasted.values.items():
        model.create(**{name: value})  # each kept value is one the parameter model takes


NUMBERS = st.sampled_from(["nan", "inf", "-inf", "1e999", "-1e999", "NaN", "Infinity", "1e308", "0", "-0", "1", "0.5"])
FLOAT_KEYS = ["CFG scale", "Denoising strength", "Eta", "Eta DDIM", "Sigma churn", "Sigma tmin", "Sigma tmax", "Sigma noise",
              "Schedule min sigma", "Schedule max sigma", "Schedule rho", "Beta schedule alpha", "Beta schedule beta", "Hires upscale"]


@FUZZ
@given(st.dictionaries(st.sampled_from(FLOAT_KEYS), NUMBERS, min_size=1, max_size=6), st.booleans())
def test_pasted_numbers_are_finite(numbers, img2img):
    """Python reads 'nan', 'inf' and '1e999' as floats; no such value may reach a job (an
    infinite sigma or eta makes a NaN picture): each is skipped and named instead."""
    text = "x\nSteps: 20, Sampler: Euler, Schedule type: Karras, Seed: 1, Size: 64x64, " + ", ".join(f"{k}: {v}" for k, v in numbers.items())
    pasted = params_from_infotext(text, img2img=img2img)
    for name, value in pasted.values.items():
        if isinstance(value, float):
            assert math.isfinite(value), f"{name} = {value} was pasted from {numbers}"


SAMPLERS = [s.name for s in samplers.SAMPLERS]
SCHEDULES = ["Automatic", *(s.label for s in samplers.SCHEDULES)]
PROMPT = st.lists(LINE_TEXT.filter(lambda line: not line.startswith("Negative prompt:")), max_size=3).map("\n".join).filter(
    lambda p: p == p.lstrip())
HR_PROMPT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20).map(str.strip).filter(
    lambda p: not p.startswith('"') and p not in ("Hires prompt", "Hires negative prompt"))


@st.composite
def generation_params(draw):
    values = {
        "prompt": draw(PROMPT), "negative_prompt": draw(LINE_TEXT.filter(lambda n: not n.startswith("Negative prompt:"))),
        "steps": draw(st.integers(1, 150)), "sampler_name": draw(st.sampled_from(SAMPLERS)), "scheduler": draw(st.sampled_from(SCHEDULES)),
        "cfg_scale": draw(st.integers(2, 60)) / 2, "seed": draw(st.integers(0, 2**32 - 1)), "width": 8 * draw(st.integers(8, 256)),
        "height": 8 * draw(st.integers(8, 256)), "clip_skip": draw(st.integers(1, 12)), "emphasis": draw(st.sampled_from(EMPHASIS_MODES)),
        "randn_source": draw(st.sampled_from(RNG_SOURCES)),
    }
    if draw(st.booleans()):
        values |= {"enable_hr": True, "hr_upscaler": draw(st.sampled_from(HIRES_UPSCALERS)), "hr_second_pass_steps": draw(st.integers(0, 150)),
                   "denoising_strength": draw(st.integers(0, 100)) / 100, "hr_prompt": draw(HR_PROMPT), "hr_negative_prompt": draw(HR_PROMPT)}
        if draw(st.booleans()):
            values["hr_scale"] = draw(st.integers(20, 80)) / 20
        else:
            values |= {"hr_resize_x": 8 * draw(st.integers(0, 256)), "hr_resize_y": 8 * draw(st.integers(0, 256))}
        if draw(st.booleans()):
            values |= {"hr_sampler_name": draw(st.sampled_from(SAMPLERS)), "hr_scheduler": draw(st.sampled_from(SCHEDULES))}
    try:
        return GenerationParams.create(**values)
    except ValueError:
        assume(False)


def meaning(params: GenerationParams) -> dict:
    """What a job does with `params`: sampler and schedule as resolved (an explicit default
    schedule is Automatic), the hires prompts as used, no hires fields without hires fix."""
    values = params.model_dump()
    for name in ("sampler_name", "scheduler", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt"):
        values.pop(name)
    values["sampling"] = samplers.resolve(params.sampler_name, params.scheduler)
    if params.enable_hr:
        values["hires_sampling"] = params.hires_sampler()
        values["hires_prompts"] = (params.hr_prompt or params.prompt, params.hr_negative_prompt or params.negative_prompt)
        values["hires_size"] = params.hires_size()
        if params.hr_resize_x or params.hr_resize_y:
            values.pop("hr_scale")  # the resize is written instead
    else:
        for name in [n for n in values if n.startswith("hr_")] + ["denoising_strength"]:
            values.pop(name)
    return values


@FUZZ
@given(generation_params())
def test_what_the_core_writes_pastes_back(params):
    fields = infotext_fields(params, seed=params.seed, model_hash="abcdef0123", model_name="m", version="v1",
                             extras=[("Emphasis", params.emphasis if params.emphasis != "Original" else None)])
    text = format_infotext(params.prompt, params.negative_prompt, fields)
    pasted = params_from_infotext(text)
    assert not pasted.skipped, (pasted.report(), text)
    assert meaning(GenerationParams.create(**pasted.values)) == meaning(params), text


@FUZZ
@given(generation_params(), st.integers(0, 64), st.integers(0, 1), st.integers(0, 3), st.booleans(), st.integers(0, 256))
def test_img2img_mask_fields_paste_back(params, blur, invert, fill, full_res, padding):
    values = {k: v for k, v in params.model_dump().items() if not k.startswith("hr_") and k != "enable_hr"}
    img = Img2ImgParams.create(**values, mask_blur=blur, inpainting_mask_invert=invert, inpainting_fill=fill, inpaint_full_res=full_res,
                               inpaint_full_res_padding=padding)
    fields = infotext_fields(img, seed=img.seed, model_hash=None, model_name=None, version="v1", masked=True,
                             extras=[("Emphasis", img.emphasis if img.emphasis != "Original" else None)])
    pasted = params_from_infotext(format_infotext(img.prompt, img.negative_prompt, fields), img2img=True)
    assert not pasted.skipped, pasted.report()
    again = Img2ImgParams.create(**pasted.values)
    for name in ("mask_blur", "inpainting_mask_invert", "inpainting_fill", "inpaint_full_res", "denoising_strength", "steps", "seed", "width"):
        if name == "inpaint_full_res_padding" and not full_res:
            continue
        assert getattr(again, name) == getattr(img, name), name
    if full_res:
        assert again.inpaint_full_res_padding == padding


@FUZZ
@given(st.text(st.characters(exclude_categories=()), max_size=50))
def test_a_keyed_value_with_any_characters_never_breaks_the_line(value):
    """Whatever a value holds (quotes, commas, colons, newlines, lone surrogates), the keys
    around it still read back."""
    text = format_infotext("p", "", [("Steps", 20), ("Odd", value or "x"), ("Seed", 7), ("Size", "64x64")])
    parsed = parse_infotext(text)
    assert (parsed.get("Steps"), parsed.get("Seed"), parsed.get("Size")) == ("20", "7", "64x64"), text
