"""A1111's value syntax for X/Y/Z plot axes.

The values are a comma-separated list read as CSV (so `"a, b", c` is two values), where a
number axis also takes ranges:
- whole numbers: `1-5` (1,2,3,4,5), `1-5 (+2)` (1,3,5), `10-5 (-3)` (10,7): the end is
  included when the steps land on it; `1-10 [5]`: 5 evenly spaced values, cut to whole
  numbers as A1111 does (1,3,5,7,10);
- decimals: `1.0-2.0 (+0.5)` (1.0,1.5,2.0), `0.0-1.0 [6]` (0.0,0.2,...,1.0).
A step needs its sign, as in A1111. Decimal values are rounded to 8 places (A1111 rounds its
labels so; rounding the values too makes each cell the job its label names).
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Sequence

import numpy as np

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*\d+(?:\.\d*)?"
INT_STEP = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(\s*([+-]\d+)\s*\))?\s*")
INT_COUNT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*\[\s*(\d+)\s*\]\s*")
FLOAT_STEP = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(\s*([+-]\d+(?:\.\d*)?)\s*\))?\s*")
FLOAT_COUNT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[\s*(\d+)\s*\]\s*")
DECIMALS = 8
KINDS = ("int", "float", "str", "permutations")


def split_csv(text: str) -> list[str]:
    """A1111's reading of a values box: CSV (quotes keep commas), every line, each value stripped."""
    rows = csv.reader(io.StringIO(text or ""), skipinitialspace=True)
    return [value.strip() for value in itertools.chain.from_iterable(rows)]


def join_csv(values: Sequence[str]) -> str:
    """The values box text for a list of picked values (quoted where a value holds a comma)."""
    out = io.StringIO()
    csv.writer(out).writerow(list(values))
    return out.getvalue().strip()


def _number(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _ints(value: str, where: str) -> list[int]:
    if m := INT_STEP.fullmatch(value):
        start, end = int(_number(m[1])), int(_number(m[2]))
        step = int(m[3]) if m[3] else 1
        if step == 0:
            raise ValueError(f"{where}: the step of '{value}' is 0; use a step such as (+1) or (-1)")
        # A1111 adds 1 to the end whichever way it counts: 10-5 (-3) is 10, 7.
        return list(range(start, end + 1, step))
    if m := INT_COUNT.fullmatch(value):
        start, end, count = int(_number(m[1])), int(_number(m[2])), int(m[3])
        return [int(x) for x in np.linspace(start, end, count).tolist()]
    try:
        return [int(value)]
    except ValueError:
        raise ValueError(f"{where}: '{value}' is not a whole number or a range such as 1-5, 1-5 (+2), 10-5 (-3), 1-10 [5]") from None


def _floats(value: str, where: str) -> list[float]:
    if m := FLOAT_STEP.fullmatch(value):
        start, end = float(_number(m[1])), float(_number(m[2]))
        step = float(m[3]) if m[3] else 1.0
        if step == 0:
            raise ValueError(f"{where}: the step of '{value}' is 0; use a step such as (+0.5) or (-0.5)")
        values = np.arange(start, end + step, step).tolist()
    elif m := FLOAT_COUNT.fullmatch(value):
        values = np.linspace(float(_number(m[1])), float(_number(m[2])), int(m[3])).tolist()
    else:
        try:
            values = [float(value)]
        except ValueError:
            raise ValueError(f"{where}: '{value}' is not a number or a range such as 1.0-2.0 (+0.5), 0.0-1.0 [6]") from None
        if not np.isfinite(values[0]):
            raise ValueError(f"{where}: '{value}' is not a finite number")
    return [round(x, DECIMALS) for x in values]


def parse_values(values: str | Sequence[str], kind: str, where: str) -> list:
    """An axis's values: `values` is the text box (CSV) or the dropdown's list; `kind` one of
    KINDS; `where` names the axis for errors ("X values (Steps)"). Every value is checked
    here, before any job runs; an axis that ends up with no value is refused."""
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown value kind {kind!r}")
    items = split_csv(values) if isinstance(values, str) else [str(v).strip() for v in values]
    if kind in ("int", "float"):
        read = _ints if kind == "int" else _floats
        out: list = []
        for item in (item for item in items if item):
            numbers = read(item, where)
            if not numbers:  # A1111 drops such a range silently; a missing row or column is a surprise
                raise ValueError(f"{where}: '{item}' gives no values (to count down, give a negative step: 5-1 (-1))")
            out.extend(numbers)
    elif kind == "permutations":
        out = list(itertools.permutations(items)) if items else []
    else:
        out = items
    if not out:
        shown = values if isinstance(values, str) else join_csv(list(values))
        raise ValueError(f"{where}: '{shown}' gives no values")
    return out


def format_number(value: float | int) -> str:
    """A value as A1111's legends print it: floats rounded to 8 places, whole floats keep '.0'."""
    return str(round(value, DECIMALS)) if isinstance(value, float) else str(value)
