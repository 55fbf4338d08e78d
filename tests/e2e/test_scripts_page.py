"""The Script menu and Generate forever, driven in Chromium as a user would."""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image

from modules.outputs.infotext import parse_infotext
from tests.e2e.test_txt2img_page import set_number


def saved(data: Path, folder: str = "txt2img-images") -> list[Path]:
    return sorted((data / "outputs" / folder).glob("*/*.png"))


def forever_menu(page, item: str) -> None:
    page.click("#txt2img_generate", button="right")
    page.locator("#generate_forever_menu div", has_text=item).first.click()


def wait_idle(page) -> None:
    page.wait_for_function("!window.generateForever.running('txt2img')", timeout=60000)


def assert_stays_idle(page, data: Path) -> None:
    """No Generate click follows (the loop clicks 0.3 s after a run ends) and no file appears."""
    settled = len(saved(data))
    for _ in range(10):
        time.sleep(0.3)
        assert not page.evaluate("window.generateForever.running('txt2img')"), "Generate was clicked again"
    assert len(saved(data)) == settled


def ready(page) -> None:
    """Wait for the demo model's defaults (64x64, CFG 5) to land before setting controls."""
    page.locator("#model_guide", has_text="a COLOUR SHAPE on a COLOUR background").wait_for(timeout=30000)


def test_generate_forever_repeats_until_cancelled_or_interrupted(page, server):
    data = server["data"]
    ready(page)
    page.fill("#txt2img_prompt textarea", "a red circle on a blue background")
    set_number(page, "txt2img_steps", 2)
    set_number(page, "txt2img_seed", -1)
    before = set(saved(data))

    forever_menu(page, "Generate forever")
    page.locator("#txt2img_generate_forever").wait_for(timeout=10000)  # the indicator under Generate
    deadline = time.monotonic() + 120
    while len(set(saved(data)) - before) < 3 and time.monotonic() < deadline:
        time.sleep(0.3)
    made = sorted(set(saved(data)) - before)
    assert len(made) >= 3, "Generate forever ran fewer than 3 times"
    page.screenshot(path="/tmp/scripts-page-forever.png", full_page=True)
    seeds = {parse_infotext(Image.open(p).info["parameters"])["Seed"] for p in made}
    assert len(seeds) == len(made)  # seed -1 stays random: each run picks a new one

    forever_menu(page, "Cancel generate forever")
    assert page.locator("#txt2img_generate_forever").count() == 0
    wait_idle(page)
    assert_stays_idle(page, data)

    # Interrupt stops it too.
    forever_menu(page, "Generate forever")
    start = len(saved(data))
    deadline = time.monotonic() + 60
    while len(saved(data)) < start + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    page.click("#txt2img_interrupt")
    assert page.locator("#txt2img_generate_forever").count() == 0
    wait_idle(page)
    assert_stays_idle(page, data)
    assert len(saved(data)) >= start + 2


def choose(page, elem_id: str, option: str) -> None:
    """Pick an option of a gradio dropdown."""
    page.click(f"#{elem_id} input")
    page.locator(f"#{elem_id}").get_by_role("option", name=option, exact=True).click()


def test_xyz_plot_from_the_page_shows_and_saves_a_labelled_grid(page, server):
    data = server["data"]
    ready(page)
    page.fill("#txt2img_prompt textarea", "a red circle on a blue background")
    set_number(page, "txt2img_seed", 1234)
    images_before, grids_before = set(saved(data)), set(saved(data, "txt2img-grids"))

    choose(page, "txt2img_script_list", "X/Y/Z plot")
    xyz = "script_txt2img_xyz_plot"
    page.locator(f"#{xyz}_x_type").wait_for(state="visible", timeout=10000)
    # An axis with choices offers them in a picker instead of the text box, as A1111's does.
    choose(page, f"{xyz}_x_type", "Sampler")
    page.locator(f"#{xyz}_x_values_dropdown").wait_for(state="visible", timeout=10000)
    assert not page.locator(f"#{xyz}_x_values").is_visible()
    page.click(f"#{xyz}_x_values_dropdown input")
    assert page.locator(f"#{xyz}_x_values_dropdown").get_by_role("option", name="Euler a", exact=True).is_visible()
    page.keyboard.press("Escape")

    choose(page, f"{xyz}_x_type", "Steps")
    page.locator(f"#{xyz}_x_values").wait_for(state="visible", timeout=10000)
    page.fill(f"#{xyz}_x_values textarea", "2,3")
    choose(page, f"{xyz}_y_type", "CFG Scale")
    page.fill(f"#{xyz}_y_values textarea", "5,7")
    # A1111's "Swap X/Y axes" exchanges types and values; twice puts them back. (A server round
    # trip each: 30 s, as the suite's other processes may be busy on the same cores.)
    page.click(f"#{xyz}_swap_xy")
    page.wait_for_function(f"document.querySelector('#{xyz}_x_values textarea').value == '5,7'", timeout=30000)
    assert page.input_value(f"#{xyz}_x_type input") == "CFG Scale" and page.input_value(f"#{xyz}_y_values textarea") == "2,3"
    page.click(f"#{xyz}_swap_xy")
    page.wait_for_function(f"document.querySelector('#{xyz}_x_values textarea').value == '2,3'", timeout=30000)
    assert page.input_value(f"#{xyz}_x_type input") == "Steps" and page.input_value(f"#{xyz}_y_type input") == "CFG Scale"
    page.check(f"#{xyz}_include_lone_images input")  # the cells in the gallery too (A1111 shows only the grid without it)
    page.screenshot(path="/tmp/scripts-page-xyz-controls.png", full_page=True)
    page.click("#txt2img_generate")
    page.locator("#txt2img_html_log", has_text="time taken").wait_for(timeout=180000)
    page.screenshot(path="/tmp/scripts-page-xyz-result.png", full_page=True)
    log = page.inner_text("#txt2img_html_log")
    assert "X/Y/Z plot: 4 image(s) and 1 grid" in log, log
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery img').length >= 5", timeout=30000)  # grid + 4 cells

    # The gallery's first picture is the grid: 2x2 cells of 64 px plus the legends.
    width, height = page.evaluate("(() => { const i = document.querySelector('#txt2img_gallery img'); return [i.naturalWidth, i.naturalHeight]; })()")
    assert 128 < width < 3 * 128 and 128 < height < 3 * 128, (width, height)

    grids = sorted(set(saved(data, "txt2img-grids")) - grids_before)
    assert len(grids) == 1
    grid = Image.open(grids[0])
    assert grid.size == (width, height)
    info = parse_infotext(grid.info["parameters"])
    assert info["Seed"] == "1234" and info["Size"] == "64x64"

    # Each cell was its own job, saved with its own parameters.
    cells = [p for p in sorted(set(saved(data)) - images_before) if parse_infotext(Image.open(p).info["parameters"])["Seed"] == "1234"]
    found = sorted((parse_infotext(Image.open(p).info["parameters"])["Steps"], parse_infotext(Image.open(p).info["parameters"])["CFG scale"])
                   for p in cells)
    assert found == [("2", "5"), ("2", "7"), ("3", "5"), ("3", "7")]
    # The cells sit in the grid in A1111's order (X across, Y down) and are the saved pictures.
    first = Image.open(next(p for p in cells if parse_infotext(Image.open(p).info["parameters"])["Steps"] == "2"
                            and parse_infotext(Image.open(p).info["parameters"])["CFG scale"] == "5")).convert("RGB")
    assert _found_in(grid.convert("RGB"), first)


def _found_in(grid: Image.Image, cell: Image.Image) -> bool:
    """Whether `cell` appears pixel for pixel somewhere in the grid (the legends shift it)."""
    import numpy as np

    g, c = np.asarray(grid, dtype=int), np.asarray(cell, dtype=int)
    h, w = c.shape[:2]
    for y in range(g.shape[0] - h + 1):
        for x in range(g.shape[1] - w + 1):
            if g[y, x, 0] == c[0, 0, 0] and np.array_equal(g[y:y + h, x:x + w], c):
                return True
    return False
