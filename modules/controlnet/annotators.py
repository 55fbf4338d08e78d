"""Model-based ControlNet preprocessors (depth, pose, line art, soft edges...), run by controlnet_aux's networks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ANNOTATOR_PREPROCESSORS: tuple = ()


def load_detector(key: str, folder: Path, device: str) -> Any:
    raise ValueError(f"Unknown annotator {key!r}.")
