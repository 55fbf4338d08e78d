"""Seeds that count up through a run (Prompt matrix's seed per picture, Prompts from file's
"Iterate seed every line", Loopback's seed per loop) must stay seeds a request may carry
(at most 2**32 - 1), since each child job is checked as a request is. A1111 would go on past
that; we cannot, so a random seed is drawn low enough and a given one too high is refused."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from modules.scripts.base import fixed_seeds

if TYPE_CHECKING:
    from modules.generation.params import GenerationParams

LARGEST_SEED = 2**32 - 1  # the seed field's bound


def counted_seeds(params: "GenerationParams", span: int, title: str, what: str,
                  rng: random.Random | None = None) -> dict[str, int]:
    """fixed_seeds(params) for a run whose seeds reach the first seed + `span` (`what` says
    what counts them, for the message); ValueError when a given seed leaves no room for that."""
    fixed = fixed_seeds(params, rng)
    if "seed" in fixed:
        fixed["seed"] %= LARGEST_SEED - span + 1
    elif params.seed + span > LARGEST_SEED:
        raise ValueError(f"{title}: seed {params.seed} goes up by {span} ({what}), past the largest seed {LARGEST_SEED}; "
                         f"use a seed of at most {LARGEST_SEED - span}.")
    return fixed
