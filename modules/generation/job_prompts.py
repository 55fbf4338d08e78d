"""A job's prompts made ready for the core: comments stripped, extra-network tags taken out
and resolved to LoRA files, and what the infotext must say about LoRAs, embeddings and
emphasis. Anything the user asked for that cannot be honoured becomes a readable warning,
and the rest of the prompt still generates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable

from modules.generation.extra_networks import lora_multipliers, parse_extra_networks
from modules.generation.prompt_parser import get_learned_conditioning_prompt_schedules, split_and, strip_comments

if TYPE_CHECKING:
    from modules.models.lora import LoraFile, LoraLibrary

LORA_KINDS = ("lora", "lyco")


@dataclass(frozen=True)
class LoraUse:
    """One `<lora:…>` tag, resolved: the file, its text-encoder and UNet multipliers, and the
    name as written (what `Lora hashes` shows)."""

    file: "LoraFile"
    te: float
    unet: float
    mentioned: str


@dataclass(frozen=True)
class PassText:
    prompt: str  # ready for the encoder: no comments, no extra-network tags
    negative: str
    loras: tuple[LoraUse, ...] = ()


@dataclass
class JobPrompts:
    first: PassText
    hires: PassText | None = None
    warnings: list[str] = field(default_factory=list)
    embeddings: list[str] = field(default_factory=list)  # textual inversions the prompts use
    applied: set = field(default_factory=set)  # paths of the LoRAs that took effect, in any pass
    skipped_uncond: bool = False  # NGMS left out the negative prompt at least once (A1111 records NGMS only then)
    refiner: str | None = None  # the refiner's "name [hash]" once it took over in a pass (A1111 records Refiner only then)

    def loras(self) -> list[LoraUse]:
        seen, out = set(), []
        for use in (*self.first.loras, *(self.hires.loras if self.hires else ())):
            if use.file.path not in seen:
                seen.add(use.file.path)
                out.append(use)
        return out

    def texts(self) -> list[str]:
        parts = [self.first.prompt, self.first.negative]
        if self.hires is not None:
            parts += [self.hires.prompt, self.hires.negative]
        return parts


def pass_text(prompt: str, negative: str, library: "LoraLibrary | None", warnings: list[str], networks: bool = True) -> PassText:
    """One pass's prompts with their LoRA tags resolved; unknown or malformed tags add a
    warning and are dropped (never sent to CLIP as text). `networks=False` (the API's
    disable_extra_networks) removes the tags without applying them, as A1111 does."""
    prompt, calls, bad = parse_extra_networks(strip_comments(prompt))
    negative, negative_calls, bad_negative = parse_extra_networks(strip_comments(negative))
    if not networks:
        return PassText(prompt, negative)
    add_notes(warnings, bad + bad_negative)
    if negative_calls:
        add_notes(warnings, [f"Extra networks in the negative prompt are ignored: {_tag(c)}" for c in negative_calls])
    uses: list[LoraUse] = []
    for call in calls:
        if call.kind not in LORA_KINDS:
            add_notes(warnings, [f"Extra network type '{call.kind}' is not supported: {_tag(call)} was ignored."])
            continue
        file = _find(library, call.name)
        if file is None:
            add_notes(warnings, [f"LoRA '{call.name}' not found in models/Lora: {_tag(call)} was ignored."])
            continue
        try:
            te, unet = lora_multipliers(call)
        except ValueError as exc:
            add_notes(warnings, [f"{_tag(call)}: {exc}"])
            continue
        uses.append(LoraUse(file, te, unet, call.name))
    return PassText(prompt, negative, tuple(uses))


def _find(library: "LoraLibrary | None", name: str) -> "LoraFile | None":
    """A LoRA by name; a name not in the listing rescans the folder once (a file just copied in)."""
    if library is None:
        return None
    found = library.find(name)
    if found is None:
        library.refresh()
        found = library.find(name)
    return found


def _tag(call) -> str:
    args = [call.name, *call.positional, *(f"{k}={v}" for k, v in call.named)]
    return f"<{call.kind}:{':'.join(args)}>"


def add_notes(notes: list[str], new: Iterable[str]) -> None:
    """Append each note not already there (a warning repeated per batch or pass is said once)."""
    for text in new:
        if text not in notes:
            notes.append(text)


def infotext_extras(prompts: JobPrompts, lora_hash: Callable[["LoraFile"], str | None], embeddings_used: Iterable[tuple[str, str | None]],
                    emphasis: str) -> list[tuple[str, str | None]]:
    """A1111's `Emphasis` (only when not Original and the prompt has brackets), `Lora hashes`
    and `TI hashes` ("name: shorthash, …"; names lose ':' and ',' as A1111 strips them)."""

    def clean(name: str) -> str:
        return name.replace(":", "").replace(",", "")

    brackets = any(c in text for text in prompts.texts() for c in "([")
    loras = [f"{clean(u.mentioned)}: {h}" for u in prompts.loras() if (h := lora_hash(u.file))]
    tis = [f"{clean(name)}: {h}" for name, h in embeddings_used if h]
    return [
        ("Emphasis", emphasis if emphasis != "Original" and brackets else None),
        ("Lora hashes", ", ".join(loras) or None),
        ("TI hashes", ", ".join(tis) or None),
    ]


def token_count(prompt: str, count: Callable[[str], int], steps: int = 20, negative: bool = False) -> tuple[int, int]:
    """A1111's counter next to the prompt box: the longest of the plain prompts the schedules
    give (after tags and comments are removed), as (tokens, chunk capacity: 75 per chunk)."""
    text, _, _ = parse_extra_networks(strip_comments(prompt))
    try:
        parts = [text] if negative else [t for t, _ in split_and(text)]
        schedules = get_learned_conditioning_prompt_schedules(parts, steps)
        texts = [t for schedule in schedules for _, t in schedule]
    except Exception:  # a prompt being typed may be half-written: count it as it stands
        texts = [text]
    tokens = max((count(t) for t in texts), default=0)
    return tokens, max(math.ceil(tokens / 75), 1) * 75
