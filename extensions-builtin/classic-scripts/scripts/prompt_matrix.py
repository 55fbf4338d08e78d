"""A1111's "Prompt matrix": the prompt (or the negative prompt) split on `|` into a fixed first
part and optional parts; one picture for every combination of the optional parts, and a grid
whose column and row labels show which parts each picture has (absent ones struck through).

Combination i holds optional part n when bit n of i is set, so picture 0 is the first part
alone and the last has every part. The first half of the optional parts (rounded up) label
the columns, the rest the rows, so the pictures fill the grid row by row in that order.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable

from modules.extensions.api import GridLabel, QueueScript, ScriptArg, ScriptEnv, ScriptRequest, ScriptResult, annotated_grid, counted_seeds

PROMPT_TYPES = ("positive", "negative")
DELIMITERS = MappingProxyType({"comma": ", ", "space": " "})


def split_parts(text: str) -> list[str]:
    """The first (fixed) part and the optional parts, as A1111 splits them."""
    return text.split("|")


def combinations(parts: list[str], put_at_start: bool, delimiter: str) -> list[str]:
    """Every prompt of the matrix, in A1111's order (bit n of the index selects optional part
    n). The fixed part is kept as written; optional parts lose surrounding spaces and commas."""
    base, optional = parts[0], parts[1:]
    prompts = []
    for number in range(2 ** len(optional)):
        chosen = [text.strip().strip(",") for n, text in enumerate(optional) if number & (1 << n)]
        prompts.append(delimiter.join(chosen + [base] if put_at_start else [base] + chosen))
    return prompts


def grid_shape(optional_count: int) -> tuple[int, int]:
    """(columns, rows): the first ceil(n/2) optional parts vary along a row, the rest down a column."""
    across = (optional_count + 1) // 2
    return 2 ** across, 2 ** (optional_count - across)


def grid_labels(parts: list[str]) -> tuple[list[list[Any]], list[list[Any]]]:
    """Column and row labels: for each column (row), every part on that axis, active where the
    column's (row's) pictures hold it."""
    optional = [p.strip() for p in parts[1:]]
    across = (len(optional) + 1) // 2
    horizontal, vertical = optional[:across], optional[across:]

    def labels(texts: list[str]) -> list[list[GridLabel]]:
        return [[GridLabel(t, active=bool(pos & (1 << i))) for i, t in enumerate(texts)] for pos in range(2 ** len(texts))]

    return labels(horizontal), labels(vertical)


class PromptMatrix(QueueScript):
    title = "Prompt matrix"

    def args(self, env: ScriptEnv, img2img: bool) -> list[ScriptArg]:
        return [
            ScriptArg("put_at_start", "Put variable parts at start of prompt", "checkbox", False),
            ScriptArg("different_seeds", "Use different seed for each picture", "checkbox", False),
            ScriptArg("prompt_type", "Select prompt", "choice", "positive", choices=PROMPT_TYPES),
            ScriptArg("variations_delimiter", "Select joining char", "choice", "comma", choices=tuple(DELIMITERS)),
            ScriptArg("margin_size", "Grid margins (px)", "slider", 0, minimum=0, maximum=500, step=2),
        ]

    def prepare(self, request: ScriptRequest, args: dict[str, Any], env: ScriptEnv) -> Callable:
        params = request.params
        negative = args["prompt_type"] == "negative"
        parts = split_parts(params.negative_prompt if negative else params.prompt)
        # Counted before any prompt is built: 40 optional parts would be 2**40 prompts.
        env.check_count(self.title, 2 ** (len(parts) - 1), "pictures")
        prompts = combinations(parts, args["put_at_start"], DELIMITERS[args["variations_delimiter"]])
        # A1111 fixes the seed (and the variation seed) once, so every picture shares them.
        step = 1 if args["different_seeds"] else 0
        fixed = counted_seeds(params, step * (len(prompts) - 1), self.title, "one per picture")
        seed = fixed.get("seed", params.seed)
        field = "negative_prompt" if negative else "prompt"
        children = []
        for i, text in enumerate(prompts):
            child = params.model_copy(update={**fixed, "n_iter": 1, "batch_size": 1, field: text, "seed": seed + i * step})
            try:
                children.append(env.check_job(child))
            except ValueError as exc:
                shown = text if len(text) <= 60 else text[:60] + "..."
                raise ValueError(f"Prompt matrix: picture {i + 1} ({field.replace('_', ' ')} {shown!r}): {exc}") from None
        columns, rows = grid_shape(len(parts) - 1)
        margin = int(args["margin_size"])

        def run(ctx) -> ScriptResult:
            ctx.progress(0, len(children), "Prompt matrix")
            results = ctx.run_all([{"params": p} for p in children])
            out = ScriptResult(params, interrupted=ctx.stopped)
            for result in results:
                out.add(result)
            if len(out.images) == len(children) and not ctx.stopped:
                column_labels, row_labels = grid_labels(parts)
                grid = annotated_grid(out.images, columns, rows, column_labels, row_labels, margin=margin)
                infotext = out.infotexts[0]
                path = ctx.save_grid(grid, infotext, children[0])
                out.add_grid(grid, infotext, path, seed=out.seeds[0])
            return out

        return run
