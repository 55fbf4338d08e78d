"""Annotated grids (X/Y/Z plot, prompt matrix): layout, labels, margins, struck-through labels."""

import numpy as np
import pytest
from PIL import Image

from modules.outputs.grids import GridLabel, annotated_grid, combine_grids

CELL = 64
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def cells(count=4, size=(CELL, CELL)):
    return [Image.new("RGB", size, COLOURS[i % len(COLOURS)]) for i in range(count)]


def ink(image, box):
    """How many pixels in `box` are not white."""
    region = np.asarray(image.crop(box).convert("RGB")).astype(int)
    return int((region.sum(axis=2) < 3 * 255).sum())


def labels(*texts):
    return [[GridLabel(t)] for t in texts]


def test_unlabelled_grid_is_the_cells_side_by_side():
    grid = annotated_grid(cells(), 2, 2, None, None)
    assert grid.size == (2 * CELL, 2 * CELL)
    pixels = np.asarray(grid)
    assert tuple(pixels[0, 0]) == COLOURS[0] and tuple(pixels[0, CELL]) == COLOURS[1]
    assert tuple(pixels[CELL, 0]) == COLOURS[2] and tuple(pixels[CELL, CELL]) == COLOURS[3]


def test_labels_are_drawn_in_bands_above_and_left():
    grid = annotated_grid(cells(), 2, 2, labels("Steps: 10", "Steps: 20"), labels("CFG Scale: 5", "CFG Scale: 7"))
    pad_left = CELL * 3 // 4
    pad_top = grid.height - 2 * CELL
    assert grid.width == pad_left + 2 * CELL and pad_top > 0
    # each column label sits above its own column, each row label left of its own row
    for column in range(2):
        x = pad_left + column * CELL
        assert ink(grid, (x, 0, x + CELL, pad_top)) > 20
    for row in range(2):
        y = pad_top + row * CELL
        assert ink(grid, (0, y, pad_left, y + CELL)) > 20
    assert ink(grid, (0, 0, pad_left, pad_top)) == 0  # the corner stays white
    # the cells are where the bands say
    assert tuple(np.asarray(grid)[pad_top + 1, pad_left + 1]) == COLOURS[0]


def test_different_labels_draw_different_text():
    one = annotated_grid(cells(2), 2, 1, labels("Steps: 10", "Steps: 10"), None)
    two = annotated_grid(cells(2), 2, 1, labels("Steps: 10", "Steps: 99"), None)
    left = (0, 0, CELL, one.height - CELL)
    right = (CELL, 0, 2 * CELL, one.height - CELL)
    assert np.array_equal(np.asarray(one.crop(left)), np.asarray(two.crop(left)))
    assert not np.array_equal(np.asarray(one.crop(right)), np.asarray(two.crop(right)))


def test_margin_is_white_space_between_cells():
    margin = 10
    grid = annotated_grid(cells(), 2, 2, None, None, margin=margin)
    assert grid.size == (2 * CELL + margin, 2 * CELL + margin)
    assert ink(grid, (CELL, 0, CELL + margin, grid.height)) == 0
    assert ink(grid, (0, CELL, grid.width, CELL + margin)) == 0
    assert tuple(np.asarray(grid)[CELL + margin, CELL + margin]) == COLOURS[3]


def test_inactive_labels_are_grey_and_struck_through():
    big = 128
    grid = annotated_grid(cells(2, (big, big)), 2, 1, [[GridLabel("cat", active=False)], [GridLabel("cat")]], None)
    pad_top = grid.height - big
    pixels = np.asarray(grid).astype(int)
    off, on = pixels[:pad_top, :big], pixels[:pad_top, big:]
    assert off.min() >= 150 and on.min() < 60  # grey ink only where the label is off, black where on
    grey = np.all(off == (153, 153, 153), axis=2)
    columns = np.nonzero(grey.any(axis=0))[0]
    # the strike: one row of the band is grey across the whole of the text's width
    assert grey.sum(axis=1).max() >= columns.max() - columns.min()
    assert not np.all(on == (153, 153, 153), axis=2).any()


def test_long_labels_wrap_inside_their_column():
    text = "a very long prompt that cannot fit on one line of a small cell"
    grid = annotated_grid(cells(2), 2, 1, labels(text, "x"), None)
    short = annotated_grid(cells(2), 2, 1, labels("x", "x"), None)
    assert grid.height > short.height  # more lines, taller band
    assert grid.width == 2 * CELL


def test_missing_cells_are_black_and_cells_take_the_largest_size():
    grid = annotated_grid([Image.new("RGB", (CELL, CELL), "red"), None, Image.new("RGB", (32, 96), "blue")], 3, 1, None, None)
    assert grid.size == (3 * CELL, 96)
    assert tuple(np.asarray(grid)[10, CELL + 10]) == (0, 0, 0)


def test_a_smaller_picture_leaves_its_cell_black_as_a1111s_grid():
    small = Image.new("RGB", (32, 32), "red")
    grid = annotated_grid([Image.new("RGB", (CELL, CELL), "blue"), small], 2, 1, labels("a", "b"), None, margin=6)
    pixels = np.asarray(grid)
    bottom = grid.height - 1
    assert tuple(pixels[bottom, CELL + 6 + 10]) == (0, 0, 0)  # below the small picture: black, not the sheet's white
    assert tuple(pixels[bottom, CELL + 2]) == (255, 255, 255)  # the margin stays white
    assert tuple(pixels[bottom - CELL + 5, CELL + 6 + 5]) == (255, 0, 0)


def test_combine_grids_titles_each_sub_grid():
    subs = [annotated_grid(cells(), 2, 2, None, None) for _ in range(3)]
    combined = combine_grids(subs, ["Seed: 1", "Seed: 2", "Seed: 3"], margin=0)
    pad_top = combined.height - 2 * CELL
    assert combined.width == 3 * 2 * CELL and pad_top > 0
    for index in range(3):
        assert ink(combined, (index * 2 * CELL, 0, (index + 1) * 2 * CELL, pad_top)) > 20


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="column"):
        annotated_grid(cells(), 2, 2, labels("a"), None)
    with pytest.raises(ValueError, match="do not fit"):
        annotated_grid(cells(5), 2, 2, None, None)
