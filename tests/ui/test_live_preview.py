"""Live previews in the page: while a job runs, the tab's handler shows the picture so far in
the gallery every N steps (the Settings tab's "Show new live preview image every N sampling
steps"), then the finished images; with previews off the worker is never asked for one."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from PIL import Image

from modules.jobs.queue import JobQueue
from modules.ui.common import JobRunner
from tests import aio

STEPS = 6


def _task(release: threading.Event, asked: list[int]):
    """A stand-in for a sampler loop: steps one at a time and, like the generation task,
    decodes a preview only when one is due; each preview is a grey whose level is its step."""

    def task(job):
        p = job.progress
        p.steps = STEPS
        for step in range(1, STEPS + 1):
            p.step = step
            if p.preview_due(step):
                asked.append(step)
                p.preview = Image.new("RGB", (8, 8), (step * 10,) * 3)
            release.wait(0.4)  # slow enough for the page to poll each step
        return SimpleNamespace(images=[Image.new("RGB", (8, 8), "red")], paths=[], infotexts=["done"], seeds=[1], grid_path=None, notes=[])

    return task


def _collect(every: int) -> tuple[list, list[int]]:
    queue = JobQueue()
    runner = JobRunner(queue, preview_every=lambda: every)
    asked: list[int] = []
    request = SimpleNamespace(session_hash="s1", username=None, client=None)

    async def go():
        return [shown async for shown in runner.run("txt2img", _task(threading.Event(), asked), request, lambda *a, **k: None)]

    try:
        return aio.run(go()), asked
    finally:
        queue.shutdown()


def test_previews_every_two_steps_then_the_result():
    shown, asked = _collect(2)
    previews, final = shown[:-1], shown[-1]
    assert asked and all(step % 2 == 0 for step in asked)
    assert previews, "no live preview reached the page"
    levels = [values[0][0].getpixel((0, 0))[0] for values in previews]
    assert levels == sorted(set(levels)) and all(level // 10 in asked for level in levels)  # each new preview once, in order
    assert all(len(values) == len(final) for values in previews)  # the other outputs are left as they are
    assert final[0][0].getpixel((0, 0)) == (255, 0, 0) and final[2].startswith("<p>1 image(s)")


def test_no_previews_when_turned_off():
    shown, asked = _collect(0)
    assert asked == [] and len(shown) == 1
    assert shown[0][0][0].getpixel((0, 0)) == (255, 0, 0)
