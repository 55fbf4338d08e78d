"""Outpainting mk2 and Poor man's outpainting: how far each side grows, mk2's matched noise,
and the scripts on the tiny model: the picture grows by the pixels asked, the original pixels
stay exactly where they were, the new border gets new (not flat) content."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules.generation.params import Img2ImgParams
from modules.generation.runner import InitImages
from modules.scripts.args import parse_args
from modules.scripts.base import ScriptEnv, ScriptRequest
from sdext_classic_scripts.lib_classic.outpaint_pixels import expansion, match_histograms, matched_noise, noised_picture
from sdext_classic_scripts.lib_classic.outpainting import keep_rectangle, mk2_pass
from sdext_classic_scripts.scripts.outpainting_mk_2 import OutpaintingMk2
from sdext_classic_scripts.scripts.poor_mans_outpainting import PoorMansOutpainting

ALL = ["left", "right", "up", "down"]


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth picture with some texture (so matched noise has a spectrum to follow)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([120 + 60 * np.sin(x / 7), 100 + 50 * np.cos(y / 5), 90 + 40 * np.sin((x + y) / 9)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("size, pixels, directions, expected", [
    ((64, 64), 32, ALL, (32, 32, 32, 32)),
    ((64, 64), 128, ["left"], (128, 0, 0, 0)),
    ((64, 64), 8, ["left"], (64, 0, 0, 0)),  # 72 rounds up to 128: the side takes the rounding
    ((100, 64), 8, ["left", "right"], (14, 14, 0, 0)),  # 116 -> 128, shared
    ((512, 512), 128, ["up", "down"], (0, 0, 128, 128)),
    ((64, 100), 32, ["down"], (0, 0, 0, 92)),  # 132 -> 192
])
def test_expansion_rounds_the_grown_size_up_to_64_as_a1111(size, pixels, directions, expected):
    assert expansion(*size, pixels, directions) == expected


def test_histogram_matching_takes_the_references_distribution():
    rng = np.random.default_rng(1)
    values, reference = rng.random((1000, 3)), rng.normal(0.3, 0.05, (4000, 3))
    matched = match_histograms(values, reference)
    assert np.allclose(np.sort(matched, axis=0)[[100, 500, 900]], np.quantile(reference, [0.1, 0.5, 0.9], axis=0), atol=0.01)
    assert (np.argsort(matched[:, 0]) == np.argsort(values[:, 0])).all()  # order kept


def test_histogram_matching_equals_scikit_images_where_installed():
    """A1111 matches with skimage.exposure.match_histograms; ours must give the same values."""
    exposure = pytest.importorskip("skimage.exposure")
    rng = np.random.default_rng(2)
    values, reference = rng.random((500, 3)) ** 2, rng.random((700, 3))
    assert np.allclose(match_histograms(values, reference), exposure.match_histograms(values, reference, channel_axis=1))


def test_matched_noise_keeps_the_known_part_and_follows_its_colours():
    image = np.asarray(picture(96, 64), dtype=np.float64) / 255
    mask = np.zeros((64, 96))
    mask[:, :32] = 1  # the left third is new
    filled = matched_noise(image.copy(), mask)
    assert np.array_equal(filled[:, 32:], image[:, 32:])
    new, known = filled[:, :32], image[:, 32:]
    assert new.std(axis=(0, 1)).min() > 0.05  # texture, not a flat fill
    assert np.allclose(new.mean(axis=(0, 1)), known.mean(axis=(0, 1)), atol=0.03)
    assert np.allclose(np.quantile(new, [0.1, 0.9], axis=(0, 1)), np.quantile(known, [0.1, 0.9], axis=(0, 1)), atol=0.05)
    assert np.array_equal(filled, matched_noise(image.copy(), mask))  # deterministic
    grey = matched_noise(image.copy(), mask, color_variation=0.0)
    assert not np.array_equal(grey, filled)


def test_noised_picture_returns_unmasked_pixels_exactly():
    image = picture(64, 64)
    mask = keep_rectangle((64, 64), (16, 0, 64, 64))
    out = noised_picture(image, mask, 1.0, 0.05)
    assert np.array_equal(np.asarray(out)[:, 16:], np.asarray(image)[:, 16:])
    assert not np.array_equal(np.asarray(out)[:, :16], np.asarray(image)[:, :16])


def test_keep_rectangle_ends_where_the_new_strip_begins():
    mask = np.asarray(keep_rectangle((8, 4), (2, 0, 6, 4)))
    assert list(mask[0]) == [255, 255, 0, 0, 0, 0, 255, 255]


def test_mk2_passes_work_on_the_edge_at_most_the_request_size_wide():
    source = picture(64, 64)
    canvases, crops, mask, box, size = mk2_pass([source], "left", 32, 0, 1.0, 0.05, 64, 64)
    assert canvases[0].size == (128, 64) and size == (96, 64)  # canvas rounded up to 64
    assert box == (0, 0, 64, 64) and crops[0].size == (64, 64)
    m = np.asarray(mask)
    assert (m[:, :32] == 255).all() and (m[:, 32:] == 0).all()
    assert np.array_equal(np.asarray(canvases[0])[:, 32:96], np.asarray(source))
    canvases, crops, mask, box, size = mk2_pass([canvases[0].crop((0, 0, 96, 64))], "right", 32, 2, 1.0, 0.05, 64, 64)
    assert box == (64, 0, 128, 64) and size == (128, 64)
    m = np.asarray(mask)
    assert (m[:, :30] == 0).all() and (m[:, 30:] == 255).all()  # the new 32 columns and 2 of the picture's


def test_script_args_are_a1111s_order():
    env = ScriptEnv()
    mk2 = OutpaintingMk2().args(env, True)
    assert [a.name for a in mk2] == ["info", "pixels", "mask_blur", "direction", "noise_q", "color_variation"]
    assert [a.default for a in mk2[1:]] == [128, 8, ALL, 1.0, 0.05]
    poor = PoorMansOutpainting().args(env, True)
    assert [a.name for a in poor] == ["pixels", "mask_blur", "inpainting_fill", "direction"]
    assert [a.default for a in poor] == [128, 4, 0, ALL]
    assert parse_args("Poor man's outpainting", poor, [64, 2, "latent noise", ["left"]])["inpainting_fill"] == 2


def params(**update) -> Img2ImgParams:
    values = dict(prompt="a field", width=64, height=64, steps=2, seed=1234, denoising_strength=0.8)
    return Img2ImgParams.create(**{**values, **update})


def assert_new_border(out: np.ndarray, box: tuple[int, int, int, int]):
    left, top, right, bottom = box
    border = np.concatenate([out[:, :left].reshape(-1, 3), out[:, right:].reshape(-1, 3), out[:top].reshape(-1, 3), out[bottom:].reshape(-1, 3)])
    assert border.std(axis=0).min() > 2  # painted, not a flat fill
    assert (border.max(axis=1) > 0).mean() > 0.99  # no black left from the empty canvas


def test_outpainting_mk2_grows_every_side_and_keeps_the_original(script_app):
    init = picture(64, 64, seed=5)
    result = script_app.run("Outpainting mk2", "img2img", params(), ["", 32, 0, ALL, 1.0, 0.05], init=InitImages((init,)))
    assert [im.size for im in result.images] == [(128, 128)]
    assert result.seeds == [1234] and "Size: 128x128" in result.infotexts[0]
    out = np.asarray(result.images[0])
    assert np.array_equal(out[32:96, 32:96], np.asarray(init))
    assert_new_border(out, (32, 32, 96, 96))


def test_outpainting_mk2_with_mask_blur_repaints_the_edge_and_keeps_the_middle(script_app):
    init = picture(64, 64, seed=6)
    result = script_app.run("Outpainting mk2", "img2img", params(), ["", 32, 1, ["right", "down"], 1.0, 0.05], init=InitImages((init,)))
    assert [im.size for im in result.images] == [(128, 128)]  # 96 rounds up to 128: 64 more each way
    out, original = np.asarray(result.images[0]), np.asarray(init)
    assert np.array_equal(out[:40, :40], original[:40, :40])  # far from the blurred edge
    assert not np.array_equal(out[:64, 60:64], original[:, 60:64])  # the blur band is repainted
    assert out[:, 64:].std(axis=(0, 1)).min() > 2 and out[64:].std(axis=(0, 1)).min() > 2


def test_poor_mans_outpainting_grows_in_tiles_and_keeps_the_original(script_app):
    init = picture(64, 64, seed=7)
    result = script_app.run("Poor man's outpainting", "img2img", params(), [32, 0, 0, ALL], init=InitImages((init,)))
    assert [im.size for im in result.images] == [(128, 128)]
    assert result.seeds == [1234]
    out = np.asarray(result.images[0])
    assert np.array_equal(out[32:96, 32:96], np.asarray(init))
    assert_new_border(out, (32, 32, 96, 96))
    # Tiles start at 0, 32, 64; the first (seed 1234) alone covers the top-left 32x32 and is its single job.
    canvas = Image.new("RGB", (128, 128))
    canvas.paste(init, (32, 32))
    mask = keep_rectangle((128, 128), (32, 32, 96, 96))
    single = script_app.single(params(mask_blur=0, inpainting_fill=0), InitImages((canvas.crop((0, 0, 64, 64)),), mask.crop((0, 0, 64, 64))))
    assert np.array_equal(out[:32, :32], np.asarray(single.images[0])[:32, :32])


def recording_env(checked: list, **kw) -> ScriptEnv:
    return ScriptEnv(check_job=lambda p: checked.append(p) or p, **kw)


def test_each_mk2_side_job_is_checked_at_its_size_before_the_run_starts():
    checked = []
    request = ScriptRequest("img2img", params(seed=-1, batch_size=2), InitImages((picture(64, 64),)))
    OutpaintingMk2().prepare(request, {"pixels": 32, "mask_blur": 4, "direction": ALL, "noise_q": 1.0, "color_variation": 0.05},
                             recording_env(checked))
    # left and right: the request's width across the whole 64-high canvas; up and down: the whole 128-wide canvas
    assert [(p.width, p.height) for p in checked] == [(64, 64), (64, 64), (128, 64), (128, 64)]
    assert {(p.seed, p.batch_size, p.n_iter, p.mask_blur, p.inpainting_fill) for p in checked} == {(checked[0].seed, 2, 1, 16, 1)}
    assert checked[0].seed >= 0

    def refuse(p):
        raise ValueError("over this server's limit")

    with pytest.raises(ValueError, match="over this server's limit"):
        OutpaintingMk2().prepare(request, {"pixels": 32, "mask_blur": 4, "direction": ["up"], "noise_q": 1.0, "color_variation": 0.05},
                                 ScriptEnv(check_job=refuse))


def test_poor_mans_tile_job_is_checked_and_too_many_tiles_are_refused():
    checked = []
    request = ScriptRequest("img2img", params(seed=2**32 - 1, mask_blur=0), InitImages((picture(64, 64),)))
    args = {"pixels": 32, "mask_blur": 3, "inpainting_fill": 2, "direction": ALL}
    PoorMansOutpainting().prepare(request, args, recording_env(checked))
    [tile] = checked
    assert (tile.width, tile.height, tile.seed, tile.batch_size, tile.mask_blur, tile.inpainting_fill) == (64, 64, 2**32 - 1, 1, 6, 2)
    with pytest.raises(ValueError, match=r"Poor man's outpainting would queue 8 tiles of 64x64; the most one run may queue is 5 "
                                         r"\(setting script_max_jobs\)\. Use larger tiles"):
        PoorMansOutpainting().prepare(request, args, recording_env([], max_jobs=lambda: 5))


def test_mk2_sides_over_the_job_limit_are_refused():
    request = ScriptRequest("img2img", params(n_iter=3), InitImages((picture(64, 64),)))
    with pytest.raises(ValueError, match=r"Outpainting mk2 would queue 12 jobs; the most one run may queue is 10"):
        OutpaintingMk2().prepare(request, {"pixels": 32, "mask_blur": 4, "direction": ALL, "noise_q": 1.0, "color_variation": 0.05},
                                 ScriptEnv(max_jobs=lambda: 10))


def test_mk2_fills_each_side_on_the_worker_before_its_inpaint(script_app):
    kinds = []
    run = script_app.start("Outpainting mk2", "img2img", params(), ["", 32, 0, ["left", "down"], 1.0, 0.05],
                           init=InitImages((picture(64, 64),)), on_submit=lambda job: kinds.append(job.kind))
    assert run.done.wait(120) and run.error is None
    assert kinds == ["Outpainting mk2", "img2img", "Outpainting mk2", "img2img"]
    assert [im.size for im in run.result.images] == [(128, 128)]  # each side grows to the next multiple of 64


@pytest.mark.parametrize("title, args, what", [
    ("Outpainting mk2", {"pixels": 32, "mask_blur": 4, "direction": ALL, "noise_q": 1.0, "color_variation": 0.05}, "canvas"),
    ("Poor man's outpainting", {"pixels": 32, "mask_blur": 4, "inpainting_fill": 1, "direction": ALL}, "picture"),
])
def test_a_canvas_past_the_largest_image_is_refused(title, args, what):
    script = OutpaintingMk2() if title == "Outpainting mk2" else PoorMansOutpainting()
    request = ScriptRequest("img2img", params(), InitImages((picture(64, 64),)))
    env = ScriptEnv(max_pixels=lambda: 10_000)  # 64x64 grows to 128x128: 16,384 pixels
    with pytest.raises(ValueError, match=rf"{title} would make a 128x128 {what} \(0\.02 megapixels\); the largest this server takes "
                                         r"is 0\.01 megapixels \(setting limit_image_megapixels\)"):
        script.prepare(request, args, env)
    script.prepare(request, args, ScriptEnv(max_pixels=lambda: 128 * 128))  # just fits


def test_bad_requests_are_refused_naming_the_argument(script_app):
    before = len(script_app.queue.list())
    init = InitImages((picture(64, 64),))
    for title, args in (("Outpainting mk2", ["", 32, 0, [], 1.0, 0.05]), ("Poor man's outpainting", [32, 0, 0, []])):
        with pytest.raises(ValueError, match=r"argument 3 \(Outpainting direction, direction\): choose at least one"):
            script_app.start(title, "img2img", params(), args, init=init)
        with pytest.raises(ValueError, match="needs an init image"):
            script_app.start(title, "img2img", params(), args[:-3] if title == "Outpainting mk2" else args[:1])
    with pytest.raises(ValueError, match="'sideways' is not one of"):
        script_app.start("Outpainting mk2", "img2img", params(), ["", 32, 0, ["sideways"]], init=init)
    with pytest.raises(ValueError, match=r"Pixels to expand, pixels\): 64 is also the tiles' overlap"):
        script_app.start("Poor man's outpainting", "img2img", params(), [64, 0, 0, ALL], init=init)
    with pytest.raises(ValueError, match=r"argument 2 \(Masked content, inpainting_fill\)"):
        script_app.start("Poor man's outpainting", "img2img", params(), [32, 0, 4, ALL], init=init)
    assert len(script_app.queue.list()) == before


def test_the_image_scripts_do_not_import_torch():
    """The registry builds every script at start-up: the image scripts (and the extension API
    they import, which may bring Pillow and numpy) never load torch; the jobs bring it."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from tests.scripts import classic; classic.register(); "
            "import sdext_classic_scripts.scripts.sd_upscale, sdext_classic_scripts.scripts.outpainting_mk_2, "
            "sdext_classic_scripts.scripts.poor_mans_outpainting, sdext_classic_scripts.lib_classic.outpaint_pixels; "
            "print('torch' in sys.modules, 'sdext_classic_scripts.scripts.sd_upscale' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "False True"
