"""A1111's "X/Y/Z plot": one picture for every combination of up to three axes' values (Steps,
CFG Scale, Sampler, Checkpoint name, ...), laid out as a labelled grid; a Z axis makes one
grid per value, side by side under their titles.

Each cell is its own job in the user's lane, the very job a single request with that cell's
settings makes (n_iter and batch_size stay per cell, as in A1111), so progress, previews,
Interrupt and other users' turns work as usual and each cell's picture equals that job's.
The costliest axis (a checkpoint, then a VAE) is the outer loop of the queueing order, so
each checkpoint is loaded once; the grid keeps the X/Y/Z layout whatever the order.
"""

from __future__ import annotations

import itertools
import random
from typing import Any, Callable

from modules.extensions.api import (
    MAX_SEED, GridLabel, QueueScript, ScriptArg, ScriptEnv, ScriptRequest, ScriptResult, annotated_grid, combine_grids,
    fixed_seeds, format_params_line,
)

from ..lib_classic.ranges import join_csv, parse_values
from ..lib_classic.xyz_axes import AxisChoice, Cell, axes_for, value_choices

AXIS_NAMES = ("X", "Y", "Z")
SEED_AXES = ("Seed", "Var. seed")
MAX_GRID_MEGAPIXELS = 200  # A1111's img_max_size_mp default: larger grids are refused before they start


def cell_order(axes: list[AxisChoice]) -> list[tuple[int, int, int]]:
    """The (ix, iy, iz) of every cell in the order to run them: A1111's rule, the costliest axis
    outermost, then the costlier of the other two; Z outermost, then Y, when costs tie."""
    x, y, z = (axis.axis.cost for axis in axes)
    first, second = "z", "y"
    if x > y and x > z:
        first, second = "x", "y" if y > z else "z"
    elif y > x and y > z:
        first, second = "y", "x" if x > z else "z"
    elif z > x and z > y:
        first, second = "z", "x" if x > y else "y"
    third = ({"x", "y", "z"} - {first, second}).pop()
    sizes = {name: len(axis.values) for name, axis in zip("xyz", axes)}
    order = []
    for combo in itertools.product(*(range(sizes[name]) for name in (first, second, third))):
        at = dict(zip((first, second, third), combo))
        order.append((at["x"], at["y"], at["z"]))
    return order


class XyzPlot(QueueScript):
    title = "X/Y/Z plot"

    def args(self, env: ScriptEnv, img2img: bool) -> list[ScriptArg]:
        """A1111 1.10's ui() order, which is its script_args order."""
        labels = tuple(axis.label for axis in axes_for("img2img" if img2img else "txt2img"))
        out = []
        for name, default in zip(AXIS_NAMES, (1, 0, 0)):
            low = name.lower()
            out += [
                ScriptArg(f"{low}_type", f"{name} type", "index", default, choices=labels),
                ScriptArg(f"{low}_values", f"{name} values", "text", ""),
                ScriptArg(f"{low}_values_dropdown", f"{name} values", "multiselect", [], visible=False),
            ]
        return out + [
            ScriptArg("draw_legend", "Draw legend", "checkbox", True),
            ScriptArg("include_lone_images", "Include Sub Images", "checkbox", False),
            ScriptArg("include_sub_grids", "Include Sub Grids", "checkbox", False),
            ScriptArg("no_fixed_seeds", "Keep -1 for seeds", "checkbox", False),
            ScriptArg("vary_seeds_x", "Vary seeds for X", "checkbox", False, info="Use different seeds for images along X axis."),
            ScriptArg("vary_seeds_y", "Vary seeds for Y", "checkbox", False, info="Use different seeds for images along Y axis."),
            ScriptArg("vary_seeds_z", "Vary seeds for Z", "checkbox", False, info="Use different seeds for images along Z axis."),
            ScriptArg("margin_size", "Grid margins (px)", "slider", 0, minimum=0, maximum=500, step=2),
            ScriptArg("csv_mode", "Use text inputs instead of dropdowns", "checkbox", False),
        ]

    def axis_choices(self, env: ScriptEnv, kind: str, type_index: int) -> list[str] | None:
        return value_choices(env, kind, type_index)

    # ---------------------------------------------------------------------------- checking

    def _axis(self, name: str, kind: str, args: dict[str, Any], env: ScriptEnv, rng: random.Random) -> AxisChoice:
        low = name.lower()
        axes = axes_for(kind)
        index = args[f"{low}_type"] or 0
        if not 0 <= index < len(axes):
            raise ValueError(f"X/Y/Z plot: {name} type {index} is not an axis type (0-{len(axes) - 1})")
        axis = axes[index]
        if axis.label == "Nothing":
            return AxisChoice(name, axis, [None], "")
        if axis.apply is None:
            raise ValueError(f"X/Y/Z plot: {name} type '{axis.label}' cannot be used on this server: {axis.missing}.")
        # A1111 reads a picker axis from its dropdown; clients written for older versions send
        # the values as text with an empty dropdown, which is read as text here.
        picked = axis.choices is not None and not args["csv_mode"] and bool(args[f"{low}_values_dropdown"])
        raw = args[f"{low}_values_dropdown"] if picked else args[f"{low}_values"]
        text = join_csv(raw) if picked else raw
        values = parse_values(raw, axis.kind, f"X/Y/Z plot: {name} values ({axis.label})", limit=env.max_jobs())
        if axis.label in SEED_AXES and not args["no_fixed_seeds"]:
            values = [rng.randrange(MAX_SEED) if v == -1 else v for v in values]
        return AxisChoice(name, axis, values, text)

    def prepare(self, request: ScriptRequest, args: dict[str, Any], env: ScriptEnv) -> Callable:
        rng = random.Random()
        axes = [self._axis(name, request.kind, args, env, rng) for name in AXIS_NAMES]
        xs, ys, zs = (axis.values for axis in axes)
        count = len(xs) * len(ys) * len(zs)
        env.check_count(self.title, count)

        # A1111 fixes the seeds once, so every cell shares them
        fixed = {} if args["no_fixed_seeds"] else fixed_seeds(request.params, rng)
        upscalers = env.hires_upscalers()
        cells = {at: self._cell(request, env, axes, at, fixed, args, upscalers)
                 for at in itertools.product(range(len(xs)), range(len(ys)), range(len(zs)))}
        # each cell of the grid is as large as the widest and the tallest picture (hires fix's size where on)
        sizes = [p.hires_size() if getattr(p, "enable_hr", False) else (p.width, p.height) for p, _, _ in cells.values()]
        megapixels = count * max(w for w, _ in sizes) * max(h for _, h in sizes) / 1_000_000
        if megapixels > MAX_GRID_MEGAPIXELS:
            raise ValueError(f"X/Y/Z plot: the grid would be {megapixels:.0f} megapixels; the most is {MAX_GRID_MEGAPIXELS}.")
        order = cell_order(axes)
        return lambda ctx: self._run(ctx, request, axes, cells, order, args)

    def _cell(self, request: ScriptRequest, env: ScriptEnv, axes: list[AxisChoice], at: tuple[int, int, int],
              fixed: dict[str, Any], args: dict[str, Any], upscalers: list[str]):
        base = request.params
        cell = Cell(base.model_dump() | fixed)
        for axis, index in zip(axes, at):
            value = axis.values[index]
            try:
                axis.axis.apply(cell, value, axis.values, env)
            except ValueError as exc:
                raise ValueError(f"X/Y/Z plot: {axis.name} values ({axis.axis.label}): {exc}") from None
        # A1111's "Vary seeds": each cell along the axis gets the next seed.
        ix, iy, iz = at
        width_x = len(axes[0].values) if args["vary_seeds_x"] else 1
        width_y = len(axes[1].values) if args["vary_seeds_y"] else 1
        offset = (ix if args["vary_seeds_x"] else 0) + (iy * width_x if args["vary_seeds_y"] else 0) \
            + (iz * width_x * width_y if args["vary_seeds_z"] else 0)
        if offset and cell.values["seed"] != -1:
            cell.values["seed"] = (cell.values["seed"] + offset) % MAX_SEED
        try:  # checked as a request is, the server's limit_* settings included
            params = env.check_job(type(base).create(upscalers=upscalers, **cell.values))
        except ValueError as exc:
            where = ", ".join(a.axis.format(a.values[i]) or a.name for a, i in zip(axes, at) if a.axis.label != "Nothing")
            raise ValueError(f"X/Y/Z plot: the cell {where} is not a valid request: {exc}") from None
        return params, cell.checkpoint, cell.vae

    # ---------------------------------------------------------------------------- running

    def _run(self, ctx, request: ScriptRequest, axes: list[AxisChoice], cells: dict, order: list, args: dict[str, Any]) -> ScriptResult:
        items = []
        for at in order:
            params, checkpoint, vae = cells[at]
            item: dict[str, Any] = {"params": params}
            if checkpoint is not None:
                item["checkpoint"] = checkpoint
            if vae is not None:
                item["vae"] = vae
            items.append(item)
        ctx.progress(0, len(items), self.title)
        results = dict(zip(order, ctx.run_all(items)))

        out = ScriptResult(request.params, interrupted=ctx.stopped)
        (x, y, z) = axes
        columns, rows = len(x.values), len(y.values)

        def picture(at):
            result = results.get(at)
            return result.images[0] if result is not None and result.images else None

        def first_done(cells_at):
            return next((results[at] for at in cells_at if results.get(at) is not None and results[at].images), None)

        legend = args["draw_legend"]
        column_labels = [[GridLabel(x.axis.format(v))] for v in x.values] if legend else None
        row_labels = [[GridLabel(y.axis.format(v))] for v in y.values] if legend else None
        sub_grids, sub_texts = [], []
        for iz in range(len(z.values)):
            plane = [(ix, iy, iz) for iy in range(rows) for ix in range(columns)]
            pictures = [picture(at) for at in plane]
            first = first_done(plane)
            if first is None:
                continue
            sub_grids.append(annotated_grid(pictures, columns, rows, column_labels, row_labels, margin=int(args["margin_size"])))
            sub_texts.append((iz, self._grid_infotext(first.infotexts[0], axes, args, with_z=False), first))
        if sub_grids:
            # A1111 puts the Z sub-grids in one row under their titles (no margin between them)
            titles = [z.axis.format(z.values[iz]) if legend else "" for iz, _, _ in sub_texts]
            main = combine_grids(sub_grids, titles, 0) if len(sub_grids) > 1 or any(titles) else sub_grids[0]
            # A1111 takes the grid's infotext from the cell at X, Y and Z index 0
            first = first_done([(ix, iy, iz) for iz in range(len(z.values)) for iy in range(rows) for ix in range(columns)])
            infotext = self._grid_infotext(first.infotexts[0], axes, args, with_z=True)
            out.add_grid(main, infotext, ctx.save_grid(main, infotext, first.params), seed=first.seeds[0])
            if args["include_sub_grids"]:
                for grid, (_, text, result) in zip(sub_grids, sub_texts):
                    path = ctx.save_grid(grid, text, result.params) if len(z.values) > 1 else None
                    out.add_grid(grid, text, path, seed=result.seeds[0])
        for iz in range(len(z.values)):  # the cells' pictures in grid order (A1111's index order)
            for iy in range(rows):
                for ix in range(columns):
                    out.add(results.get((ix, iy, iz)), include=args["include_lone_images"])
        return out

    @staticmethod
    def _grid_infotext(cell_infotext: str, axes: list[AxisChoice], args: dict[str, Any], with_z: bool) -> str:
        """The first cell's infotext plus the plot's keys, as A1111 writes them: Script, then each
        axis's type and values (and the seeds it fixed), before Version. Sub-grids lack Z."""
        extras: list[tuple[str, Any]] = [("Script", "X/Y/Z plot")]
        for axis in axes if with_z else axes[:2]:
            if axis.axis.label == "Nothing":
                continue
            extras += [(f"{axis.name} Type", axis.axis.label), (f"{axis.name} Values", axis.text)]
            if axis.axis.label in SEED_AXES and not args["no_fixed_seeds"]:
                extras.append((f"Fixed {axis.name} Values", ", ".join(str(v) for v in axis.values)))
        line = format_params_line(extras)
        head, sep, version = cell_infotext.rpartition(", Version: ")
        if sep:
            return f"{head}, {line}{sep}{version}"
        return f"{cell_infotext}, {line}"
