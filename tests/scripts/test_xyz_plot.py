"""X/Y/Z plot: A1111's axis table and arguments, cells as jobs that equal their single jobs, the
labelled grid and its infotext, a checkpoint axis loading each model once, refusals before any job."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import ImageChops

from modules.generation.params import GenerationParams
from modules.jobs.queue import JobStatus
from modules.outputs.infotext import parse_infotext
from modules.scripts.args import parse_args
from modules.scripts.base import ScriptEnv, ScriptRequest
from sdext_classic_scripts.lib_classic.xyz_axes import Cell, axes_for, value_choices
from sdext_classic_scripts.scripts.xyz_grid import XyzPlot, cell_order

T2I = {axis.label: i for i, axis in enumerate(axes_for("txt2img"))}
SIZE = 64


def _same(a, b) -> bool:
    return ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


def _params(**kw):
    return GenerationParams.create(**{"prompt": "a red cat", "width": SIZE, "height": SIZE, "steps": 2, "seed": 11, **kw})


def _args(x=(0, ""), y=(0, ""), z=(0, ""), **flags):
    """A1111 1.10's positional script_args; an axis is (type, text) or (type, text, [picked])."""
    out = []
    for axis in (x, y, z):
        out += [axis[0], axis[1], list(axis[2]) if len(axis) > 2 else []]
    names = ["draw_legend", "include_lone_images", "include_sub_grids", "no_fixed_seeds", "vary_seeds_x", "vary_seeds_y",
             "vary_seeds_z", "margin_size", "csv_mode"]
    defaults = {"draw_legend": True, "include_lone_images": False, "include_sub_grids": False, "no_fixed_seeds": False,
                "vary_seeds_x": False, "vary_seeds_y": False, "vary_seeds_z": False, "margin_size": 0, "csv_mode": False}
    return out + [flags.get(n, defaults[n]) for n in names]


# ------------------------------------------------------------------------------------ the axis table

def test_axis_indices_match_a1111_1_10_per_tab():
    t2i = [a.label for a in axes_for("txt2img")]
    i2i = [a.label for a in axes_for("img2img")]
    assert t2i[:13] == ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps", "CFG Scale", "Prompt S/R",
                        "Prompt order", "Sampler", "Hires sampler", "Checkpoint name", "Negative Guidance minimum sigma"]
    assert i2i[:11] == ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "CFG Scale", "Image CFG Scale", "Prompt S/R",
                        "Prompt order", "Sampler", "Checkpoint name"]
    assert t2i[-1] == i2i[-1] == "Size" and len(t2i) == 42 and len(i2i) == 41
    assert t2i.index("Hires upscaler") == 28 and i2i.index("Cond. Image Mask Weight") == 27 and "Hires upscaler" not in i2i


def test_dropdown_axes_offer_the_servers_choices():
    env = ScriptEnv(checkpoints=lambda: ["b.safetensors", "A.safetensors"], vaes=lambda: ["Automatic", "None", "x.pt"])
    assert value_choices(env, "txt2img", T2I["Checkpoint name"]) == ["A.safetensors", "b.safetensors"]
    assert value_choices(env, "txt2img", T2I["VAE"]) == ["Automatic", "None", "x.pt"]
    assert "Euler a" in value_choices(env, "txt2img", T2I["Sampler"])
    assert value_choices(env, "txt2img", T2I["Steps"]) is None


def test_prompt_search_replace_and_order_follow_a1111():
    sr = axes_for("txt2img")[T2I["Prompt S/R"]]
    cell = Cell({"prompt": "a red cat, red hat", "negative_prompt": "red eyes"})
    sr.apply(cell, "blue", ["red", "blue"], ScriptEnv())
    assert cell.values["prompt"] == "a blue cat, blue hat" and cell.values["negative_prompt"] == "blue eyes"
    with pytest.raises(ValueError, match="'green' is not in the prompt"):
        sr.apply(Cell({"prompt": "a cat", "negative_prompt": ""}), "x", ["green", "x"], ScriptEnv())
    order = axes_for("txt2img")[T2I["Prompt order"]]
    cell = Cell({"prompt": "a cat, in a hat, by night"})
    order.apply(cell, ("by night", "a cat", "in a hat"), [], ScriptEnv())
    assert cell.values["prompt"] == "by night, a cat, in a hat"


def test_prompt_search_replace_refuses_a_huge_prompt_before_building_it():
    import tracemalloc

    sr = axes_for("txt2img")[T2I["Prompt S/R"]]
    cell = Cell({"prompt": "x " * 5000, "negative_prompt": ""})
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="would make a prompt of 5,005,000 characters; the most is 1,000,000"):
            sr.apply(cell, "y" * 1000, ["x", "y" * 1000], ScriptEnv())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 500_000 and cell.values["prompt"] == "x " * 5000
    with pytest.raises(ValueError, match="the first value is empty"):
        sr.apply(Cell({"prompt": "a cat", "negative_prompt": ""}), "dog", ["", "dog"], ScriptEnv())


def test_the_costliest_axis_is_the_outer_loop():
    from sdext_classic_scripts.lib_classic.xyz_axes import AxisChoice

    axes = [AxisChoice("X", axes_for("txt2img")[T2I["Steps"]], [1, 2]), AxisChoice("Y", axes_for("txt2img")[T2I["Checkpoint name"]], ["a", "b"]),
            AxisChoice("Z", axes_for("txt2img")[0], [None])]
    assert cell_order(axes) == [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)]
    axes[0], axes[1] = AxisChoice("X", axes[1].axis, ["a", "b"]), AxisChoice("Y", axes[0].axis, [1, 2])
    assert [at[0] for at in cell_order(axes)] == [0, 0, 1, 1]  # each checkpoint's cells together


def test_wiki_client_args_parse_with_the_rest_defaulted():
    """A1111's wiki example (15 values, written for an older argument list) still reads."""
    script = XyzPlot()
    args = parse_args(script.title, script.args(ScriptEnv(), False), [1, "10,20", [], 0, "", [], 0, "", [], True, True, False, False, 0, False])
    assert args["x_type"] == 1 and args["x_values"] == "10,20" and args["include_lone_images"] is True
    assert args["margin_size"] == 0 and args["csv_mode"] is False and args["vary_seeds_z"] is False


def _prepare(params, args, env=None, kind="txt2img"):
    """The plot's checks alone (nothing is queued): the run it would start, or its ValueError."""
    script = XyzPlot()
    env = env or ScriptEnv()
    parsed = parse_args(script.title, script.args(env, kind == "img2img"), args)
    return script.prepare(ScriptRequest(kind, params), parsed, env)


def test_a_range_over_the_job_limit_is_refused_without_building_it():
    env = ScriptEnv(max_jobs=lambda: 50)
    with pytest.raises(ValueError, match=r"X values \(Steps\): '1-20000000' gives 20,000,000 values.* 50 jobs"):
        _prepare(_params(), _args((T2I["Steps"], "1-20000000")), env)
    with pytest.raises(ValueError, match=r"Y values \(CFG Scale\): '0.0-1.0 \(\+0.00000001\)' gives"):
        _prepare(_params(), _args((T2I["Steps"], "2"), (T2I["CFG Scale"], "0.0-1.0 (+0.00000001)")), env)
    with pytest.raises(ValueError, match=r"X values \(Prompt order\): 9 parts can be put in 9! orders"):
        _prepare(_params(prompt=", ".join("abcdefghi")), _args((T2I["Prompt order"], ", ".join("abcdefghi"))), env)


def test_the_grid_size_check_counts_hires_fix_and_the_widest_and_tallest_cell():
    hires = _params(enable_hr=True, hr_resize_x=2048, hr_resize_y=2048)  # 64 px pictures made 2048 px by hires fix
    with pytest.raises(ValueError, match="the grid would be 252 megapixels; the most is 200"):
        _prepare(hires, _args((T2I["Steps"], "1-60")))
    assert callable(_prepare(_params(), _args((T2I["Steps"], "1-60"))))
    # 64x2048 and 2048x64 cells make 2048x2048 grid cells
    with pytest.raises(ValueError, match="the grid would be 252 megapixels"):
        _prepare(_params(), _args((T2I["Size"], "64x2048, 2048x64"), (T2I["Steps"], "1-30")))


# ------------------------------------------------------------------------------------ on the queue

def test_2x2_cells_equal_their_single_jobs_and_the_grid_is_labelled(script_app):
    params = _params()
    before = len(script_app.queue.list())
    result = script_app.run("X/Y/Z plot", "txt2img", params,
                            _args((T2I["Steps"], "2-3"), (T2I["CFG Scale"], "5, 7.5"), include_lone_images=True))
    assert len(script_app.queue.list()) - before == 4  # one job per cell
    assert result.grids == 1 and len(result.images) == 5
    cells = result.images[1:]
    texts = [parse_infotext(t) for t in result.infotexts[1:]]
    assert [(t["Steps"], t["CFG scale"]) for t in texts] == [("2", "5"), ("3", "5"), ("2", "7.5"), ("3", "7.5")]
    for (steps, cfg), image in zip([(2, 5.0), (3, 5.0), (2, 7.5), (3, 7.5)], cells):
        single = script_app.single(params.model_copy(update={"steps": steps, "cfg_scale": cfg}))
        assert _same(single.images[0], image)
    grid = result.images[0]
    pad_left, pad_top = SIZE * 3 // 4, grid.height - 2 * SIZE
    assert grid.width == pad_left + 2 * SIZE and pad_top > 0
    for index, image in enumerate(cells):
        x, y = pad_left + index % 2 * SIZE, pad_top + index // 2 * SIZE
        assert _same(grid.crop((x, y, x + SIZE, y + SIZE)), image)
    band = np.asarray(grid.crop((pad_left, 0, grid.width, pad_top)).convert("L"))
    assert (band < 128).any()  # the legends
    info = parse_infotext(result.infotexts[0])
    assert info["Script"] == "X/Y/Z plot" and info["X Type"] == "Steps" and info["X Values"] == "2-3"
    assert info["Y Type"] == "CFG Scale" and info["Y Values"] == "5, 7.5" and info["Steps"] == "2" and info["Seed"] == "11"
    assert "Z Type" not in info


def test_2x2x2_makes_a_grid_per_z_value_side_by_side(script_app):
    params = _params()
    result = script_app.run("X/Y/Z plot", "txt2img", params, _args(
        (T2I["Steps"], "2,3"), (T2I["CFG Scale"], "5,7"), (T2I["Seed"], "1,2"), include_sub_grids=True, margin_size=4))
    assert result.grids == 3 and len(result.images) == 3  # main grid, two sub-grids, no lone pictures
    main, first, second = result.images
    assert first.size == second.size == (SIZE * 3 // 4 + 2 * SIZE + 4, first.height)
    assert main.width == 2 * first.width and main.height > first.height  # titled "Seed: 1", "Seed: 2"
    assert not _same(first, second)  # other seeds
    assert [parse_infotext(t)["Seed"] for t in result.infotexts[:3]] == ["1", "1", "2"]
    assert parse_infotext(result.infotexts[0])["Z Type"] == "Seed" and "Z Type" not in parse_infotext(result.infotexts[1])


def test_checkpoint_axis_loads_each_model_once(script_app, monkeypatch):
    models = script_app.models
    loads = []
    real = models._load
    monkeypatch.setattr(models, "_load", lambda info: loads.append(info.title) or real(info))
    other = next(t for t in models.titles() if "tiny-other" in t)
    mine = next(t for t in models.titles() if t != other)
    params = _params()
    result = script_app.run("X/Y/Z plot", "txt2img", params, _args(
        (T2I["Checkpoint name"], "", [other, mine]), (T2I["Steps"], "2,3"), include_lone_images=True))
    # 4 cells, one load each: the checkpoint axis is the outer loop though X is drawn innermost
    assert sorted(loads) == sorted([other, mine])
    names = [parse_infotext(t)["Model"] for t in result.infotexts[1:]]
    assert names[0] == names[2] != names[1] == names[3]
    assert not _same(result.images[1], result.images[2])
    grid_info = parse_infotext(result.infotexts[0])
    assert grid_info["X Type"] == "Checkpoint name" and other in grid_info["X Values"]


def test_seeds_are_fixed_once_unless_kept_at_minus_one(script_app):
    params = _params(seed=-1)
    fixed = script_app.run("X/Y/Z plot", "txt2img", params, _args((T2I["Steps"], "2,3"), include_lone_images=True))
    assert fixed.seeds[1] == fixed.seeds[2]
    kept = script_app.run("X/Y/Z plot", "txt2img", params,
                          _args((T2I["Steps"], "2,3"), include_lone_images=True, no_fixed_seeds=True))
    assert kept.seeds[1] != kept.seeds[2]
    seeds = script_app.run("X/Y/Z plot", "txt2img", _params(), _args((T2I["Seed"], "-1, 5"), include_lone_images=True))
    info = parse_infotext(seeds.infotexts[0])
    assert seeds.seeds[2] == 5 and info["Fixed X Values"] == f"{seeds.seeds[1]}, 5"


def test_bad_values_and_axes_are_refused_before_any_job(script_app):
    before = len(script_app.queue.list())
    params = _params()
    cases = [
        (_args((T2I["Steps"], "2, abc")), "X values (Steps): 'abc'"),
        (_args((T2I["Steps"], "2"), (T2I["CFG Scale"], "5-x")), "Y values (CFG Scale): '5-x'"),
        (_args((T2I["Prompt S/R"], "dog, bird")), "'dog' is not in the prompt"),
        (_args((T2I["Sampler"], "", ["Euler a", "Nope"])), "unknown sampler 'Nope'"),
        (_args((T2I["Steps"], "2, 500")), "Steps: 500 is not a valid request"),
        (_args((T2I["Size"], "64x64, big")), "'big' is not a size"),
        (_args((T2I["FP8 mode"], "Enable")), "'FP8 mode' cannot be used"),
        (_args((T2I["Checkpoint name"], "", ["missing.safetensors"])), "missing.safetensors"),
        (_args((99, "1")), "X type"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError) as error:
            script_app.start("X/Y/Z plot", "txt2img", params, args)
        assert message in str(error.value)
    assert len(script_app.queue.list()) == before


def test_too_many_cells_are_refused(script_app, monkeypatch):
    monkeypatch.setitem(script_app.settings.values, "script_max_jobs", 3)
    before = len(script_app.queue.list())
    with pytest.raises(ValueError, match=r"X/Y/Z plot would queue 4 jobs; the most one run may queue is 3 \(setting script_max_jobs\)"):
        script_app.start("X/Y/Z plot", "txt2img", _params(), _args((T2I["Steps"], "1-2"), (T2I["CFG Scale"], "5, 7")))
    assert len(script_app.queue.list()) == before


def test_every_cell_is_checked_against_the_servers_limits_before_any_job(script_app, monkeypatch):
    from dataclasses import replace

    monkeypatch.setattr(script_app.service, "limits", replace(script_app.service.limits, prompt_characters=12))
    before = len(script_app.queue.list())
    with pytest.raises(ValueError, match=r"the cell Steps: 2, much longer is not a valid request: Prompt length: 17 characters.*limit_prompt_characters"):
        script_app.start("X/Y/Z plot", "txt2img", _params(prompt="a red cat"),
                         _args((T2I["Steps"], "2"), (T2I["Prompt S/R"], "red, much longer")))
    assert len(script_app.queue.list()) == before


def test_prepare_checks_each_cell_as_a_request():
    checked = []

    def check_job(params):
        checked.append((params.steps, params.cfg_scale, params.seed))
        return params

    _prepare(_params(seed=-1), _args((T2I["Steps"], "2, 3"), (T2I["CFG Scale"], "5, 6, 7")), ScriptEnv(check_job=check_job))
    assert sorted(c[:2] for c in checked) == [(s, c) for s in (2, 3) for c in (5.0, 6.0, 7.0)]
    assert len({c[2] for c in checked}) == 1 and checked[0][2] != -1  # the seed drawn once, shared by every cell


def test_interrupt_keeps_the_finished_cells(script_app):
    run = script_app.start("X/Y/Z plot", "txt2img", _params(), _args((T2I["Steps"], "2, 40, 40, 40"), draw_legend=False))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (run.context.children and run.context.children[0].status is JobStatus.DONE):
        time.sleep(0.005)
    run.interrupt()
    assert run.done.wait(300)
    result = run.result
    assert result.interrupted and result.grids == 1
    grid = np.asarray(result.images[0].convert("RGB"))
    assert grid.shape == (SIZE, 4 * SIZE, 3)
    assert grid[:, :SIZE].any() and not grid[:, 3 * SIZE:].any()  # the first cell is there, the last one blank


def test_img2img_denoising_axis_uses_the_init_picture(script_app):
    from PIL import Image

    from modules.generation.params import Img2ImgParams
    from modules.generation.runner import InitImages

    i2i = {axis.label: i for i, axis in enumerate(axes_for("img2img"))}
    picture = Image.new("RGB", (SIZE, SIZE), (200, 40, 40))
    init = InitImages((picture,))
    params = Img2ImgParams.create(prompt="a cat", width=SIZE, height=SIZE, steps=4, seed=3)
    result = script_app.run("X/Y/Z plot", "img2img", params, _args((i2i["Denoising"], "0.25, 0.75"), include_lone_images=True),
                            init=init)
    assert [parse_infotext(t)["Denoising strength"] for t in result.infotexts[1:]] == ["0.25", "0.75"]
    single = script_app.single(params.model_copy(update={"denoising_strength": 0.75}), init)
    assert _same(single.images[0], result.images[2])
    assert not _same(result.images[1], result.images[2])


def test_the_speed_axes_set_the_jobs_own_values():
    for label, field in (("Negative Guidance minimum sigma", "s_min_uncond"), ("Token merging ratio", "token_merging_ratio"),
                         ("Token merging ratio high-res", "token_merging_ratio_hr")):
        axis = axes_for("txt2img")[T2I[label]]
        cell = Cell({"prompt": "a cat"})
        axis.apply(cell, 0.5, [0.0, 0.5], ScriptEnv())
        assert cell.values[field] == 0.5 and GenerationParams.create(**cell.values).model_dump()[field] == 0.5
