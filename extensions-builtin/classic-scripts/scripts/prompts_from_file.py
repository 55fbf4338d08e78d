"""A1111's "Prompts from file or textbox": one job per non-empty line. A line is a prompt, or,
when it starts with `--`, A1111's options line (`--prompt "a cat" --steps 10 --seed 5 ...`,
split as a shell would). The line's prompts go before or after the request's; its other
options replace the request's for that job.

Unlike A1111, which quietly uses a line it cannot read as a prompt, a bad options line is
refused before any job runs, naming its line number and the option. Options that would let a
client pick where the server writes (`--outpath_samples`, `--outpath_grids`) are refused too.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any, Callable

from modules.extensions.api import QueueScript, ScriptArg, ScriptEnv, ScriptRequest, ScriptResult, counted_seeds, read_bool, samplers

POSITIONS = ("start", "end")
TEXT_OPTIONS = ("prompt", "negative_prompt")  # take every word up to the next option, as A1111
INT_OPTIONS = ("seed", "subseed", "seed_resize_from_h", "seed_resize_from_w", "sampler_index", "batch_size", "n_iter", "steps",
               "width", "height")
FLOAT_OPTIONS = ("subseed_strength", "cfg_scale", "denoising_strength")  # denoising_strength: ours, not A1111's
BOOL_OPTIONS = ("restore_faces", "tiling", "do_not_save_samples", "do_not_save_grid")
STRING_OPTIONS = ("sd_model", "styles", "sampler_name", "scheduler", "prompt_for_display")  # scheduler: ours
REFUSED_OPTIONS = ("outpath_samples", "outpath_grids")
KNOWN_OPTIONS = (*TEXT_OPTIONS, *INT_OPTIONS, *FLOAT_OPTIONS, *BOOL_OPTIONS, *STRING_OPTIONS)


def parse_options(line: str) -> dict[str, Any]:
    """A1111's options line as {option: value}; ValueError naming the option that is wrong."""
    try:
        words = shlex.split(line)
    except ValueError as exc:  # an unclosed quote
        raise ValueError(f"cannot be split into options ({exc})") from None
    options: dict[str, Any] = {}
    pos = 0
    while pos < len(words):
        word = words[pos]
        if not word.startswith("--"):
            raise ValueError(f"expected an option starting with '--', got {word!r}")
        name = word[2:]
        if name in REFUSED_OPTIONS:
            raise ValueError(f"{word} is not accepted: the server decides where pictures are saved")
        if name not in KNOWN_OPTIONS:
            raise ValueError(f"unknown option {word}. Options: {', '.join('--' + o for o in (*KNOWN_OPTIONS, *REFUSED_OPTIONS))}")
        if pos + 1 >= len(words):
            raise ValueError(f"{word} needs a value")
        if name in TEXT_OPTIONS:
            end = pos + 2
            while end < len(words) and not words[end].startswith("--"):
                end += 1
            options[name] = " ".join(words[pos + 1:end])
            pos = end
            continue
        options[name] = _convert(name, words[pos + 1])
        pos += 2
    return options


def _convert(name: str, text: str) -> Any:
    try:
        if name in INT_OPTIONS:
            return int(text)
        if name in FLOAT_OPTIONS:
            return float(text)
    except ValueError:
        kind = "a whole number" if name in INT_OPTIONS else "a number"
        raise ValueError(f"--{name} needs {kind}, got {text!r}") from None
    if name in BOOL_OPTIONS:
        try:
            return read_bool(text)
        except ValueError:
            raise ValueError(f"--{name} needs true or false, got {text!r}") from None
    if name == "sampler_name":  # also A1111's older combined names, "DPM++ 2M Karras"
        try:
            samplers.resolve(text)
        except ValueError as exc:
            raise ValueError(f"--sampler_name: {exc}") from None
    if name == "scheduler" and samplers.find_schedule(text) is None:
        raise ValueError(f"--scheduler: unknown schedule type {text!r}. Choose one of: {', '.join(s.label for s in samplers.SCHEDULES)}")
    return text


@dataclass
class Line:
    """One line of the list: its number in the text (from 1) and its options."""

    number: int
    options: dict[str, Any] = field(default_factory=dict)


def read_lines(text: str) -> list[Line]:
    """The non-empty lines, each as options (a plain line is {"prompt": line}). A line is read as
    options when it starts with `--`; ValueError names the line."""
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("--"):
            try:
                lines.append(Line(number, parse_options(line)))
            except ValueError as exc:
                raise ValueError(f"Prompts from file: line {number}: {exc}") from None
        else:
            lines.append(Line(number, {"prompt": line}))
    return lines


def joined(base: str, extra: str | None, position: str) -> str:
    """A line's prompt with the request's (A1111: joined by a space; either alone when the other is empty)."""
    if extra is None:
        return base
    if not extra or not base:
        return extra
    return f"{extra} {base}" if position == "start" else f"{base} {extra}"


@dataclass
class Child:
    """One line's job: its parameters and the job keywords that differ from the request's."""

    number: int
    params: Any
    keywords: dict[str, Any] = field(default_factory=dict)


def plan(request: ScriptRequest, lines: list[Line], env: ScriptEnv, iterate: bool, same_seed: bool, position: str) -> list[Child]:
    """Each line's job, checked now as a request is, the server's limits too (ValueError naming
    the line). Seeds as A1111: with "Iterate seed every line" the seed goes up by batch size x
    batch count after each line; with either box a random seed (-1) is fixed once, so lines
    share it or count up from it (the variation seed is not fixed, as in A1111)."""
    base = request.params
    step = base.batch_size * base.n_iter if iterate else 0
    seed = base.seed
    if iterate or same_seed:
        seed = counted_seeds(base, step * (len(lines) - 1), "Prompts from file", "Iterate seed every line").get("seed", seed)
    children = []
    for line in lines:
        opts = dict(line.options)
        keywords: dict[str, Any] = {}
        values = base.model_dump()
        values["seed"] = seed
        for name in ("prompt_for_display", "do_not_save_grid"):  # no grid is made; the display prompt is the prompt
            opts.pop(name, None)
        if "sd_model" in opts:
            try:
                keywords["checkpoint"] = env.find_checkpoint(opts.pop("sd_model"))
            except ValueError as exc:
                raise ValueError(f"Prompts from file: line {line.number}: --sd_model: {exc}") from None
        if opts.pop("do_not_save_samples", False):
            keywords["save"] = False
        if "sampler_index" in opts:
            index = opts.pop("sampler_index")
            if not 0 <= index < len(samplers.SAMPLERS):
                raise ValueError(f"Prompts from file: line {line.number}: --sampler_index {index} is outside 0-{len(samplers.SAMPLERS) - 1}")
            values["sampler_name"] = samplers.SAMPLERS[index].name
        if "styles" in opts:
            values["styles"] = tuple(s.strip() for s in opts.pop("styles").split(",") if s.strip())
        values["prompt"] = joined(base.prompt, opts.pop("prompt", None), position)
        values["negative_prompt"] = joined(base.negative_prompt, opts.pop("negative_prompt", None), position)
        values.update(opts)
        try:  # fields named by their labels; then the limit_* settings (size x steps x batches, prompt length, tokens)
            params = env.check_job(type(base).create(env.hires_upscalers(), **values))
        except ValueError as exc:
            raise ValueError(f"Prompts from file: line {line.number}: {exc}") from None
        children.append(Child(line.number, params, keywords))
        seed += step
    return children


class PromptsFromFile(QueueScript):
    title = "Prompts from file or textbox"

    def args(self, env: ScriptEnv, img2img: bool) -> list[ScriptArg]:
        # A1111's script_args are the first four; the upload (not one of A1111's arguments, it
        # only fills the textbox there) comes last, so positional lists from A1111 clients fit.
        return [
            ScriptArg("checkbox_iterate", "Iterate seed every line", "checkbox", False),
            ScriptArg("checkbox_iterate_batch", "Use same random seed for all lines", "checkbox", False),
            ScriptArg("prompt_position", "Insert prompts at the", "choice", "start", choices=POSITIONS),
            ScriptArg("prompt_txt", "List of prompt inputs", "textarea", ""),
            ScriptArg("file", "Upload prompt inputs", "file", None, info="Its lines replace the textbox's."),
        ]

    def prepare(self, request: ScriptRequest, args: dict[str, Any], env: ScriptEnv) -> Callable:
        text = args["file"] if args.get("file") else args["prompt_txt"]
        count = sum(1 for line in (text or "").splitlines() if line.strip())  # counted before any line is parsed
        if not count:
            raise ValueError("Prompts from file: the list of prompt inputs is empty.")
        env.check_count(self.title, count, "jobs (one per line)")
        lines = read_lines(text)
        children = plan(request, lines, env, args["checkbox_iterate"], args["checkbox_iterate_batch"], args["prompt_position"])

        def run(ctx) -> ScriptResult:
            ctx.progress(0, len(children), "Prompts from file")
            results = ctx.run_all([{"params": c.params, **c.keywords} for c in children])
            out = ScriptResult(request.params, interrupted=ctx.stopped)
            for result in results:
                out.add(result)
            return out

        return run
