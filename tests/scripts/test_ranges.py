"""X/Y/Z plot's value syntax: A1111's documented examples, CSV lists, and readable refusals."""

import pytest

from sdext_classic_scripts.lib_classic.ranges import join_csv, parse_values, split_csv


@pytest.mark.parametrize("text, expected", [
    # A1111 wiki (X/Y/Z plot): ranges include the end; [n] is n evenly spaced values, cut to whole numbers
    ("1-5", [1, 2, 3, 4, 5]),
    ("1-5 (+2)", [1, 3, 5]),
    ("10-5 (-3)", [10, 7]),
    ("1-10 [5]", [1, 3, 5, 7, 10]),
    ("1-3, 7, 10-12", [1, 2, 3, 7, 10, 11, 12]),
    ("-5", [-5]),
    ("-3--1", [-3, -2, -1]),
    (" 20 , 30 ", [20, 30]),
    ("1, , 2", [1, 2]),  # A1111 skips empty number entries
    ("5-5", [5]),
    ("1-4 [1]", [1]),
])
def test_whole_number_ranges(text, expected):
    assert parse_values(text, "int", "X values (Steps)") == expected


@pytest.mark.parametrize("text, expected", [
    ("1.0-2.0 (+0.5)", [1.0, 1.5, 2.0]),
    ("0.0-1.0 [6]", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    ("2.0-1.0 (-0.5)", [2.0, 1.5, 1.0]),
    ("5, 7.5, 1e1", [5.0, 7.5, 10.0]),
    ("1-3", [1.0, 2.0, 3.0]),
    ("0-1 (+0.1)", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
])
def test_decimal_ranges(text, expected):
    assert parse_values(text, "float", "Y values (CFG Scale)") == expected


def test_text_values_are_csv_as_a1111_reads_them():
    assert parse_values('cat, "dog, big", bird', "str", "X values") == ["cat", "dog, big", "bird"]
    assert parse_values("a,b\nc", "str", "X values") == ["a", "b", "c"]
    assert split_csv(join_csv(["x, y", "z"])) == ["x, y", "z"]


def test_dropdown_lists_are_taken_as_they_are():
    assert parse_values(["Euler a", "DPM++ 2M"], "str", "X values (Sampler)") == ["Euler a", "DPM++ 2M"]
    assert parse_values(["10", "20-30 (+10)"], "int", "X values (Steps)") == [10, 20, 30]


def test_permutations():
    assert parse_values("a, b, c", "permutations", "X values (Prompt order)") == [
        ("a", "b", "c"), ("a", "c", "b"), ("b", "a", "c"), ("b", "c", "a"), ("c", "a", "b"), ("c", "b", "a")]


@pytest.mark.parametrize("kind, text, fragment", [
    ("int", "10, abc", "'abc'"),
    ("int", "1.5", "'1.5'"),
    ("int", "1-5 (2)", "'1-5 (2)'"),  # A1111 wants the step's sign
    ("int", "5-1", "'5-1' gives no values"),
    ("int", "1-5 (+0)", "step of '1-5 (+0)' is 0"),
    ("int", "1-10 [0]", "'1-10 [0]' gives no values"),
    ("float", "1.0-x", "'1.0-x'"),
    ("float", "nan", "'nan'"),
    ("int", "", "gives no values"),
    ("str", "", "gives no values"),
])
def test_bad_values_name_the_axis_and_the_value(kind, text, fragment):
    with pytest.raises(ValueError) as error:
        parse_values(text, kind, "Y values (Steps)")
    assert "Y values (Steps)" in str(error.value) and fragment in str(error.value)


@pytest.mark.parametrize("kind, text, fragment", [
    ("int", "1-20000000", "'1-20000000' gives 20,000,000 values"),
    ("int", "1-10 [100000000000]", "'1-10 [100000000000]' gives 100,000,000,000 values"),
    ("int", "0-99999999999999999999999999", "gives 100,000,000,000,000,000,000,000,000 values"),
    ("int", "1-150, 1-100", "'1-100' gives 100 values (after 150 others)"),
    ("float", "0.0-1.0 (+0.00000001)", "gives 100,000,001 values"),
    ("float", "0.0-1.0 [3000000000]", "gives 3,000,000,000 values"),
    ("str", ", ".join(["a"] * 201), "gives 201 values"),
])
def test_ranges_over_the_job_limit_are_refused_before_they_are_built(kind, text, fragment):
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as error:
            parse_values(text, kind, "X values (Steps)", limit=200)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(error.value)
    assert "X values (Steps)" in message and fragment in message and "script_max_jobs" in message
    assert peak < 1_000_000  # counted, not built (the list of 20 million values alone is ~800 MB)


def test_ranges_up_to_the_limit_are_accepted():
    assert parse_values("1-200", "int", "X values (Steps)", limit=200) == list(range(1, 201))
    assert len(parse_values("0.0-1.0 (+0.01)", "float", "X values (CFG Scale)", limit=101)) == 101


def test_prompt_orders_over_the_limit_are_refused_before_permuting():
    parts = ", ".join(f"part{i}" for i in range(12))  # 12! = 479,001,600 orders
    with pytest.raises(ValueError, match=r"X values \(Prompt order\): 12 parts can be put in 12! orders.*200 jobs"):
        parse_values(parts, "permutations", "X values (Prompt order)", limit=200)
    assert len(parse_values("a, b, c, d, e", "permutations", "X values (Prompt order)", limit=120)) == 120


def test_huge_float_ranges_are_refused():
    huge = "1" + "0" * 400  # a finite text that reads as infinity
    with pytest.raises(ValueError, match="not a finite number"):
        parse_values(f"0-{huge} (+1)", "float", "X values (CFG Scale)", limit=200)


def test_ranges_match_numpy_as_a1111_computes_them():
    import numpy as np

    for start, end, step in [(0.0, 1.0, 0.1), (2.5, -1.3, -0.7), (0.1, 0.7, 0.2), (1.0, 2.0, 0.3)]:
        expected = [round(x, 8) for x in np.arange(start, end + step, step).tolist()]
        assert parse_values(f"{start}-{end} ({step:+})", "float", "X") == expected
    for start, end, count in [(0.0, 1.0, 7), (-3.3, 9.1, 13), (1, 10, 4)]:
        assert parse_values(f"{start}-{end} [{count}]", "float", "X") == [round(x, 8) for x in np.linspace(start, end, count).tolist()]
    assert parse_values("1-100 [7]", "int", "X") == [int(x) for x in np.linspace(1, 100, 7).tolist()]


def test_ranges_module_does_not_import_numpy():
    import subprocess
    import sys

    from pathlib import Path

    code = ("import sys; from tests.scripts import classic; classic.register(); import sdext_classic_scripts.lib_classic.ranges; "
            "print('numpy' in sys.modules)")
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert run.stdout.strip() == "False"


def test_a_csv_value_too_long_to_read_is_a_value_error_naming_the_axis():
    with pytest.raises(ValueError, match=r"X values \(Prompt S/R\): the values cannot be read"):
        parse_values('red, "' + "x" * 200_000 + '"', "str", "X values (Prompt S/R)")
