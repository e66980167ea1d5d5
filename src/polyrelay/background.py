"""Background loops (batch writer, task poller, probes, alerts, retention, ...) share how they run and stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("polyrelay")


def every(interval_s: float, job: Callable[[], Awaitable[object]], name: str, *, wait_first: bool = False,
          logger: logging.Logger = log) -> asyncio.Task[None]:
    """Run ``job`` now (or after one interval with ``wait_first``) and then every ``interval_s`` after
    it ends, until the task is cancelled (``stop_task``). A job that raises is logged on ``logger`` as
    ``"{name} failed"`` with its traceback and the loop goes on: the next round is the retry."""

    async def loop() -> None:
        if wait_first:
            await asyncio.sleep(interval_s)
        while True:
            try:
                await job()
            except Exception:  # a bug or the database away: say so, try again next round
                logger.exception("%s failed", name)
            await asyncio.sleep(interval_s)

    return asyncio.create_task(loop(), name=f"polyrelay-{name.replace(' ', '-')}")


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a background loop and wait until it has really stopped (its cancellation swallowed)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
