"""X/Y/Z plot's axis types, in A1111 1.10's order.

A1111 keeps one list and shows each tab the entries meant for it; the API's x_type is the
position in the tab's list, so the list here keeps every A1111 entry in its place, also the
ones this server cannot apply (Image CFG Scale, FP8 mode, Refiner...): those are refused by
name when chosen, instead of shifting every later index.

An axis applies one value to a Cell, the settings of one picture being built (A1111 applies
X, then Y, then Z to a copy of the request). Values are checked as they are applied, and all
cells are built before any job is queued, so a bad value costs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from modules.extensions.api import FACE_RESTORERS, RNG_SOURCES, read_bool, samplers

from .ranges import format_number

if TYPE_CHECKING:
    from modules.extensions.api import ScriptEnv

# The longest prompt Prompt S/R builds, counted before replacing, so a long value repeated in a
# long prompt cannot take gigabytes; each cell is then held to limit_prompt_characters as a request is.
MAX_REPLACED_CHARACTERS = 1_000_000


@dataclass
class Cell:
    """One picture's settings while the axes are applied: GenerationParams fields, and the
    checkpoint and VAE it runs on (None: the request's)."""

    values: dict[str, Any]
    checkpoint: str | None = None
    vae: str | None = None


Apply = Callable[[Cell, Any, Sequence[Any], "ScriptEnv"], None]


@dataclass(frozen=True)
class Axis:
    """One entry of A1111's axis list. `kind`: how its values read (lib_classic.ranges);
    `legend`: how a value is labelled ("label" = "Steps: 10", "value", "join", "basename",
    "nothing"); `cost`: how slow a change of it is (the costliest axis is the outer loop);
    `choices`: the page's picker; `tab`: None for both tabs; `apply` None: not available here,
    `missing` says why."""

    label: str
    kind: str = "str"
    apply: Apply | None = None
    legend: str = "label"
    cost: float = 0.0
    choices: Callable[["ScriptEnv"], list[str]] | None = None
    tab: str | None = None
    missing: str = ""

    def format(self, value: Any) -> str:
        """The legend of a value, as A1111 writes it."""
        if self.legend == "nothing":
            return ""
        if self.legend == "join":
            return ", ".join(value)
        if self.legend == "basename":
            return os.path.basename(str(value))
        text = format_number(value) if isinstance(value, (int, float)) else str(value)
        return text if self.legend == "value" else f"{self.label}: {text}"


@dataclass(frozen=True)
class AxisChoice:
    """An axis as one run uses it: the type, its values, and the text they came from."""

    name: str  # "X", "Y" or "Z"
    axis: Axis
    values: list = field(default_factory=list)
    text: str = ""


# ---------------------------------------------------------------------------------- appliers

def _field(name: str) -> Apply:
    def apply(cell: Cell, value: Any, values: Sequence[Any], env: "ScriptEnv") -> None:
        cell.values[name] = value
    return apply


def _nothing(cell: Cell, value: Any, values: Sequence[Any], env: "ScriptEnv") -> None:
    pass


def _prompt_sr(cell: Cell, value: str, values: Sequence[str], env: "ScriptEnv") -> None:
    """A1111's Prompt S/R: the first value is searched for, and every value replaces it in the
    prompt and the negative prompt (so the first cell is the prompt as written)."""
    search = values[0]
    prompt, negative = cell.values.get("prompt", ""), cell.values.get("negative_prompt", "")
    if not search:
        raise ValueError("the first value is empty; Prompt S/R replaces its first value with each value in turn, "
                         "so the first value must be a part of the prompt")
    if search not in prompt and search not in negative:
        raise ValueError(f"'{search}' is not in the prompt or the negative prompt; Prompt S/R replaces its first value "
                         "with each value in turn, so the first value must be a part of the prompt")
    for text in (prompt, negative):  # counted before replacing, so a huge result is never built
        length = len(text) + text.count(search) * (len(value) - len(search))
        if length > MAX_REPLACED_CHARACTERS:
            raise ValueError(f"replacing '{search[:40]}' with a {len(value):,}-character value would make a prompt of "
                             f"{length:,} characters; the most is {MAX_REPLACED_CHARACTERS:,}")
    cell.values["prompt"] = prompt.replace(search, value)
    cell.values["negative_prompt"] = negative.replace(search, value)


def _prompt_order(cell: Cell, order: Sequence[str], values: Sequence[Any], env: "ScriptEnv") -> None:
    """A1111's Prompt order: the listed parts of the prompt change places, in the order given,
    the text around them staying where it is."""
    prompt = cell.values.get("prompt", "")
    for token in order:
        if token not in prompt:
            raise ValueError(f"'{token}' is not in the prompt; Prompt order moves parts of the prompt around")
    found = sorted(order, key=prompt.find)  # the parts in the order they stand in the prompt
    pieces, rest = [], prompt
    for token in found:
        at = rest.find(token)
        pieces.append(rest[:at])
        rest = rest[at + len(token):]
    cell.values["prompt"] = "".join(piece + token for piece, token in zip(pieces, order)) + rest


def _sampler(name: str) -> Apply:
    def apply(cell: Cell, value: str, values: Sequence[str], env: "ScriptEnv") -> None:
        found = samplers.find_sampler(value)
        if found is None:
            raise ValueError(f"unknown sampler '{value}'; choose one of: {', '.join(s.name for s in samplers.SAMPLERS)}")
        cell.values[name] = found.name
    return apply


def _schedule(cell: Cell, value: str, values: Sequence[str], env: "ScriptEnv") -> None:
    found = samplers.find_schedule(value)
    if found is None:
        raise ValueError(f"unknown schedule type '{value}'; choose one of: {', '.join(s.label for s in samplers.SCHEDULES)}")
    cell.values["scheduler"] = found.label


def _one_of(value: str, choices: Sequence[str], what: str) -> str:
    for choice in choices:
        if choice.casefold() == value.strip().casefold():
            return choice
    raise ValueError(f"unknown {what} '{value}'; choose one of: {', '.join(choices) or 'none available'}")


def _hires_upscaler(cell: Cell, value: str, values: Sequence[str], env: "ScriptEnv") -> None:
    cell.values["hr_upscaler"] = _one_of(value, env.hires_upscalers(), "hires upscaler")


def _checkpoint(cell: Cell, value: str, values: Sequence[str], env: "ScriptEnv") -> None:
    cell.checkpoint = env.find_checkpoint(value)


def _refiner(cell: Cell, value: str, values: Sequence[str], env: "ScriptEnv") -> None:
    """A1111's "Refiner checkpoint": None turns the refiner off."""
    cell.values["refiner_checkpoint"] = "" if value.strip() in ("", "None", "none") else env.find_checkpoint(value)


def _vae(cell: Cell, value: str, values: Sequence[str], env: "ScriptEnv") -> None:
    if value.strip().casefold() == "auto":
        value = "Automatic"
    cell.vae = _one_of(value, env.vaes(), "VAE")


def _styles(cell: Cell, value: str, values: Sequence[str], env: "ScriptEnv") -> None:
    """A1111 adds the value's styles (comma-separated) to the request's."""
    known = env.styles()
    names = [_one_of(name, known, "style") for name in value.split(",") if name.strip()]
    cell.values["styles"] = (*cell.values.get("styles", ()), *names)


def _face_restore(cell: Cell, value: str, values: Sequence[str], env: "ScriptEnv") -> None:
    """A1111: a restorer's name turns restoring on with it; true/false turn it on or off."""
    word = value.strip().casefold()
    models = {name.casefold(): name for name in FACE_RESTORERS}
    if word in models:
        cell.values.update(restore_faces=True, face_restoration_model=models[word])
    else:
        cell.values["restore_faces"] = _boolean(value, f"true, false, {', '.join(FACE_RESTORERS)}")


def _boolean(value: str, expected: str = "true or false") -> bool:
    try:
        return read_bool(value)
    except ValueError:
        raise ValueError(f"'{value}' is not one of: {expected}") from None


def _boolean_field(name: str) -> Apply:
    def apply(cell: Cell, value: str, values: Sequence[str], env: "ScriptEnv") -> None:
        cell.values[name] = _boolean(value)
    return apply


def _rng(cell: Cell, value: str, values: Sequence[str], env: "ScriptEnv") -> None:
    cell.values["randn_source"] = _one_of(value, RNG_SOURCES, "RNG source")


def _size(cell: Cell, value: str, values: Sequence[str], env: "ScriptEnv") -> None:
    """`WIDTHxHEIGHT`, e.g. 512x768 (A1111's Size axis)."""
    width, sep, height = value.partition("x")
    try:
        if not sep:
            raise ValueError
        cell.values.update(width=int(width.strip()), height=int(height.strip()))
    except ValueError:
        raise ValueError(f"'{value}' is not a size such as 512x768") from None


def _sampler_names(env: "ScriptEnv") -> list[str]:
    return [s.name for s in samplers.SAMPLERS]


def _unavailable(label: str, kind: str, why: str, **extra: Any) -> Axis:
    return Axis(label, kind, None, missing=why, **extra)


NO_PIX2PIX = "instruct-pix2pix models are not supported here"
NO_SETTING = "this server has no such setting"

# A1111 1.10's scripts/xyz_grid.py axis_options, in order; `tab` marks the one-tab entries.
AXES: tuple[Axis, ...] = (
    Axis("Nothing", "str", _nothing, legend="nothing"),
    Axis("Seed", "int", _field("seed")),
    Axis("Var. seed", "int", _field("subseed")),
    Axis("Var. strength", "float", _field("subseed_strength")),
    Axis("Steps", "int", _field("steps")),
    Axis("Hires steps", "int", _field("hr_second_pass_steps"), tab="txt2img"),
    Axis("CFG Scale", "float", _field("cfg_scale")),
    _unavailable("Image CFG Scale", "float", NO_PIX2PIX, tab="img2img"),
    Axis("Prompt S/R", "str", _prompt_sr, legend="value"),
    Axis("Prompt order", "permutations", _prompt_order, legend="join"),
    Axis("Sampler", "str", _sampler("sampler_name"), legend="value", choices=_sampler_names, tab="txt2img"),
    Axis("Hires sampler", "str", _sampler("hr_sampler_name"), choices=_sampler_names, tab="txt2img"),
    Axis("Sampler", "str", _sampler("sampler_name"), legend="value", choices=_sampler_names, tab="img2img"),
    Axis("Checkpoint name", "str", _checkpoint, legend="basename", cost=1.0,
         choices=lambda env: sorted(env.checkpoints(), key=str.casefold)),
    Axis("Negative Guidance minimum sigma", "float", _field("s_min_uncond")),
    Axis("Sigma Churn", "float", _field("s_churn")),
    Axis("Sigma min", "float", _field("s_tmin")),
    Axis("Sigma max", "float", _field("s_tmax")),
    Axis("Sigma noise", "float", _field("s_noise")),
    Axis("Schedule type", "str", _schedule, choices=lambda env: [s.label for s in samplers.SCHEDULES]),
    Axis("Schedule min sigma", "float", _field("sigma_min")),
    Axis("Schedule max sigma", "float", _field("sigma_max")),
    Axis("Schedule rho", "float", _field("rho")),
    Axis("Beta schedule alpha", "float", _field("beta_dist_alpha")),
    Axis("Beta schedule beta", "float", _field("beta_dist_beta")),
    Axis("Eta", "float", _field("eta")),
    Axis("Clip skip", "int", _field("clip_skip")),
    Axis("Denoising", "float", _field("denoising_strength")),
    _unavailable("Initial noise multiplier", "float", NO_SETTING),
    _unavailable("Extra noise", "float", NO_SETTING),
    Axis("Hires upscaler", "str", _hires_upscaler, choices=lambda env: list(env.hires_upscalers()), tab="txt2img"),
    _unavailable("Cond. Image Mask Weight", "float", NO_SETTING, tab="img2img"),
    Axis("VAE", "str", _vae, cost=0.7, choices=lambda env: list(env.vaes())),
    Axis("Styles", "str", _styles, choices=lambda env: list(env.styles())),
    _unavailable("UniPC Order", "int", "the UniPC sampler is not available here", cost=0.5),
    Axis("Face restore", "str", _face_restore, legend="value"),
    Axis("Token merging ratio", "float", _field("token_merging_ratio")),
    Axis("Token merging ratio high-res", "float", _field("token_merging_ratio_hr")),
    Axis("Always discard next-to-last sigma", "str", _boolean_field("always_discard_next_to_last_sigma"),
         choices=lambda env: ["False", "True"]),
    _unavailable("SGM noise multiplier", "str", NO_SETTING),
    Axis("Refiner checkpoint", "str", _refiner, legend="basename", cost=1.0,
         choices=lambda env: ["None", *sorted(env.checkpoints(), key=str.casefold)]),
    Axis("Refiner switch at", "float", _field("refiner_switch_at")),
    Axis("RNG source", "str", _rng, choices=lambda env: list(RNG_SOURCES)),
    _unavailable("FP8 mode", "str", "FP8 weight storage is not available here", cost=0.9),
    Axis("Size", "str", _size),
)


def axes_for(kind: str) -> list[Axis]:
    """The axis list a tab ("txt2img" or "img2img") shows; x_type is an index into it."""
    return [axis for axis in AXES if axis.tab in (None, kind)]


def value_choices(env: "ScriptEnv", kind: str, index: int) -> list[str] | None:
    """The page's picker for axis `index` of that tab: its choices, or None (typed values)."""
    axes = axes_for(kind)
    if not 0 <= index < len(axes) or axes[index].choices is None:
        return None
    return axes[index].choices(env)
