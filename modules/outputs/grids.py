"""Annotated grids as A1111 draws them for its scripts (X/Y/Z plot, prompt matrix): the
pictures on a white sheet, a label centred above each column and left of each row, an
optional margin between cells. Inactive labels (a prompt matrix part that is off) are grey
and struck through. The font is Pillow's built-in one, sized from the cell as A1111 sizes
its Roboto: (cell width + cell height) // 25, shrunk where a line would not fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from modules.outputs.saving import make_grid

ACTIVE, INACTIVE = (0, 0, 0), (153, 153, 153)
STRIKE_WIDTH = 4


@dataclass(frozen=True)
class GridLabel:
    """One label line; `active=False` draws it grey and struck through (A1111's GridAnnotation)."""

    text: str
    active: bool = True


@dataclass(frozen=True)
class _Line:
    text: str
    active: bool
    width: int
    height: int


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(1, size))


def _measure(text: str, font) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text) if text else (0, 0, 0, 0)
    return right - left, bottom - top


def _wrap(text: str, font, width: int) -> list[str]:
    """Break `text` into lines no wider than `width` at spaces (a long word stays whole)."""
    lines = [""]
    for word in text.split():
        candidate = f"{lines[-1]} {word}".strip()
        if not lines[-1] or font.getlength(candidate) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def _layout(labels: Sequence[GridLabel], font, width: int) -> list[_Line]:
    lines = []
    for label in labels:
        for text in _wrap(label.text, font, width):
            lines.append(_Line(text, label.active, *_measure(text, font)))
    return lines


def _block_height(lines: Sequence[_Line], spacing: int) -> int:
    drawn = [line for line in lines if line.text]
    return sum(line.height for line in drawn) + spacing * max(0, len(drawn) - 1)


def _fitting_font(text: str, size: int, width: int):
    """The font for one line: the grid's, or smaller where the line is wider than its room."""
    font = _font(size)
    while size > 1 and font.getlength(text) > width:
        size = max(1, min(size - 1, int(size * width / max(1.0, font.getlength(text)))))
        font = _font(size)
    return font


def _draw_block(draw: ImageDraw.ImageDraw, lines: Sequence[_Line], centre_x: float, top: float, size: int,
                spacing: int, room: int) -> None:
    y = top
    for line in lines:
        if not line.text:
            continue
        font = _fitting_font(line.text, size, room)
        middle = y + line.height / 2
        draw.text((centre_x, middle), line.text, font=font, fill=ACTIVE if line.active else INACTIVE, anchor="mm")
        if not line.active:
            half = min(line.width, room) / 2
            draw.line((centre_x - half, middle, centre_x + half, middle), fill=INACTIVE, width=STRIKE_WIDTH)
        y += line.height + spacing


def _check_labels(labels, count: int, name: str) -> list[list[GridLabel]]:
    if labels is None:
        return [[] for _ in range(count)]
    labels = [list(cell) for cell in labels]
    if len(labels) != count:
        raise ValueError(f"annotated_grid: {len(labels)} {name} labels for {count} {name}s")
    return labels


def annotated_grid(images: Sequence[Image.Image | None], columns: int, rows: int,
                   column_labels: Sequence[Sequence[GridLabel]] | None, row_labels: Sequence[Sequence[GridLabel]] | None,
                   margin: int = 0) -> Image.Image:
    """Tile `images` row by row into `columns` x `rows` cells (saving.make_grid's: each as
    large as the largest picture, black where a picture does not fill it or is None, as
    A1111's), `margin` white pixels apart, with each column's labels above it and each
    row's labels to its left."""
    if columns < 1 or rows < 1:
        raise ValueError(f"annotated_grid: a grid needs at least one column and one row, got {columns}x{rows}")
    if len(images) > columns * rows:
        raise ValueError(f"annotated_grid: {len(images)} pictures do not fit {columns}x{rows} cells")
    if margin < 0:
        raise ValueError(f"annotated_grid: margin must be 0 or more, got {margin}")
    present = [image for image in images if image is not None]
    if not present:
        raise ValueError("annotated_grid: a grid needs at least one picture")
    width, height = max(i.width for i in present), max(i.height for i in present)
    column_labels = _check_labels(column_labels, columns, "column")
    row_labels = _check_labels(row_labels, rows, "row")

    size = max(1, (width + height) // 25)
    spacing = size // 2
    font = _font(size)
    pad_left = width * 3 // 4 if any(label.text for labels in row_labels for label in labels) else 0
    column_lines = [_layout(labels, font, width) for labels in column_labels]
    row_lines = [_layout(labels, font, pad_left) for labels in row_labels]
    column_heights = [_block_height(lines, spacing) for lines in column_lines]
    pad_top = max(column_heights) + 2 * spacing if any(column_heights) else 0

    blank = Image.new("RGB", (width, height))  # black, as A1111's missing cell
    tiles = [blank if image is None else image.convert("RGB") for image in images]
    tiles = make_grid(tiles + [blank] * (columns * rows - len(tiles)), rows, margin)
    sheet = Image.new("RGB", (pad_left + tiles.width, pad_top + tiles.height), "white")
    sheet.paste(tiles, (pad_left, pad_top))

    draw = ImageDraw.Draw(sheet)
    for column, lines in enumerate(column_lines):
        centre = pad_left + column * (width + margin) + width / 2
        _draw_block(draw, lines, centre, (pad_top - column_heights[column]) / 2, size, spacing, width)
    for row, lines in enumerate(row_lines):
        top = pad_top + row * (height + margin) + (height - _block_height(lines, spacing)) / 2
        _draw_block(draw, lines, pad_left / 2, top, size, spacing, pad_left)
    return sheet


def combine_grids(grids: Sequence[Image.Image], labels: Sequence[str], margin: int = 0) -> Image.Image:
    """X/Y/Z plot's Z sub-grids side by side, each titled with its Z value (A1111 sizes the
    title font from the sub-grid, so titles grow with the grids)."""
    if len(labels) != len(grids):
        raise ValueError(f"combine_grids: {len(labels)} titles for {len(grids)} grids")
    return annotated_grid(grids, len(grids), 1, [[GridLabel(text)] for text in labels], None, margin)
