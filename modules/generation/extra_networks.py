"""A1111 extra-network tags (``<lora:name:0.8>``, ``<hypernet:name:1>``, ...): find them, take them out of the prompt.

The tags never reach the text encoder: ``parse_extra_networks`` returns the prompt without them plus one
``NetworkCall`` per tag, and the model side decides what each call means. Malformed tags become readable warnings
instead of exceptions deep inside generation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NetworkCall", "lora_dyn_dim", "lora_multipliers", "parse_extra_networks"]

# A1111's pattern is <(\w+):([^>]+)>; we also take an empty argument list so that "<lora:>" is reported and removed
# rather than sent to CLIP as text.
_TAG = re.compile(r"<(\w+):([^>]*)>")

LORA_KINDS = ("lora", "lyco")  # A1111 registers "lyco" as an alias of the built-in LoRA network


@dataclass(frozen=True)
class NetworkCall:
    """One tag. ``name`` is the first positional argument; ``positional`` holds the ones after it.

    ``named`` is a tuple of ``(key, value)`` pairs in tag order so calls stay hashable; a dict is accepted and
    converted. Values stay strings: what they mean depends on ``kind``.
    """

    kind: str
    name: str
    positional: tuple[str, ...] = ()
    named: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        named = self.named.items() if isinstance(self.named, dict) else self.named
        object.__setattr__(self, "named", tuple((str(k), str(v)) for k, v in named))
        object.__setattr__(self, "positional", tuple(self.positional))

    @property
    def named_dict(self) -> dict[str, str]:
        return dict(self.named)

    def get(self, key: str, default: Any = None) -> Any:
        """A named argument's value (the last one wins, as in A1111's dict)."""
        return self.named_dict.get(key, default)


def _number(value: str, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} {value!r} is not a finite number")
    return number


def lora_multipliers(call: NetworkCall, default: float = 1.0) -> tuple[float, float]:
    """``(te, unet)`` for ``<lora:name:te[:unet[:dyn]]>`` with named ``te=`` / ``unet=`` overriding positions.

    The UNet multiplier defaults to the text-encoder one; both default to ``default``. Raises ValueError when a
    multiplier is not a finite number.
    """
    te = _number(call.positional[0], "text encoder multiplier") if call.positional else default
    if "te" in call.named_dict:
        te = _number(call.named_dict["te"], "text encoder multiplier")
    unet = _number(call.positional[1], "UNet multiplier") if len(call.positional) > 1 else te
    if "unet" in call.named_dict:
        unet = _number(call.named_dict["unet"], "UNet multiplier")
    return te, unet


def lora_dyn_dim(call: NetworkCall) -> int | None:
    """The optional ``dyn`` rank limit (third positional argument or ``dyn=``); None when absent."""
    value = call.named_dict.get("dyn", call.positional[2] if len(call.positional) > 2 else None)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"dyn_dim {value!r} is not an integer") from None


def _call_from_tag(kind: str, args: str) -> NetworkCall:
    """Split ``a:b:key=value`` the A1111 way: an item with exactly one '=' is named, anything else positional."""
    positional: list[str] = []
    named: list[tuple[str, str]] = []
    for item in args.split(":"):
        parts = item.split("=")
        if len(parts) == 2:
            named.append((parts[0], parts[1]))
        else:
            positional.append(item)
    if not positional or not positional[0].strip():
        raise ValueError("the network name is missing")
    call = NetworkCall(kind, positional[0].strip(), tuple(positional[1:]), tuple(named))
    if kind in LORA_KINDS:
        lora_multipliers(call)
        lora_dyn_dim(call)
    elif kind == "hypernet" and call.positional:
        _number(call.positional[0], "multiplier")
    return call


def parse_extra_networks(prompt: str) -> tuple[str, list[NetworkCall], list[str]]:
    """Return ``(prompt without tags, calls in order, warnings)``.

    Every ``<kind:...>`` tag is removed, known kind or not; unknown kinds are returned as calls for whoever handles
    them. A malformed tag (no name, a LoRA multiplier that is not a number, ...) is removed too, yields no call and
    adds one warning naming it.
    """
    calls: list[NetworkCall] = []
    warnings: list[str] = []

    def take(match: re.Match) -> str:
        try:
            calls.append(_call_from_tag(match.group(1), match.group(2)))
        except ValueError as err:
            warnings.append(f"Ignored extra network tag {match.group(0)}: {err}.")
        return ""

    return _TAG.sub(take, prompt), calls, warnings
