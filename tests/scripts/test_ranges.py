"""X/Y/Z plot's value syntax: A1111's documented examples, CSV lists, and readable refusals."""

import pytest

from modules.scripts.ranges import join_csv, parse_values, split_csv


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
