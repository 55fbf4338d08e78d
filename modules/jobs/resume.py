"""Going on with a generation job that a crash cut off, instead of starting it over.

After each saved batch the job records its first seed, the batches done and the files written
(`Job.record_progress`). A run after a restart reads that back: the saved pictures return to
the result from their files, the seeds stay the ones the first run drew (a seed of -1 must not
become another random one halfway through), and sampling starts at the first batch not saved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from modules.generation.noise import job_seeds, job_subseeds

if TYPE_CHECKING:
    from PIL import Image

    from modules.generation.params import GenerationParams
    from modules.jobs.generation_task import GenerationResult
    from modules.jobs.queue import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resumed:
    first_seed: int
    batches: int  # batches already finished and saved
    paths: tuple[str, ...]
    params: "GenerationParams"
    first_subseed: int | None = None  # the variation seed the first run drew (None: recorded before there were any)

    @classmethod
    def of(cls, job: "Job", params: "GenerationParams") -> "Resumed | None":
        """The progress a restored job's cut-off run recorded, if it is usable."""
        done = job.resumed
        if not isinstance(done, dict):
            return None
        seed, batches, paths = done.get("first_seed"), done.get("batches"), done.get("paths")
        if not (isinstance(seed, int) and isinstance(batches, int) and isinstance(paths, list)) or not 0 < batches <= params.n_iter:
            return None
        subseed = done.get("first_subseed")
        return cls(seed, batches, tuple(str(p) for p in paths), params, subseed if isinstance(subseed, int) else None)

    def restore(self, result: "GenerationResult", saved: "Callable[[str], tuple[Image.Image, str]] | None" = None) -> None:
        """Put the pictures the first run saved back into `result`, as if made now. `saved`
        reads one back as (picture, infotext) from its path: by default from this machine's
        disk; a Ray worker on another machine gets them from the serving machine instead."""
        saved = saved or read_saved

        n_iter, size = self.params.n_iter, self.params.batch_size
        seeds = [seed for batch in job_seeds(self.first_seed, n_iter, size, self.params.subseed_strength)[: self.batches] for seed in batch]
        first_subseed = self.params.subseed if self.first_subseed is None else self.first_subseed
        subseeds = [s for batch in job_subseeds(first_subseed, n_iter, size)[: self.batches] for s in batch]
        for seed, subseed, path in zip(seeds, subseeds, self.paths):
            try:
                image, infotext = saved(path)
            except ValueError as exc:
                log.warning("A resumed job's earlier picture is gone: %s", exc)
                continue
            result.images.append(image)
            result.seeds.append(seed)
            result.subseeds.append(subseed)
            result.infotexts.append(infotext)
            result.paths.append(Path(path))
        result.notes.append(f"Resumed after a restart: batches 1-{self.batches} of {self.params.n_iter} were already saved.")


def read_saved(path: str) -> tuple:
    """A saved picture and its infotext, read back from this machine's disk (ValueError when it
    is not a readable picture any more)."""
    from modules.generation.images import open_image
    from modules.outputs.infotext import read_infotext

    return open_image(path, Path(path).name), read_infotext(path) or ""
