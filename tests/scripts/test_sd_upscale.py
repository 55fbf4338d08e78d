"""SD upscale: A1111's tiles (positions, overlap, feathered stitching), seeds per tile, and the
script on the tiny model: the size it makes, each tile equal to its single img2img job."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from modules.generation.params import Img2ImgParams
from modules.generation.runner import InitImages
from modules.scripts.args import parse_args
from modules.scripts.base import ScriptEnv, ScriptRequest
from sdext_classic_scripts.scripts.sd_upscale import SDUpscale, tile_seeds, upscaled_size
from modules.outputs.tiles import Tile, TileGrid, combine, positions, split


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("size, tile, overlap, starts", [
    (1024, 512, 64, [0, 256, 512]),  # ceil(960 / 448) = 3 tiles spread evenly
    (128, 64, 16, [0, 32, 64]),
    (100, 64, 16, [0, 36]),
    (64, 64, 16, [0]),
    (1000, 512, 0, [0, 488]),
    (48, 64, 16, [-16]),  # a picture smaller than the tile: one tile reaching past it, as A1111
])
def test_tile_positions_are_a1111s(size, tile, overlap, starts):
    assert positions(size, tile, overlap) == starts


def test_an_overlap_as_large_as_the_tile_is_refused():
    with pytest.raises(ValueError, match="larger than the overlap"):
        positions(256, 64, 64)


@pytest.mark.parametrize("size, tile, overlap", [((128, 128), (64, 64), 16), ((200, 136), (64, 96), 32), ((130, 70), (64, 64), 0)])
def test_split_then_combine_gives_the_picture_back(size, tile, overlap):
    image = picture(*size)
    grid = split(image, *tile, overlap)
    assert all(t.image.size == tile for t in grid.tiles)
    assert np.array_equal(np.asarray(combine(grid)), np.asarray(image))


def test_overlaps_fade_linearly_from_the_earlier_tile_to_the_later():
    black, white = Image.new("RGB", (64, 64)), Image.new("RGB", (64, 64), "white")
    grid = TileGrid(96, 64, 64, 64, 32, rows=[[Tile(0, 0, black), Tile(32, 0, white)]])
    row = np.asarray(combine(grid))[10, :, 0]
    assert (row[:32] == 0).all() and (row[64:] == 255).all()
    assert list(row[32:64]) == [int(i * 255 / 32) for i in range(32)]


def test_upscaled_size_rounds_down_to_multiples_of_8_and_none_keeps_the_size():
    assert upscaled_size(64, 64, "Lanczos", 2.0) == (128, 128)
    assert upscaled_size(100, 60, "Lanczos", 1.5) == (144, 88)
    assert upscaled_size(100, 60, "None", 3.0) == (100, 60)


def test_tile_seeds_follow_a1111s_batches():
    assert tile_seeds(10, 3, 1, 50, False) == [(10, 50), (11, 50), (12, 50)]
    # batches of 2: each batch starts one seed after the previous batch's first seed
    assert tile_seeds(10, 4, 2, 50, False) == [(10, 50), (11, 51), (11, 50), (12, 51)]
    # with a variation strength the seed stays per batch and the variation seed counts up
    assert tile_seeds(10, 4, 2, 50, True) == [(10, 50), (10, 51), (11, 50), (11, 51)]
    # a job's seed is at most 2**32 - 1: past it they wrap to 0, as the CPU generator reads them
    assert tile_seeds(2**32 - 1, 2, 1, 2**32 - 1, False) == [(2**32 - 1, 2**32 - 1), (0, 2**32 - 1)]


def test_script_args_are_a1111s_order_with_the_info_placeholder_first():
    env = ScriptEnv(upscalers=lambda: ["None", "Lanczos", "Nearest"])
    specs = SDUpscale().args(env, True)
    assert [s.name for s in specs] == ["info", "overlap", "upscaler_index", "scale_factor"]
    assert [s.default for s in specs[1:]] == [64, 0, 2.0]
    assert parse_args("SD upscale", specs, ["", 32, 1, 1.5]) == {"info": "", "overlap": 32, "upscaler_index": 1, "scale_factor": 1.5}
    assert parse_args("SD upscale", specs, [None, 16, "Nearest"])["upscaler_index"] == 2  # by name too, as A1111 1.10
    with pytest.raises(ValueError, match=r"argument 2 \(Upscaler, upscaler_index\)"):
        parse_args("SD upscale", specs, ["", 64, 3, 2.0])


def test_every_tile_job_is_checked_before_the_run_starts():
    checked = []

    def check_job(p):
        checked.append(p)
        raise ValueError("over this server's limit")

    env = ScriptEnv(upscalers=lambda: ["None", "Lanczos"], check_job=check_job)
    request = ScriptRequest("img2img", params(n_iter=3, batch_size=2, seed=-1), InitImages((picture(96, 64),)))
    with pytest.raises(ValueError, match="over this server's limit"):
        SDUpscale().prepare(request, {"info": "", "overlap": 16, "upscaler_index": 0, "scale_factor": 2.0}, env)
    [tile] = checked
    assert (tile.width, tile.height, tile.n_iter, tile.batch_size) == (64, 64, 1, 1)
    assert 0 <= tile.seed < 2**32 and tile.subseed >= 0  # the run's seeds, drawn once


def params(**update) -> Img2ImgParams:
    values = dict(prompt="a house", width=64, height=64, steps=2, seed=1234, denoising_strength=0.5)
    return Img2ImgParams.create(**{**values, **update})


def test_sd_upscale_doubles_the_picture_and_each_tile_is_its_single_job(script_app):
    init = picture(64, 64, seed=3)
    result = script_app.run("SD upscale", "img2img", params(), ["", 16, 1, 2.0], init=InitImages((init,)))
    assert [im.size for im in result.images] == [(128, 128)]
    assert result.seeds == [1234]
    assert "Size: 128x128" in result.infotexts[0]
    assert "SD upscale overlap: 16, SD upscale upscaler: Lanczos" in result.infotexts[0]
    # Tiles start at 0, 32 and 64 each way; the first tile alone covers the top-left 32x32.
    upscaled = init.resize((128, 128), Image.Resampling.LANCZOS)
    first = script_app.single(params(), InitImages((upscaled.crop((0, 0, 64, 64)),))).images[0]
    out = np.asarray(result.images[0])
    assert np.array_equal(out[:32, :32], np.asarray(first)[:32, :32])
    # the last tile (seed 1234 + 8) alone covers the bottom-right 16x16
    last = script_app.single(params(seed=1234 + 8), InitImages((upscaled.crop((64, 64, 128, 128)),))).images[0]
    assert np.array_equal(out[112:, 112:], np.asarray(last)[48:, 48:])
    assert not np.array_equal(out[:32, :32], np.asarray(upscaled)[:32, :32])  # img2img changed it


def test_tile_seeds_past_the_largest_wrap_to_zero(script_app):
    init = picture(96, 64)
    result = script_app.run("SD upscale", "img2img", params(seed=2**32 - 1), ["", 32, 0, 2.0], init=InitImages((init,)))
    assert result.seeds == [2**32 - 1]
    # "None" keeps 96x64: tiles at x 0 and 32; the second (seed 0) alone covers the right 32 columns
    second = script_app.single(params(seed=0), InitImages((init.crop((32, 0, 96, 64)),))).images[0]
    assert np.array_equal(np.asarray(result.images[0])[:, 64:], np.asarray(second)[:, 32:])


def test_batch_count_repeats_with_the_next_seed(script_app):
    result = script_app.run("SD upscale", "img2img", params(n_iter=2), ["", 32, 0, 2.0], init=InitImages((picture(96, 64),)))
    # "None" leaves the picture at 96x64: two 64x64 tiles each
    assert [im.size for im in result.images] == [(96, 64), (96, 64)]
    assert result.seeds == [1234, 1235]
    assert not np.array_equal(np.asarray(result.images[0]), np.asarray(result.images[1]))


def test_bad_requests_are_refused_before_any_job(script_app):
    before = len(script_app.queue.list())
    with pytest.raises(ValueError, match="needs an init image"):
        script_app.start("SD upscale", "img2img", params(), ["", 16, 1, 2.0])
    with pytest.raises(ValueError, match="upscaler_index"):
        script_app.start("SD upscale", "img2img", params(), ["", 16, 99, 2.0], init=InitImages((picture(64, 64),)))
    with pytest.raises(ValueError, match=r"Tile overlap, overlap\): 64 must be smaller than the tile"):
        script_app.start("SD upscale", "img2img", params(), ["", 64, 1, 2.0], init=InitImages((picture(64, 64),)))
    script_app.settings.values["script_max_jobs"] = 4
    try:
        with pytest.raises(ValueError, match=r"SD upscale would queue 9 tiles \(9 of 64x64 for each 128x128 picture\); the most one run "
                                              r"may queue is 4 \(setting script_max_jobs\)\. Use larger tiles"):
            script_app.start("SD upscale", "img2img", params(), ["", 16, 1, 2.0], init=InitImages((picture(64, 64),)))
    finally:
        script_app.settings.values["script_max_jobs"] = 200
    with pytest.raises(ValueError, match="not found for txt2img"):
        script_app.start("SD upscale", "txt2img", params(), [])
    assert len(script_app.queue.list()) == before


def test_an_upscale_past_the_largest_image_is_refused_before_any_job(script_app):
    before = len(script_app.queue.list())
    limits = script_app.service.limits
    script_app.service.limits = replace(limits, image_megapixels=0.01)  # 10,000 pixels; 64x64 is 4,096
    try:
        with pytest.raises(ValueError, match=r"SD upscale would make a 128x128 picture \(64x64 upscaled 2x\) \(0\.02 megapixels\); the "
                                              r"largest this server takes is 0\.01 megapixels \(setting limit_image_megapixels\)\. Use a smaller"):
            script_app.start("SD upscale", "img2img", params(), ["", 16, 1, 2.0], init=InitImages((picture(64, 64),)))
    finally:
        script_app.service.limits = limits
    assert len(script_app.queue.list()) == before


def test_interrupt_stops_queueing_tiles(script_app):
    started, tiles = threading.Event(), []
    holder = {}

    def on_submit(job):
        if job.kind != "img2img":  # the upscale itself runs as a job first
            return
        tiles.append(job)
        if len(tiles) == 1:
            started.wait(30)
            holder["run"].interrupt()

    holder["run"] = script_app.start("SD upscale", "img2img", params(), ["", 16, 1, 2.0], init=InitImages((picture(64, 64),)),
                                     on_submit=on_submit)
    started.set()
    run = holder["run"]
    assert run.done.wait(120)
    assert run.error is None and run.result.interrupted
    assert len(tiles) == 1  # the other 8 tiles were never queued
    assert run.result.images == []
