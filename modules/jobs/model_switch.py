"""Switching the selected checkpoint, shared by the page's menu and the API's options.

The selection changes at once, so every job submitted from then on is pinned to the new
checkpoint; loading it is a queue job in the user's own turn (never mid-generation), and
if the file will not load the previous selection comes back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modules.jobs.queue import Job, JobQueue, JobStatus, done_future
from modules.models.manager import ModelManager

if TYPE_CHECKING:
    from modules.settings import SettingsStore


async def switch_checkpoint(models: ModelManager, queue: JobQueue, query: str, user: str, settings: "SettingsStore | None" = None) -> Job:
    """Select `query`, load it in `user`'s turn and return the finished load job; when it did
    not finish DONE the selection is back to what it was. Raises ValueError for an unknown
    checkpoint and QueueStopped when the server is stopping (nothing changed then). A loaded
    checkpoint is saved as config.json's sd_model_checkpoint, so the next start loads it."""
    previous = models.select(query)
    wanted = models.selected
    try:
        # The payload lets a Ray worker do the load (with Ray workers this process loads no model).
        job = queue.submit("load_model", lambda _job: models.load(str(wanted.path)), user=user, payload={"checkpoint": str(wanted.path)},
                           record=False)
    except Exception:
        models.reselect(wanted, previous)
        raise
    await done_future(job)
    if job.status is not JobStatus.DONE:
        models.reselect(wanted, previous)
    elif settings is not None:
        settings.update({"sd_model_checkpoint": wanted.title})
    return job
