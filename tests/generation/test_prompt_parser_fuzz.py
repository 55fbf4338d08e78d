"""Property-based fuzzing of the prompt parser (hypothesis): no text makes it raise, what it
returns always has its documented shape, weights stay finite for finite input, schedules end
at the step count, plain text comes back unchanged, and the linear-time rewrites of A1111's
regular expressions give exactly what those expressions give. Bounded (a few hundred examples
per property, no deadline) so it runs in seconds; adversarial prompts of the largest size the
server accepts are timed as well."""

from __future__ import annotations

import math
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modules.generation.prompt_parser import (
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    parse_prompt_attention,
    schedule_index,
    split_and,
    strip_comments,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)  # no .hypothesis folder in the checkout

# Any text at all, lone surrogates and control characters included.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=200)
# Text made of the grammar's own pieces, so brackets, weights and schedules actually occur.
PIECES = ["(", ")", "[", "]", ":", "|", "\\", " ", "  ", "\n", "\t", "\u3000", "AND", " AND ", "BREAK", " BREAK ", "#", "a", "cat",
          "1.5", "0.5", ".", "-", "e", "9", ":1.2", ": 0.7 ", "[a:b:3]", "[a:b:0.5]", "[a|b]", "[x:.3]", "(x:1.3)", "((y))", "[[z]]",
          "<lora:x:1>", "\\(", "\\]", "1e5", "[a:b:1e999]"]
GRAMMAR_TEXT = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)), max_size=40).map("".join)
PROMPT_TEXT = st.one_of(GRAMMAR_TEXT, ANY_TEXT)
STEPS = st.integers(min_value=1, max_value=150)
SPECIAL = set("()[]\\:|")


# --------------------------------------------------------------------------- references
# A1111's algorithm as written before the linear-time rewrite (quadratic on long runs of
# spaces, fine for fuzz-sized input): the rewrite must agree with it on every input.

_REF_ATTENTION = re.compile(
    r"""
    (?P<escaped>\\[()\[\]\\])
    | (?P<backslash>\\)
    | (?P<open_round>\()
    | (?P<open_square>\[)
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)
    | (?P<close_round>\))
    | (?P<close_square>\])
    | (?P<text>[^\\()\[\]:]+ | :)
    """,
    re.X,
)
_REF_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_REF_WEIGHT = re.compile(r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", re.S)


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def reference_attention(text: str) -> list[list]:
    res: list[list] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for item in res[start:]:
            item[1] *= factor

    def add_text(chunk: str) -> None:
        for i, part in enumerate(_REF_BREAK.split(chunk)):
            if i:
                res.append(["BREAK", -1])
            res.append([part, 1.0])

    pos = 0
    while pos < len(text):
        m = _REF_ATTENTION.match(text, pos)
        pos, kind = m.end(), m.lastgroup
        if kind == "weight" and not _is_float(m.group("weight")):
            add_text(":")
            pos = m.start() + 1
        elif kind == "escaped":
            res.append([m.group(0)[1:], 1.0])
        elif kind == "backslash":
            res.append(["", 1.0])
        elif kind == "open_round":
            open_round.append(len(res))
        elif kind == "open_square":
            open_square.append(len(res))
        elif kind == "weight" and open_round:
            scale_from(open_round.pop(), float(m.group("weight")))
        elif kind == "close_round" and open_round:
            scale_from(open_round.pop(), 1.1)
        elif kind == "close_square" and open_square:
            scale_from(open_square.pop(), 1 / 1.1)
        else:
            add_text(m.group(0))
    for start in open_round:
        scale_from(start, 1.1)
    for start in open_square:
        scale_from(start, 1 / 1.1)
    if not res:
        return [["", 1.0]]
    merged = [res[0]]
    for item in res[1:]:
        if item[1] == merged[-1][1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return merged


def reference_split_and(prompt: str) -> list[tuple[str, float]]:
    out = []
    for part in re.split(r"\bAND\b", prompt):
        text, weight = _REF_WEIGHT.match(part).groups()
        out.append((text, float(weight) if weight is not None else 1.0))
    return out


def same(a, b) -> bool:
    """Equal and of the same type (A1111's unscaled BREAK weight is the int -1), NaN weights included."""
    if isinstance(a, (int, float)) or isinstance(b, (int, float)):
        return type(a) is type(b) and (a == b or (math.isnan(a) and math.isnan(b)))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


# --------------------------------------------------------------------------- emphasis


@FUZZ
@given(PROMPT_TEXT)
def test_attention_never_raises_and_returns_text_weight_pairs(text):
    result = parse_prompt_attention(text)
    assert result and all(isinstance(chunk, str) and (type(weight) is float or weight == -1) for chunk, weight in result)
    assert all(a[1] != b[1] for a, b in zip(result, result[1:]))  # equal neighbours are merged


@FUZZ
@given(PROMPT_TEXT)
def test_attention_is_exactly_a1111s_algorithm(text):
    assert same(parse_prompt_attention(text), reference_attention(text))


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(["(", ")", "[", "]", " ", "a", "BREAK", "\\("]),
                          st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda w: f"(w:{w:.4f})")), max_size=60).map("".join))
def test_attention_weights_are_finite_for_finite_input(text):
    for chunk, weight in parse_prompt_attention(text):
        assert math.isfinite(weight), (chunk, weight)


@FUZZ
@given(st.text(st.characters(exclude_characters="()[]\\:", exclude_categories=()), max_size=200).filter(lambda t: not re.search(r"\bBREAK\b", t)))
def test_plain_text_comes_back_unchanged(text):
    assert parse_prompt_attention(text) == [[text, 1.0]]


@FUZZ
@given(st.lists(st.sampled_from(["a", "cat", " ", "  ", "\n", "BREAK", " BREAK ", "x BREAK", "BREAKx", ",", "\u3000"]), max_size=30).map("".join))
def test_break_splits_and_drops_only_the_spaces_around_it(text):
    result = parse_prompt_attention(text)
    assert "".join(chunk for chunk, weight in result if weight != -1) == re.sub(r"\s*\bBREAK\b\s*", "", text)
    assert [chunk for chunk, weight in result if weight == -1] == ["BREAK"] * len(re.findall(r"\bBREAK\b", text))


# --------------------------------------------------------------------------- schedules


def check_schedule(schedule: list, steps: int, prompt: str) -> None:
    ends = [end for end, _ in schedule]
    assert ends and all(isinstance(end, int) for end in ends)
    assert ends == sorted(set(ends)), f"end steps not increasing: {ends}"
    assert ends[0] >= 1 and ends[-1] == steps
    chars = set(prompt)
    for _, text in schedule:
        assert isinstance(text, str) and set(text) <= chars, "a schedule entry holds text the prompt does not"


@FUZZ
@given(st.lists(PROMPT_TEXT, min_size=1, max_size=4), STEPS)
def test_schedules_never_raise_and_end_at_the_step_count(prompts, steps):
    result = get_learned_conditioning_prompt_schedules(prompts, steps)
    assert len(result) == len(prompts)
    for prompt, schedule in zip(prompts, result):
        check_schedule(schedule, steps, prompt)
        for step in range(steps):
            i = schedule_index(schedule, step)
            assert 0 <= i < len(schedule) and schedule[i][0] >= step and (i == 0 or schedule[i - 1][0] < step)


@FUZZ
@given(PROMPT_TEXT, STEPS, STEPS)
def test_hires_and_old_schedules_end_at_their_step_count(prompt, steps, hires_steps):
    [hires] = get_learned_conditioning_prompt_schedules([prompt], steps, hires_steps)
    check_schedule(hires, hires_steps, prompt)
    [old] = get_learned_conditioning_prompt_schedules([prompt], steps, hires_steps, use_old_scheduling=True)
    check_schedule(old, steps, prompt)


@FUZZ
@given(st.text(st.characters(exclude_characters="[", exclude_categories=()), max_size=200), STEPS)
def test_text_without_brackets_is_one_entry(prompt, steps):
    assert get_learned_conditioning_prompt_schedules([prompt], steps) == [[[steps, prompt]]]


@FUZZ
@given(st.lists(st.text(st.characters(exclude_characters="[]():|\\", exclude_categories=()), max_size=8), min_size=2, max_size=4),
       st.integers(min_value=1, max_value=9), STEPS)
def test_edits_switch_at_their_step(words, when, steps):
    before, after = words[0], words[1]
    [schedule] = get_learned_conditioning_prompt_schedules([f"[{before}:{after}:{when}]"], steps)
    if when < steps:
        assert schedule == [[when, before], [steps, after]]
    else:
        assert schedule == [[steps, before]]


# --------------------------------------------------------------------------- AND


@FUZZ
@given(PROMPT_TEXT)
def test_split_and_is_exactly_a1111s_expression(prompt):
    assert same(split_and(prompt), reference_split_and(prompt))


@FUZZ
@given(st.lists(st.text(st.characters(exclude_characters=":", exclude_categories=()), min_size=1, max_size=12)
                .map(str.strip).filter(lambda t: t and not re.search(r"\bAND\b", t) and not t.endswith("AND") and not t.startswith("AND")),
                min_size=1, max_size=6),
       st.lists(st.floats(min_value=-100, max_value=100, allow_nan=False).map(lambda w: float(f"{w:.3f}")), min_size=6, max_size=6))
def test_and_parts_and_weights_round_trip(parts, weights):
    plain = split_and(" AND ".join(parts))
    assert [text.strip() for text, _ in plain] == parts and all(w == 1.0 for _, w in plain)
    weighted = split_and(" AND ".join(f"{p} :{w}" for p, w in zip(parts, weights)))
    assert [text.strip() for text, _ in weighted] == parts
    assert [w for _, w in weighted] == weights[:len(parts)]


@FUZZ
@given(st.lists(PROMPT_TEXT, max_size=5))
def test_multicond_list_is_consistent(prompts):
    res_indexes, flat, indexes = get_multicond_prompt_list(prompts)
    assert len(res_indexes) == len(prompts)
    assert len(flat) == len(set(flat)) and indexes == {text: i for i, text in enumerate(flat)}
    for prompt, row in zip(prompts, res_indexes):
        assert len(row) == len(re.split(r"\bAND\b", prompt))
        for index, weight in row:
            assert 0 <= index < len(flat) and type(weight) is float
            if not re.search(r"\d{300}", prompt):
                assert math.isfinite(weight)


# --------------------------------------------------------------------------- comments


@FUZZ
@given(st.one_of(ANY_TEXT, st.lists(st.sampled_from(["#", "a", " ", "\n", "# c\n", "x # y", "\r\n"]), max_size=30).map("".join)))
def test_strip_comments(text):
    out = strip_comments(text)
    assert "#" not in out and strip_comments(out) == out
    if "#" not in text:
        assert out == text
    lines = text.split("\n")
    assert all(any(line.startswith(kept) for line in lines) for kept in out.split("\n"))


# --------------------------------------------------------------------------- time


ADVERSARIAL = {
    "spaces": "x" + " " * 32_000 + "x",
    "spaces-then-break": " " * 32_000 + "BREAK" + " " * 100,
    "nested-emphasis": "(a" * 16_000,
    "escapes": "\\(" * 16_000,
    "alternations": "[a|b]" * 6_000,
    "edits": "[a:b:1]" * 4_000,
    "open-brackets": "[" * 32_000,
    "open-edits": "[a:" * 10_000,
    "colons": ":" * 32_000,
    "long-weight": "(x:" + "1" * 32_000 + ")",
    "and-parts": "a AND " * 5_000,
    "and-spaces": "a :" + " " * 32_000 + "AND b",
    "comments": "#" * 32_000 + "\n" + "x # y\n" * 3_000,
}


@pytest.mark.parametrize("prompt", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_the_largest_prompts_the_server_accepts_parse_in_well_under_a_second(prompt):
    """32,768 characters is the server's default prompt limit: every function must handle that
    much of the worst text in linear time (A1111's expressions took seconds to minutes). The best of
    three runs is timed, so a pause of the machine (a garbage collection, a busy CI neighbour) is not
    taken for a slow parser: a quadratic one is slow every time."""
    for run in (lambda: parse_prompt_attention(prompt), lambda: split_and(prompt), lambda: strip_comments(prompt),
                lambda: get_learned_conditioning_prompt_schedules([prompt], 150), lambda: get_multicond_prompt_list([prompt])):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
            if best < 1.0:
                break
        assert best < 1.0
