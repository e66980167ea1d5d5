"""Background loops (batch writer, task poller, rate-limit sync) share how they are stopped."""

from __future__ import annotations

import asyncio


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a background loop and wait until it has really stopped (its cancellation swallowed)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
