"""A1111 prompt syntax as pure functions: emphasis, prompt editing, alternation, AND, BREAK and comments.

Names and return shapes follow A1111's ``modules/prompt_parser.py`` so extension authors can rely on them; the code is
our own (a hand-written recursive-descent parser, no lark). Nothing here imports torch: the encoder turns these plain
lists into conditioning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "get_learned_conditioning_prompt_schedules",
    "get_multicond_prompt_list",
    "parse_prompt_attention",
    "schedule_index",
    "split_and",
    "strip_comments",
]

# ---------------------------------------------------------------------------------------------------------------------
# Emphasis: (a) (a:1.5) [a], escapes and BREAK
# ---------------------------------------------------------------------------------------------------------------------

# One token per match, tried in this order. A lone backslash (not before ( ) [ ] \) is dropped, as in A1111.
_ATTENTION_TOKEN = re.compile(
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
_BREAK = re.compile(r"\bBREAK\b")
_ROUND, _SQUARE = 1.1, 1 / 1.1


def _split_break(chunk: str) -> list[str]:
    """A1111's ``re.split(r"\\s*\\bBREAK\\b\\s*", chunk)``, in linear time: that pattern retries its leading
    ``\\s*`` from every position of a long run of spaces, which made a prompt of spaces take minutes."""
    parts = _BREAK.split(chunk)
    if len(parts) > 1:
        parts = [part.lstrip() if i else part for i, part in enumerate(parts)]
        parts = [part.rstrip() if i < len(parts) - 1 else part for i, part in enumerate(parts)]
    return parts


def parse_prompt_attention(text: str) -> list[list]:
    """Split ``text`` into ``[chunk, weight]`` pairs the way A1111 does; ``['BREAK', -1]`` marks a chunk break.

    Weights multiply in the same order as A1111 (innermost bracket first), so even float round-off matches. The
    weights live in a float64 array: a closing bracket scales every chunk since its opening in one vectorised step
    (IEEE multiplication either way, so the same bits), which keeps deeply nested prompts from taking seconds.
    """
    texts: list[str] = []
    weights = np.empty(64)
    open_round: list[int] = []
    open_square: list[int] = []
    starts: list[int] = []  # where each scaling began, in order
    breaks: list[tuple[int, int]] = []  # (index, scalings before it): a BREAK no bracket scales stays the int -1, as in A1111

    def scale_from(start: int, factor: float) -> None:
        starts.append(start)
        with np.errstate(all="ignore"):  # overflow to inf, as Python floats do without a word
            weights[start:len(texts)] *= factor

    def append(chunk: str, weight: float) -> None:
        nonlocal weights
        if len(texts) == len(weights):
            weights = np.concatenate([weights, np.empty(len(weights))])
        weights[len(texts)] = weight
        texts.append(chunk)

    def add_text(chunk: str) -> None:
        for i, part in enumerate(_split_break(chunk)):
            if i:
                breaks.append((len(texts), len(starts)))
                append("BREAK", -1)
            append(part, 1.0)

    pos = 0
    while pos < len(text):
        m = _ATTENTION_TOKEN.match(text, pos)
        pos, kind = m.end(), m.lastgroup
        if kind == "weight" and not _is_float(m.group("weight")):
            add_text(":")  # '[.\d]+' also admits '.' or '1.2.3', on which A1111 crashes: read on after the ':'
            pos = m.start() + 1
        elif kind == "escaped":
            append(m.group(0)[1:], 1.0)
        elif kind == "backslash":
            append("", 1.0)
        elif kind == "open_round":
            open_round.append(len(texts))
        elif kind == "open_square":
            open_square.append(len(texts))
        elif kind == "weight" and open_round:
            scale_from(open_round.pop(), float(m.group("weight")))
        elif kind == "close_round" and open_round:
            scale_from(open_round.pop(), _ROUND)
        elif kind == "close_square" and open_square:
            scale_from(open_square.pop(), _SQUARE)
        else:  # plain text, or a bracket/weight with nothing to close: literal
            add_text(m.group(0))
    for start in open_round:  # unbalanced brackets are closed at the end, round first
        scale_from(start, _ROUND)
    for start in open_square:
        scale_from(start, _SQUARE)

    if not texts:
        return [["", 1.0]]
    values: list = weights[:len(texts)].tolist()
    if breaks:
        later = [len(texts)] * (len(starts) + 1)  # later[k]: the lowest start of the scalings from the k-th on
        for k in range(len(starts) - 1, -1, -1):
            later[k] = min(starts[k], later[k + 1])
        for index, before in breaks:
            if later[before] > index:
                values[index] = -1
    merged: list[list] = []
    run: list[str] = []
    for chunk, weight in zip(texts, values):
        if merged and weight == merged[-1][1]:
            run.append(chunk)
            continue
        if merged:
            merged[-1][0] = "".join(run)
        merged.append([chunk, weight])
        run = [chunk]
    merged[-1][0] = "".join(run)
    return merged


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------------
# Prompt editing [from:to:when] and alternation [a|b]
# ---------------------------------------------------------------------------------------------------------------------
#
# The grammar A1111 accepts (reconstructed from its behaviour):
#   top level : anything; '[' starts a construct when one parses there, else it (and ']' '(' ')' ':') is literal text
#   construct : '[' prompt ']'  |  '[' [prompt ':'] prompt ':' \s* NUMBER \s* ']'  |  '[' prompt ('|' prompt?)+ ']'
#   prompt    : (plain | '\' any-but-newline | construct | '(' prompt [':' prompt] ')')*   -- no literal brackets, ':' or '|'
# A '|' outside an alternation or a backslash with nothing to escape makes the whole prompt unparseable; A1111 then
# uses it verbatim with no schedule. Brackets in a construct always nest, so where one can start and end is decided by
# bracket matching alone, and we always take the construct over literal text. A1111's Earley parser resolves that
# ambiguity the same way except in unbalanced input where a construct is directly followed by two or more of
# "[]():" (e.g. "[a:b:3]::" or "x ([a:b:3]))"): there it sometimes keeps the construct as literal text.

_WHEN = re.compile(r"\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?))\s*")

Nodes = tuple  # tuple[str | _Scheduled | _Alternate, ...]


@dataclass(frozen=True)
class _Scheduled:
    before: Nodes | None  # None for [to:when]
    after: Nodes
    when: str  # the number as written: a '.' decides fraction versus step


@dataclass(frozen=True)
class _Alternate:
    options: tuple[Nodes, ...]


class _Unparseable(Exception):
    """The text has no derivation in the grammar (raised inside constructs, caught at the top)."""


class _ScheduleParser:
    def __init__(self, text: str):
        self.text = text
        self.constructs: dict[int, tuple[Nodes, int] | None] = {}  # '[' position -> (nodes, end) or None

    def parse(self) -> Nodes:
        text, out, i = self.text, [], 0
        while i < len(text):
            ch = text[i]
            if ch == "[":
                found = self.construct(i)
                if found is not None:
                    out.extend(found[0])
                    i = found[1]
                    continue
                out.append(ch)
                i += 1
            elif ch in "]():":
                out.append(ch)
                i += 1
            elif ch == "|":  # only an alternation may hold '|'
                raise _Unparseable
            else:
                j = self.plain(i)
                out.append(text[i:j])
                i = j
        return _join(out)

    def plain(self, i: int) -> int:
        """End of the plain run starting at ``i``; escapes take the next character, which must not be a newline."""
        text = self.text
        while i < len(text) and text[i] not in "[]():|":
            if text[i] == "\\":
                if i + 1 >= len(text) or text[i + 1] == "\n":
                    raise _Unparseable
                i += 1
            i += 1
        return i

    def prompt(self, i: int) -> tuple[list, int]:
        """Parse a prompt from ``i`` up to the first ':' '|' ']' ')' (or the end); nested brackets must be constructs."""
        text, out = self.text, []
        while i < len(text) and text[i] not in ":|])":
            if text[i] == "[":
                found = self.construct(i)
                if found is None:
                    raise _Unparseable
                out.extend(found[0])
                i = found[1]
            elif text[i] == "(":
                i = self.emphasis(i, out)
            else:
                j = self.plain(i)
                out.append(text[i:j])
                i = j
        return out, i

    def emphasis(self, i: int, out: list) -> int:
        """'(' prompt [':' prompt] ')' kept verbatim (weights are parse_prompt_attention's business)."""
        text = self.text
        out.append("(")
        inner, i = self.prompt(i + 1)
        out.extend(inner)
        if i < len(text) and text[i] == ":":
            out.append(":")
            inner, i = self.prompt(i + 1)
            out.extend(inner)
        if i >= len(text) or text[i] != ")":
            raise _Unparseable
        out.append(")")
        return i + 1

    def construct(self, start: int) -> tuple[Nodes, int] | None:
        """The construct opening at ``start`` as (nodes, end), or None when none parses there (memoised)."""
        if start not in self.constructs:
            try:
                self.constructs[start] = self._construct(start)
            except _Unparseable:
                self.constructs[start] = None
        return self.constructs[start]

    def _construct(self, start: int) -> tuple[Nodes, int]:
        text = self.text
        parts: list[list] = []
        seps: list[str] = []
        bounds: list[tuple[int, int]] = []
        i = start + 1
        while True:
            nodes, j = self.prompt(i)
            parts.append(nodes)
            bounds.append((i, j))
            if j >= len(text) or text[j] == ")":
                raise _Unparseable
            if text[j] == "]":
                end = j + 1
                break
            seps.append(text[j])
            i = j + 1

        if not seps:  # [a]: de-emphasis, kept as text
            return _join(["[", *parts[0], "]"]), end
        if all(s == "|" for s in seps):
            return (_Alternate(tuple(_join(p) for p in parts)),), end
        if all(s == ":" for s in seps) and len(seps) <= 2:
            when = _WHEN.fullmatch(text[slice(*bounds[-1])])
            if when is None:
                raise _Unparseable
            before = _join(parts[0]) if len(seps) == 2 else None
            return (_Scheduled(before, _join(parts[-2]), when.group(1)),), end
        raise _Unparseable


def _join(items: list) -> Nodes:
    """Merge adjacent strings so rendering is cheap."""
    out: list = []
    for item in items:
        if isinstance(item, str) and out and isinstance(out[-1], str):
            out[-1] += item
        elif item != "":
            out.append(item)
    return tuple(out)


def _parse_schedule(prompt: str) -> Nodes | None:
    try:
        return _ScheduleParser(prompt).parse()
    except (_Unparseable, RecursionError):
        return None


def _walk(nodes: Nodes):
    for node in nodes:
        if isinstance(node, _Scheduled):
            yield node
            yield from _walk(node.before or ())
            yield from _walk(node.after)
        elif isinstance(node, _Alternate):
            yield node
            for option in node.options:
                yield from _walk(option)


def _render(nodes: Nodes, step: int, whens: dict[int, int]) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Scheduled):
            branch = (node.before or ()) if step <= whens[id(node)] else node.after
            out.append(_render(branch, step, whens))
        else:
            out.append(_render(node.options[(step - 1) % len(node.options)], step, whens))
    return "".join(out)


def get_learned_conditioning_prompt_schedules(
    prompts: list[str], base_steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[list[list]]:
    """For each prompt, ``[[end_at_step, text], ...]``: ``text`` applies up to and including step ``end_at_step``.

    ``when`` with a '.' is a fraction of the steps, without one an absolute step. With ``hires_steps`` (A1111 1.6+
    timeline) the schedule is for the hires pass: fractions are offset by 1.0 and steps by ``base_steps``.
    ``use_old_scheduling`` restores the pre-1.6 rule (a value below 1 is a fraction) and ignores the hires pass.
    """
    if hires_steps is None or use_old_scheduling:
        steps, step_offset, fraction_offset = base_steps, 0, 0.0
    else:
        steps, step_offset, fraction_offset = hires_steps, base_steps, 1.0

    def to_step(when: str) -> int:
        value = float(when)
        if use_old_scheduling:
            value = value * steps if value < 1 else value
        elif "." in when:
            value = (value - fraction_offset) * steps
        else:
            value = value - step_offset
        return int(min(max(value, -steps - 1.0), steps))  # clamp first: '1e999' must not overflow int()

    def schedule(prompt: str) -> list[list]:
        tree = _parse_schedule(prompt)
        if tree is None:
            return [[steps, prompt]]
        whens: dict[int, int] = {}
        ends = {steps}
        for node in _walk(tree):
            if isinstance(node, _Scheduled):
                whens[id(node)] = to_step(node.when)
                if whens[id(node)] >= 1:
                    ends.add(whens[id(node)])
            else:
                ends.update(range(1, steps + 1))
        return [[end, _render(tree, end, whens)] for end in sorted(ends)]

    cache = {prompt: schedule(prompt) for prompt in dict.fromkeys(prompts)}
    return [[list(entry) for entry in cache[prompt]] for prompt in prompts]


def schedule_index(schedule: list[list], step: int) -> int:
    """Index of the entry of one prompt's schedule in force at 0-based sampling step ``step``.

    The first entry with ``step <= end_at_step``; past the end, the last entry (A1111 falls back to the first there,
    which its own callers never reach because the last end is always the step count).
    """
    for i, (end_at_step, _text) in enumerate(schedule):
        if step <= end_at_step:
            return i
    return len(schedule) - 1


# ---------------------------------------------------------------------------------------------------------------------
# Composable diffusion: AND with :weight
# ---------------------------------------------------------------------------------------------------------------------

_AND = re.compile(r"\bAND\b")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?|\d*\.\d+)")


def split_and(prompt: str) -> list[tuple[str, float]]:
    """``'a cat :1.2 AND a dog'`` -> ``[('a cat', 1.2), (' a dog', 1.0)]``; texts are exactly what gets encoded."""
    return [_split_weight(part) for part in _AND.split(prompt)]


def _split_weight(part: str) -> tuple[str, float]:
    """A1111's ``re.match(r"^(.*?)(?:\\s*:\\s*([-+]?(?:\\d+\\.?|\\d*\\.\\d+)))?\\s*$", part, re.S)``, in linear
    time (that pattern is quadratic in a long run of spaces): a trailing ``:number`` after the last ':' is the
    weight, and the whitespace around it and at the end is not part of the text."""
    colon = part.rfind(":")
    if colon >= 0 and _NUMBER.fullmatch(part[colon + 1:].strip()):
        return part[:colon].rstrip(), float(part[colon + 1:].strip())
    return part.rstrip(), 1.0


def get_multicond_prompt_list(prompts: list[str]) -> tuple[list[list[tuple[int, float]]], list[str], dict[str, int]]:
    """A1111's ``(res_indexes, prompt_flat_list, prompt_indexes)``: identical sub-prompts are encoded once."""
    res_indexes: list[list[tuple[int, float]]] = []
    flat: list[str] = []
    indexes: dict[str, int] = {}
    for prompt in prompts:
        row = []
        for text, weight in split_and(prompt):
            if text not in indexes:
                indexes[text] = len(flat)
                flat.append(text)
            row.append((indexes[text], weight))
        res_indexes.append(row)
    return res_indexes, flat, indexes


# ---------------------------------------------------------------------------------------------------------------------
# Comments
# ---------------------------------------------------------------------------------------------------------------------


def strip_comments(text: str) -> str:
    """Remove ``#`` to the end of each line; a line holding only a comment goes away with its newline.

    Mirrors A1111 1.8+'s ``enable_prompt_comments``: there is no escape for a literal '#'.
    """
    if "#" not in text:
        return text
    kept = []
    for line in text.split("\n"):
        code, hash_, _comment = line.partition("#")
        if hash_ and not code.strip():
            continue
        kept.append(code)
    return "\n".join(kept)
