"""Prompt matrix: A1111's combinations of the `|` parts, one job each, and the labelled grid."""

from __future__ import annotations

import pytest

from modules.scripts.prompt_matrix import combinations, grid_labels, grid_shape, split_parts


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
