"""How much work one request may ask for, so that one user cannot hold a shared worker.

A 60 kB prompt of 4000 `AND` parts once took a minute and 1.7 GB for a 64-px picture; a job of
100 batches of 8 at 2048 px and 150 steps would hold a GPU for a day. Each bound is a setting
(Settings > Limits, config.json's `limit_*` keys), checked when a job is submitted, cheapest
first, and a request over one is refused with a message that names the limit and the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Callable

from modules.generation.extra_networks import LORA_KINDS, parse_extra_networks
from modules.generation.prompt_parser import get_learned_conditioning_prompt_schedules, split_and, strip_comments

PROMPT_FIELDS = {"prompt": "Prompt", "negative_prompt": "Negative prompt", "hr_prompt": "Hires prompt", "hr_negative_prompt": "Hires negative prompt"}


@dataclass(frozen=True)
class WorkLimits:
    """The bounds; each field is config.json's `limit_<field>`. 0 turns a bound off."""

    prompt_characters: int = 32_768
    and_parts: int = 32
    schedule_entries: int = 500
    prompt_tokens: int = 4_000
    loras_per_prompt: int = 20
    megapixel_steps: int = 100_000
    image_megapixels: float = 50.0  # a 48 MP phone photo fits; Pillow's own bomb guard is at 89 MP

    def updated(self, settings: dict) -> "WorkLimits":
        """These limits with the `limit_*` keys of `settings` (a settings change) applied."""
        changed = {f.name: settings[f"limit_{f.name}"] for f in fields(self) if f"limit_{f.name}" in settings}
        return replace(self, **changed) if changed else self

    @property
    def max_pixels(self) -> int | None:
        """The largest upload, in pixels, or None for no bound of ours (Pillow's still holds)."""
        return int(self.image_megapixels * 1_000_000) if self.image_megapixels > 0 else None

    def check(self, params, count_tokens: Callable[[str], int] | None = None) -> None:
        """Raise ValueError naming the first bound `params` (styles already applied) exceeds.
        `count_tokens` counts one plain prompt's tokens; without it tokens are not checked."""
        self._check_size(params)
        texts: list[str] = []
        entries = 0
        for name, label in PROMPT_FIELDS.items():
            prompt = getattr(params, name, "") or ""
            if not prompt:
                continue
            self._over("prompt_characters", len(prompt), f"{label} length", "characters")
            plain, calls, _ = parse_extra_networks(strip_comments(prompt))  # as the job reads it: tags are not text
            self._over("loras_per_prompt", sum(call.kind in LORA_KINDS for call in calls), f"{label}: LoRAs", "LoRA tags")
            parts = [plain] if "negative" in name else [text for text, _ in split_and(plain)]  # negatives have no AND
            self._over("and_parts", len(parts), f"{label}: AND parts", "parts")
            schedules = get_learned_conditioning_prompt_schedules(parts, self._steps(params, name))
            entries += sum(len(schedule) for schedule in schedules)
            self._over("schedule_entries", entries, "Prompt editing and alternation", "schedule entries")
            texts.extend(text for schedule in schedules for _, text in schedule)
        distinct = list(dict.fromkeys(texts))
        # A byte-level BPE token covers at least one UTF-8 byte: short prompts need no tokenizer.
        if count_tokens is not None and self.prompt_tokens > 0 and sum(len(t.encode("utf-8")) for t in distinct) > self.prompt_tokens:
            tokens = sum(count_tokens(text) for text in distinct)
            self._over("prompt_tokens", tokens, "All prompts together", "tokens")

    def _check_size(self, params) -> None:
        work = params.width * params.height * params.steps  # img2img runs fewer at low strength: this is its bound
        if getattr(params, "enable_hr", False):
            hr_width, hr_height = params.hires_size()
            work += hr_width * hr_height * (params.hr_second_pass_steps or params.steps)
        total = math.ceil(params.batch_size * params.n_iter * work / 1_000_000)
        if self.megapixel_steps and total > self.megapixel_steps:
            raise ValueError(
                f"This job asks for {total:,} megapixel-steps (batch size {params.batch_size} x batch count {params.n_iter} x steps x "
                f"pixels, hires fix included), over this server's limit of {self.megapixel_steps:,} (setting 'limit_megapixel_steps'): "
                "use fewer images, steps or pixels per job.")

    @staticmethod
    def _steps(params, name: str) -> int:
        return (params.hr_second_pass_steps or params.steps) if name.startswith("hr_") else params.steps

    def _over(self, limit: str, value: int, what: str, unit: str) -> None:
        bound = getattr(self, limit)
        if bound and value > bound:
            raise ValueError(f"{what}: {value:,} {unit}, over this server's limit of {bound:,} (setting 'limit_{limit}').")
