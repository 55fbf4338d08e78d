"""How a caller watches and steers a running generation from another thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class StepInfo:
    batch_index: int  # 0-based batch within the job
    batch_count: int
    step: int  # 1-based sampling step within the batch
    steps: int
    latents: torch.Tensor | None = None  # for live previews; do not keep a reference


class RunControl:
    """Interrupt stops the whole job; skip drops the current batch and goes on with the next,
    as A1111's buttons do. `on_step` is called after every sampling step."""

    def __init__(self, on_step: Callable[[StepInfo], None] | None = None):
        self.on_step = on_step
        self._interrupt = threading.Event()
        self._skip = threading.Event()

    def interrupt(self) -> None:
        self._interrupt.set()

    def skip(self) -> None:
        self._skip.set()

    @property
    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    @property
    def skip_requested(self) -> bool:
        return self._skip.is_set()

    def take_skip(self) -> bool:
        """True once per skip request, so one click skips one batch."""
        if self._skip.is_set():
            self._skip.clear()
            return True
        return False

    def stop_requested(self) -> bool:
        return self.interrupted or self._skip.is_set()
