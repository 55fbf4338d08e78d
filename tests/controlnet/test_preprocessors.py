"""The built-in ControlNet preprocessors: the maps they draw, their names, sliders and API shapes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.controlnet.preprocessors import Preprocessors


@pytest.fixture(scope="module")
def preprocessors(tmp_path_factory) -> Preprocessors:
    return Preprocessors(tmp_path_factory.mktemp("annotators"))


def square(size=(64, 64), box=(16, 16, 47, 47), fill=255, background=0) -> Image.Image:
    img = Image.new("RGB", size, (background,) * 3)
    ImageDraw.Draw(img).rectangle(box, fill=(fill,) * 3)
    return img


def array(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


def test_canny_finds_the_outline_of_a_square_and_nothing_else(preprocessors):
    out = preprocessors.run("canny", square(), resolution=64)
    a = array(out)
    assert out.mode == "RGB" and out.size == (64, 64)
    edge = a[:, :, 0] > 0
    assert (a[:, :, 0] == a[:, :, 1]).all() and set(np.unique(a)) <= {0, 255}
    ys, xs = np.nonzero(edge)
    # every edge pixel lies within a pixel of the square's outline, and each side has edges
    near_outline = (np.minimum(np.abs(xs - 15.5), np.abs(xs - 47.5)) <= 1.5) | (np.minimum(np.abs(ys - 15.5), np.abs(ys - 47.5)) <= 1.5)
    assert near_outline.all()
    assert edge[30, 14:18].any() and edge[30, 46:50].any() and edge[14:18, 30].any() and edge[46:50, 30].any()
    assert not edge[20:44, 20:44].any() and not edge[:10].any()


def test_canny_thresholds_decide_which_edges_count(preprocessors):
    two = square(box=(4, 4, 27, 27), fill=255)
    ImageDraw.Draw(two).rectangle((36, 36, 59, 59), fill=(50, 50, 50))  # a dim square
    default = array(preprocessors.run("canny", two, 64, -1, -1))  # -1: the extension's 100/200
    strict = array(preprocessors.run("canny", two, 64, 250, 255))
    assert default[40:56, 34:38].any()  # the dim square's edge at default thresholds
    assert not strict[40:56, 34:38].any()  # ...is gone at high thresholds
    assert strict[10:20, 2:6].any()  # the bright one stays
    assert np.count_nonzero(strict) < np.count_nonzero(default)


def test_resolution_sets_the_short_side_and_out_of_range_means_the_default(preprocessors):
    wide = square(size=(96, 64), box=(30, 16, 60, 46))
    assert preprocessors.run("canny", wide, resolution=128).size == (192, 128)
    assert preprocessors.run("canny", wide, resolution=-1).size == (768, 512)
    assert preprocessors.run("canny", wide, resolution=10).size == (768, 512)  # below the slider: default
    assert preprocessors.settle("canny", -1, -1, -1) == (512, 100.0, 200.0)
    assert preprocessors.settle("canny", 640, 50, 300) == (640, 50.0, 200.0)


def test_pixel_perfect_resolution_through_the_registry(preprocessors):
    assert preprocessors.pixel_perfect_resolution((512, 256), 768, 512, "Crop and Resize") == 512
    assert preprocessors.pixel_perfect_resolution((512, 256), 768, 512, "Resize and Fill") == 384


def test_invert_turns_black_lines_on_white_into_white_on_black(preprocessors):
    drawing = square(fill=0, background=255)
    out = array(preprocessors.run("invert (from white bg & black line)", drawing))
    assert out.shape == (64, 64, 3)  # no resolution slider: the picture's own size
    assert np.array_equal(out, 255 - array(drawing))


def test_threshold_binarizes_on_the_darkest_channel(preprocessors):
    img = Image.new("RGB", (64, 64), (200, 200, 200))
    ImageDraw.Draw(img).rectangle((0, 0, 31, 63), fill=(200, 90, 200))  # one channel under the level
    out = array(preprocessors.run("binary", img, 64, 127))
    assert (out[:, :30] == 0).all() and (out[:, 34:] == 255).all()
    assert (array(preprocessors.run("threshold", img, 64, 80))[:, :30] == 255).all()


def test_tile_resample_downsamples_by_its_rate(preprocessors):
    img = square(size=(96, 64))
    assert preprocessors.run("tile_resample", img, 512, 2.0).size == (48, 32)
    same = preprocessors.run("tile_resample", img, 512, -1)  # default rate 1: the picture unchanged
    assert np.array_equal(array(same), array(img))


def test_inpaint_puts_the_mask_in_alpha(preprocessors):
    img = square()
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    for name in ("inpaint_only", "inpaint_global_harmonious", "inpaint"):
        out = preprocessors.run(name, img, mask=mask)
        a = array(out)
        assert out.mode == "RGBA" and out.size == (64, 64)
        assert (a[:, :32, 3] == 255).all() and (a[:, 32:, 3] == 0).all()
        assert np.array_equal(a[:, :, :3], array(img))


def test_inpaint_takes_a_canvas_transparency_as_mask_and_refuses_no_mask(preprocessors):
    canvas = np.full((64, 64, 4), 255, np.uint8)
    canvas[:, 40:, 3] = 0  # erased part: repaint it
    out = array(preprocessors.run("inpaint_only", Image.fromarray(canvas, "RGBA")))
    assert (out[:, 40:, 3] == 255).all() and (out[:, :40, 3] == 0).all()
    with pytest.raises(ValueError, match="need a mask"):
        preprocessors.run("inpaint_only", square())


def test_lineart_standard_and_xdog_draw_white_lines_on_black(preprocessors):
    drawing = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(drawing).line((8, 32, 56, 32), fill="black", width=2)
    for name in ("lineart_standard (from white bg & black line)", "scribble_xdog"):
        a = array(preprocessors.run(name, drawing, 64))[:, :, 0]
        assert a[28:37, 12:52].max(axis=0).min() > 100, name  # the line is bright along its length
        assert a[:20].max() < 30 and a[44:].max() < 30, name  # far from it stays black


def test_shuffle_is_repeatable_with_a_seed(preprocessors):
    img = Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), np.uint8))
    one, again, other = (array(preprocessors.run("shuffle", img, seed=s)) for s in (7, 7, 8))
    assert one.shape == (512, 512, 3)  # shuffle works at a fixed 512
    assert np.array_equal(one, again) and not np.array_equal(one, other)


def test_color_grid_is_made_of_64_pixel_cells(preprocessors):
    img = Image.fromarray(np.random.RandomState(1).randint(0, 255, (64, 128, 3), np.uint8))
    a = array(preprocessors.run("t2ia_color_grid", img, 128))
    assert a.shape == (128, 256, 3)
    assert len({tuple(c) for c in a.reshape(-1, 3)}) <= 8  # a 4x2 grid of cells
    assert (a[:64, :64] == a[0, 0]).all()


def test_blur_and_recolor(preprocessors):
    img = square()
    blurred = array(preprocessors.run("blur_gaussian", img, 64, 3.0))
    assert 0 < blurred[16, 31, 0] < 255  # the square's edge is soft
    grey = array(preprocessors.run("recolor_luminance", Image.new("RGB", (8, 8), (0, 0, 0)), 64, 1.0))
    assert (grey == 0).all()
    bright = array(preprocessors.run("recolor_intensity", Image.new("RGB", (8, 8), (255, 255, 255)), 64, 0.5))
    assert (bright == 255).all()


def test_unknown_module_names_the_choices(preprocessors):
    with pytest.raises(ValueError) as err:
        preprocessors.get("cany")
    assert "cany" in str(err.value) and "canny" in str(err.value) and "invert (from white bg & black line)" in str(err.value)


def test_names_labels_and_aliases_resolve_to_one_preprocessor(preprocessors):
    assert preprocessors.get("invert") is preprocessors.get("invert (from white bg & black line)")
    assert preprocessors.get("inpaint") is preprocessors.get("inpaint_global_harmonious")
    assert preprocessors.get("color") is preprocessors.get("t2ia_color_grid")
    assert preprocessors.get("binary") is preprocessors.get("threshold")
    assert preprocessors.get("Canny").name == "canny"
    assert preprocessors.get("").name == preprocessors.get(None).name == "none"
    names, labels = preprocessors.names(), preprocessors.labels()
    assert names[0] == labels[0] == "none" and len(names) == len(labels)
    assert "lineart_standard" in names and "lineart_standard (from white bg & black line)" in labels
    # the extension's order: by priority, then label, descending
    assert names.index("canny") < names.index("invert") < names.index("threshold")


def test_module_detail_has_the_extension_shape(preprocessors):
    detail = preprocessors.module_detail()
    assert set(detail) == set(preprocessors.names())
    assert detail["canny"] == {"model_free": False, "sliders": [
        {"name": "Resolution", "value": 512, "min": 64, "max": 2048, "step": 8},
        {"name": "Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1},
        {"name": "High Threshold", "value": 200, "min": 1, "max": 255, "step": 1}]}
    assert detail["invert"]["sliders"] == []
    assert preprocessors.module_detail(alias_names=True)["invert (from white bg & black line)"]["sliders"] == []


def test_control_types_filter_modules_and_models_by_name(preprocessors):
    models = ["control_sd15_canny [fef5e48e]", "control_v11p_sd15_canny [d14c016b]", "control_v11f1p_sd15_depth [cfd03158]",
              "t2iadapter_color_sd14v1 [8522029d]", "controlnet-union-sdxl [aaaa0000]"]
    types = preprocessors.control_types(models)
    assert list(types)[0] == "All"
    assert types["All"]["module_list"] == preprocessors.labels()
    assert types["All"]["model_list"] == ["None"] + models
    canny = types["Canny"]
    assert canny["module_list"][:3] == ["none", "canny", "invert (from white bg & black line)"]
    assert canny["model_list"] == ["None", "control_sd15_canny [fef5e48e]", "control_v11p_sd15_canny [d14c016b]",
                                   "controlnet-union-sdxl [aaaa0000]"]
    assert canny["default_option"] == "canny"
    assert canny["default_model"] == "control_v11p_sd15_canny [d14c016b]"  # a v1.1 model is preferred
    assert types["T2I-Adapter"]["model_list"] == ["None", "t2iadapter_color_sd14v1 [8522029d]"]
    assert types["Shuffle"]["default_model"] == "None"
