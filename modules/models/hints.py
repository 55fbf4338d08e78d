"""What a model's config folder says about using it: a short guide, example prompts and the
generation defaults that suit it (the demo model draws 64×64 pictures at a low CFG).

Read from ``webui.json`` in the config folder a checkpoint is loaded with (``configs/<arch>/``
or a side-car ``<stem>/`` folder), so any model can carry its own. Shape::

    {"guide": "markdown", "examples": ["prompt", ...],
     "defaults": {"width": 64, "height": 64, "cfg_scale": 5, ...},
     "training": {"resolution": 64, "network_dim": 8, ...}}

``defaults`` keys are generation parameter names; ``training`` (optional) keys are LoRA
training parameter names (kohya's, `LoraTrainingParams`): the Train tab's starting values for
this model, since SD 1.5's (512 px, rank 16, 1e-4) cannot teach a 64 px model anything. A
file that does not validate is logged and ignored rather than stopping the model from loading.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

log = logging.getLogger(__name__)

FILE_NAME = "webui.json"


@dataclass(frozen=True)
class ModelHints:
    guide: str = ""
    examples: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    training: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def read(cls, folder: Path | None) -> "ModelHints":
        """The hints in ``folder/webui.json``; empty hints when there is none or it is invalid."""
        path = Path(folder) / FILE_NAME if folder else None
        if path is None or not path.is_file():
            return cls()
        try:
            return cls.parse(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            log.warning("Ignoring %s: %s", path, exc)
            return cls()

    @classmethod
    def parse(cls, data: Any) -> "ModelHints":
        from modules.generation.params import GenerationParams

        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        unknown = set(data) - {"guide", "examples", "defaults", "training"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        guide, examples, defaults = data.get("guide", ""), data.get("examples", []), data.get("defaults", {})
        if not isinstance(guide, str) or not isinstance(examples, list) or not all(isinstance(e, str) for e in examples):
            raise ValueError("'guide' must be text and 'examples' a list of prompts")
        if not isinstance(defaults, dict):
            raise ValueError("'defaults' must be an object of generation parameters")
        GenerationParams.create(**defaults)  # names and ranges, as the page would check them
        training = data.get("training", {})
        if not isinstance(training, dict):
            raise ValueError("'training' must be an object of LoRA training parameters")
        _check_training(training)
        return cls(guide, tuple(examples), MappingProxyType(dict(defaults)), MappingProxyType(dict(training)))


def _check_training(values: dict) -> None:
    """Names and ranges of the training values, as the Train tab and the API would check them
    (imported here: the models package must not need the training package to load a model)."""
    from pydantic import ValidationError

    from modules.generation.params import readable_errors
    from modules.training.params import LoraTrainingParams

    try:
        LoraTrainingParams.model_validate(values)
    except ValidationError as exc:
        raise ValueError(f"'training': {readable_errors(exc, LoraTrainingParams)}") from None
