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
import math
import re
from collections.abc import Sequence

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*\d+(?:\.\d*)?"
INT_STEP = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(\s*([+-]\d+)\s*\))?\s*")
INT_COUNT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*\[\s*(\d+)\s*\]\s*")
FLOAT_STEP = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(\s*([+-]\d+(?:\.\d*)?)\s*\))?\s*")
FLOAT_COUNT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[\s*(\d+)\s*\]\s*")
DECIMALS = 8
KINDS = ("int", "float", "str", "permutations")


def split_csv(text: str, where: str = "values") -> list[str]:
    """A1111's reading of a values box: CSV (quotes keep commas), every line, each value stripped.
    `where` names the box in the ValueError for text CSV cannot read (a value over 128 KiB)."""
    rows = csv.reader(io.StringIO(text or ""), skipinitialspace=True)
    try:
        return [value.strip() for value in itertools.chain.from_iterable(rows)]
    except csv.Error as exc:
        raise ValueError(f"{where}: the values cannot be read as comma-separated values ({exc})") from None


def join_csv(values: Sequence[str]) -> str:
    """The values box text for a list of picked values (quoted where a value holds a comma)."""
    out = io.StringIO()
    csv.writer(out).writerow(list(values))
    return out.getvalue().strip()


def _number(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _too_many(where: str, value: str, count: int, limit: int | None, already: int) -> None:
    """Refuse a range that would take the axis over `limit` values, before it is built."""
    if limit is not None and already + count > limit:
        more = f" (after {already} others)" if already else ""
        raise ValueError(f"{where}: '{value}' gives {count:,} values{more}; the most one run may queue is {limit} jobs "
                         "(setting script_max_jobs)")


def _range_length(start: int, stop: int, step: int) -> int:
    """len(range(start, stop, step)), also for ranges longer than len() allows."""
    if step > 0:
        return (stop - start - 1) // step + 1 if start < stop else 0
    return (start - stop - 1) // -step + 1 if start > stop else 0


def _spaced(start: float, end: float, count: int) -> list[float]:
    """`count` evenly spaced values from start to end, both included (numpy.linspace's sums, so
    the values are A1111's to the last bit)."""
    if count == 1:
        return [start]
    step = (end - start) / (count - 1)
    return [start + i * step for i in range(count - 1)] + [end] if count else []


def _ints(value: str, where: str, limit: int | None, already: int) -> list[int]:
    if m := INT_STEP.fullmatch(value):
        start, end = int(_number(m[1])), int(_number(m[2]))
        step = int(m[3]) if m[3] else 1
        if step == 0:
            raise ValueError(f"{where}: the step of '{value}' is 0; use a step such as (+1) or (-1)")
        # A1111 adds 1 to the end whichever way it counts: 10-5 (-3) is 10, 7.
        _too_many(where, value, _range_length(start, end + 1, step), limit, already)
        return list(range(start, end + 1, step))
    if m := INT_COUNT.fullmatch(value):
        start, end, count = int(_number(m[1])), int(_number(m[2])), int(m[3])
        _too_many(where, value, count, limit, already)
        return [int(x) for x in _spaced(float(start), float(end), count)]
    try:
        return [int(value)]
    except ValueError:
        raise ValueError(f"{where}: '{value}' is not a whole number or a range such as 1-5, 1-5 (+2), 10-5 (-3), 1-10 [5]") from None


def _floats(value: str, where: str, limit: int | None, already: int) -> list[float]:
    if m := FLOAT_STEP.fullmatch(value):
        start, end = float(_number(m[1])), float(_number(m[2]))
        step = float(m[3]) if m[3] else 1.0
        if step == 0:
            raise ValueError(f"{where}: the step of '{value}' is 0; use a step such as (+0.5) or (-0.5)")
        _finite(where, value, start, end, step)
        # A1111's numpy.arange(start, end + step, step): its length, then start + i * (its first step)
        span = (end + step - start) / step
        if not math.isfinite(span):
            raise ValueError(f"{where}: '{value}' gives too many values")
        count = max(0, math.ceil(span))
        _too_many(where, value, count, limit, already)
        delta = (start + step) - start
        values = [start, start + step][:count] + [start + i * delta for i in range(2, count)]
    elif m := FLOAT_COUNT.fullmatch(value):
        start, end, count = float(_number(m[1])), float(_number(m[2])), int(m[3])
        _finite(where, value, start, end)
        _too_many(where, value, count, limit, already)
        values = _spaced(start, end, count)
    else:
        try:
            values = [float(value)]
        except ValueError:
            raise ValueError(f"{where}: '{value}' is not a number or a range such as 1.0-2.0 (+0.5), 0.0-1.0 [6]") from None
        _finite(where, value, values[0])
    return [round(x, DECIMALS) for x in values]


def _finite(where: str, value: str, *numbers: float) -> None:
    if not all(math.isfinite(n) for n in numbers):
        raise ValueError(f"{where}: '{value}' is not a finite number")


def parse_values(values: str | Sequence[str], kind: str, where: str, limit: int | None = None) -> list:
    """An axis's values: `values` is the text box (CSV) or the dropdown's list; `kind` one of
    KINDS; `where` names the axis for errors ("X values (Steps)"); `limit` is the most values
    the axis may have (the script_max_jobs setting), counted before a range is built, so
    "1-20000000" is refused without making its list. Every value is checked here, before any
    job runs; an axis that ends up with no value is refused."""
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown value kind {kind!r}")
    items = split_csv(values, where) if isinstance(values, str) else [str(v).strip() for v in values]
    if kind in ("int", "float"):
        read = _ints if kind == "int" else _floats
        out: list = []
        for item in (item for item in items if item):
            numbers = read(item, where, limit, len(out))
            if not numbers:  # A1111 drops such a range silently; a missing row or column is a surprise
                raise ValueError(f"{where}: '{item}' gives no values (to count down, give a negative step: 5-1 (-1))")
            out.extend(numbers)
    elif kind == "permutations":
        if limit is not None and _orders_over(len(items), limit):
            raise ValueError(f"{where}: {len(items)} parts can be put in {len(items)}! orders, more than the most one run may "
                             f"queue, {limit} jobs (setting script_max_jobs)")
        out = list(itertools.permutations(items)) if items else []
    else:
        out = items
        _too_many(where, join_csv(out) if len(out) < 20 else f"{join_csv(out[:20])}, ...", len(out), limit, 0)
    if not out:
        shown = values if isinstance(values, str) else join_csv(list(values))
        raise ValueError(f"{where}: '{shown}' gives no values")
    return out


def _orders_over(parts: int, limit: int) -> bool:
    """Whether `parts`! exceeds `limit`, without computing a factorial of thousands of digits."""
    orders = 1
    for k in range(2, parts + 1):
        orders *= k
        if orders > limit:
            return True
    return False


def format_number(value: float | int) -> str:
    """A value as A1111's legends print it: floats rounded to 8 places, whole floats keep '.0'."""
    return str(round(value, DECIMALS)) if isinstance(value, float) else str(value)
