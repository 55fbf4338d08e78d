"""What the UNet is conditioned on at each sampling step: A1111's prompt editing,
alternation and AND composition on top of the prompt encoder.

A prompt is split on AND into weighted parts; each part, and the negative prompt, becomes a
schedule of plain prompts (`[from:to:when]`, `[a|b]`), each valid up to a step. At every
step the runner asks for the batch of embeddings that applies then: uncond first, then one
block per part, all padded to the same number of chunks so they run as one UNet batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from modules.generation.prompt_parser import get_learned_conditioning_prompt_schedules, schedule_index, split_and
from modules.generation.text_encoding import Conditioning, EncodingOptions, PromptEncoder, pad_chunks

Schedule = tuple[tuple[int, str], ...]  # (last step it applies to, plain prompt)


@dataclass(frozen=True)
class ScheduledPrompts:
    """One pass's prompt and negative prompt as schedules; `parts` are AND's (weight, schedule)."""

    parts: tuple[tuple[float, Schedule], ...]
    negative: Schedule

    @classmethod
    def build(cls, prompt: str, negative: str, steps: int, hires_steps: int | None = None,
              use_old_scheduling: bool = False) -> "ScheduledPrompts":
        """`steps` is the first pass's step count; for the hires pass also give `hires_steps`
        (A1111's timeline: fractions above 1 and step numbers past `steps` reach into it)."""

        def schedule(text: str) -> Schedule:
            entries = get_learned_conditioning_prompt_schedules([text], steps, hires_steps, use_old_scheduling)[0]
            return tuple((int(end), str(t)) for end, t in entries)

        parts = tuple((float(weight), schedule(text)) for text, weight in split_and(prompt))
        return cls(parts, schedule(negative))

    @property
    def plain(self) -> bool:
        """One part of weight 1: classic CFG, nothing to combine."""
        return len(self.parts) == 1 and self.parts[0][0] == 1.0


class StepConditioning:
    """Embeddings per sampling step for one pass and batch, built once per distinct
    combination of schedule entries (most prompts have just one)."""

    def __init__(self, encoder: PromptEncoder, prompts: ScheduledPrompts, options: EncodingOptions, batch: int,
                 with_uncond: bool, state: Any = None):
        self.encoder = encoder
        self.prompts = prompts
        self.options = options
        self.batch = batch
        self.with_uncond = with_uncond
        self.state = state
        self._built: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}

    @property
    def weights(self) -> list[float]:
        return [w for w, _ in self.prompts.parts]

    def at(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(embeds [blocks * batch, tokens, D], pooled or None) for 0-based sampling step `step`;
        blocks are [uncond,] part 1, part 2, ..."""
        picks = [s[schedule_index(s, step)][1] for _, s in self.prompts.parts]
        negative = self.prompts.negative[schedule_index(self.prompts.negative, step)][1] if self.with_uncond else None
        key = (negative, *picks)
        built = self._built.get(key)
        if built is None:
            conds = [self.encoder.encode(t, self.options, state=self.state) for t in picks]
            if negative is not None:
                conds.insert(0, self.encoder.encode(negative, self.options, negative=True, state=self.state))
            built = self._batch(conds)
            self._built[key] = built
        return built

    def _batch(self, conds: list[Conditioning]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """AND's parts are brought to one length by repeating each one's last vector (A1111's
        stacking); cond and uncond then by appending the empty prompt's chunk (A1111's
        pad_cond_uncond), so everything runs as one UNet batch."""
        parts = conds[1:] if self.with_uncond else conds
        longest = max(c.embeds.shape[1] for c in parts)
        stacked = [_repeat_last(c.embeds, longest) for c in parts]
        if self.with_uncond:
            fillers = [self.encoder.empty_chunk(c, self.options, self.state) for c in (conds[0], parts[0])]
            uncond, *stacked = pad_chunks([conds[0].embeds, *stacked], [fillers[0], *[fillers[1]] * len(stacked)])
            stacked = [uncond, *stacked]
        embeds = torch.cat([e.repeat(self.batch, 1, 1) for e in stacked])
        if conds[0].pooled is None:
            return embeds, None
        return embeds, torch.cat([c.pooled.repeat(self.batch, 1) for c in conds])


def _repeat_last(embeds: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - embeds.shape[1]
    return torch.cat([embeds, embeds[:, -1:].repeat(1, missing, 1)], dim=1) if missing else embeds


def combine(pred: torch.Tensor, weights: list[float], cfg_scale: float, with_uncond: bool) -> torch.Tensor:
    """One noise prediction from the UNet's blocks: classic CFG for one part, A1111's
    composable diffusion for AND (uncond + cfg * sum of weight * (part - uncond))."""
    blocks = pred.chunk(len(weights) + (1 if with_uncond else 0))
    if not with_uncond:  # distilled models without CFG: the parts' weighted mean
        return blocks[0] if len(blocks) == 1 else sum(w * b for w, b in zip(weights, blocks)) / sum(weights)
    uncond, parts = blocks[0], blocks[1:]
    delta = sum(w * (part - uncond) for w, part in zip(weights, parts))
    return uncond + cfg_scale * delta
