"""Run a coroutine to the end from a test, whatever the calling thread is doing.

The browser tests keep Playwright's sync API open for the whole session, which leaves an event
loop running on the main thread, so `asyncio.run` there would refuse; a fresh thread has none.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)
        except BaseException as exc:  # handed to the caller, as asyncio.run would raise it
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="test-asyncio")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
