"""A script's arguments: one list of specs gives the page's controls, /sdapi/v1/script-info,
and the reading of the API's positional `script_args` (A1111's `ui()` order)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

KINDS = ("index", "choice", "multiselect", "text", "textarea", "number", "int", "slider", "checkbox", "file")


TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "y", "on"), ("false", "0", "no", "n", "off", "")


def read_bool(value: Any) -> bool:
    """A yes/no value as clients and text inputs write it (true/false in any case, 1/0, yes/no,
    on/off); ValueError for anything else rather than a silent False."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    elif isinstance(value, (bool, int, float)):
        return bool(value)
    raise ValueError(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class ScriptArg:
    """One control of a script. `kind` says how a value is read: "index" is a dropdown or radio
    sent as its position (A1111's type="index"), "choice" one sent as its text, "multiselect" a
    list of texts, "file" a file's text (the API sends None); "slider" is a whole number when
    its step is."""

    name: str
    label: str
    kind: str
    default: Any
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    info: str = ""
    visible: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Unknown argument kind '{self.kind}' for {self.name}")

    def describe(self) -> dict:
        """A1111's /script-info entry: label, value, minimum, maximum, step, choices."""
        return {"label": self.label, "value": self.default, "minimum": self.minimum, "maximum": self.maximum, "step": self.step,
                "choices": list(self.choices) if self.choices else None}

    def read(self, value: Any) -> Any:
        """The value as the script uses it; ValueError with the reason (the caller names the argument)."""
        if value is None:
            return None if self.kind == "file" else self.default
        kind = self.kind
        if kind == "checkbox":
            return read_bool(value)
        if kind == "index":
            return self._index(value)
        if kind == "choice":
            if isinstance(value, int) and not isinstance(value, bool) and self.choices and 0 <= value < len(self.choices):
                return self.choices[value]  # some clients send the position of a text dropdown
            text = str(value)
            if self.choices and text not in self.choices:
                found = [c for c in self.choices if str(c).lower() == text.lower()]
                if not found:
                    raise ValueError(f"{text!r} is not one of: {', '.join(map(str, self.choices))}")
                return found[0]
            return text
        if kind == "multiselect":
            items = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
            if items is None:
                raise ValueError(f"expected a list, got {value!r}")
            return [str(v) for v in items]
        if kind in ("text", "textarea", "file"):
            if isinstance(value, (dict, list)):
                raise ValueError(f"expected text, got {type(value).__name__}")
            return str(value)
        return self._number(value)

    def _index(self, value: Any) -> int:
        if isinstance(value, str) and value in self.choices:
            return self.choices.index(value)  # a client that sends the text
        if isinstance(value, str):
            found = [i for i, c in enumerate(self.choices) if str(c).lower() == value.strip().lower()]
            if found:
                return found[0]
            try:
                value = int(value)
            except ValueError:
                raise ValueError(f"{value!r} is not one of: {', '.join(map(str, self.choices))}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ValueError(f"expected the index of a choice, got {value!r}")
        index = int(value)
        if self.choices and not 0 <= index < len(self.choices):
            raise ValueError(f"index {index} is out of range 0-{len(self.choices) - 1}")
        return index

    def _number(self, value: Any) -> float | int:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")
        if self.minimum is not None and number < self.minimum or self.maximum is not None and number > self.maximum:
            raise ValueError(f"{value!r} is outside {self.minimum}-{self.maximum}")
        whole = self.kind == "int" or (self.kind == "slider" and float(self.step or 1).is_integer())
        return int(round(number)) if whole else number


def parse_args(title: str, specs: Sequence[ScriptArg], values: Sequence | dict | None) -> dict[str, Any]:
    """A1111's positional `script_args` (or the page's {name: value}) as {name: value}. A
    shorter list keeps the defaults for the rest, as A1111 fills them from its controls'
    defaults; a longer one is refused. Errors name the argument by position and label."""
    if values is None:
        values = []
    if isinstance(values, dict):
        unknown = sorted(set(values) - {s.name for s in specs})
        if unknown:
            raise ValueError(f"{title}: unknown argument(s) {', '.join(unknown)}")
        positional = [values.get(s.name) for s in specs]
    elif isinstance(values, (list, tuple)):
        if len(values) > len(specs):
            raise ValueError(f"{title} takes at most {len(specs)} script_args ({', '.join(s.label for s in specs)}); got {len(values)}")
        positional = list(values) + [None] * (len(specs) - len(values))
    else:
        raise ValueError(f"{title}: script_args must be a list, got {type(values).__name__}")
    parsed = {}
    for index, (spec, value) in enumerate(zip(specs, positional)):
        try:
            parsed[spec.name] = spec.read(value)
        except ValueError as exc:
            raise ValueError(f"{title}: argument {index} ({spec.label}, {spec.name}): {exc}") from None
    return parsed
