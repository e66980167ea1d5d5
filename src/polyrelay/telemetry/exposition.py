"""What ``GET /metrics`` serves (``api/metrics.py`` decides who may scrape): the readings taken at
scrape time, and the text exposition.

Nothing here runs per request: gauges are read from the process's state when scraped, and the
database counts (tasks, disabled channels) at most every ``db_ttl_s`` on a report thread.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine, text

from polyrelay.background import every, stop_task
from polyrelay.telemetry import metrics

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_STATES = ("enabled", "cooling", "disabled")
_DISABLED = text("SELECT name FROM channels WHERE enabled = :off")
_IN_FLIGHT = text("SELECT family, status, COUNT(*) FROM tasks WHERE next_poll_at IS NOT NULL GROUP BY family, status")
_OLDEST_DUE = text("SELECT MIN(next_poll_at) FROM tasks WHERE next_poll_at IS NOT NULL")
_CALLBACKS = text("SELECT COUNT(*) FROM tasks WHERE notify_due_at IS NOT NULL")


@dataclass(slots=True)
class _DbReading:
    disabled: list[str] = field(default_factory=list)
    tasks: list[tuple[str, str, int]] = field(default_factory=list)
    oldest_due_ms: int | None = None
    callbacks: int = 0


def _read_db(engine: Engine) -> _DbReading:
    """Indexed reads only (``next_poll_at``, ``notify_due_at``): cheap at any table size."""
    with engine.connect() as connection:
        return _DbReading(
            [row[0] for row in connection.execute(_DISABLED, {"off": False})],
            [(row[0], row[1], row[2]) for row in connection.execute(_IN_FLIGHT)],
            connection.execute(_OLDEST_DUE).scalar(),
            connection.execute(_CALLBACKS).scalar() or 0,
        )


@dataclass
class Sources:
    """Where the scrape-time gauges come from (handed over by the app: this layer knows none of it)."""

    channels: Callable[[], Iterable[tuple[str, bool]]]  # (name, cooling) of each enabled channel
    reserved_micros: Callable[[], int]
    leased_micros: Callable[[], int]
    queued_rows: Callable[[], int]
    engine: Engine
    executor: Executor
    db_ttl_s: float = 5.0
    _db: _DbReading = field(default_factory=_DbReading)
    _db_at: float = float("-inf")
    _channels_seen: set[str] = field(default_factory=set)
    _tasks_seen: set[tuple[str, str]] = field(default_factory=set)

    async def refresh(self) -> None:
        """Every gauge, for a scrape: the database's at most every ``db_ttl_s``."""
        now = time.monotonic()
        if now - self._db_at >= self.db_ttl_s:
            self._db = await asyncio.get_running_loop().run_in_executor(self.executor, _read_db, self.engine)
            self._db_at = now
        self.local()

    def local(self) -> None:
        """The counts and the gauges of this process's own state (and the last database reading)."""
        metrics.sync()
        db = self._db
        states = {name: "cooling" if cooling else "enabled" for name, cooling in self.channels()}
        states.update((name, "disabled") for name in db.disabled)
        # A channel or task status that went away reads 0 (``clear`` does not work with several workers).
        states.update((name, "") for name in self._channels_seen - states.keys())
        self._channels_seen = {name for name, state in states.items() if state}
        for name, state in states.items():
            for candidate in _STATES:
                metrics.CHANNEL_STATE.labels(name, candidate).set(1 if candidate == state else 0)
        metrics.RESERVED.set(self.reserved_micros())
        metrics.LEASED.set(self.leased_micros())
        metrics.QUEUE.set(self.queued_rows())
        counts = {(family, status): 0 for family, status in self._tasks_seen}
        counts.update(((family, status), count) for family, status, count in db.tasks)
        self._tasks_seen = {labels for labels, count in counts.items() if count}
        for (family, status), count in counts.items():
            metrics.TASKS.labels(family, status).set(count)
        lag_ms = time.time() * 1000 - db.oldest_due_ms if db.oldest_due_ms is not None else 0
        metrics.POLL_LAG.set(max(lag_ms, 0) / 1000)
        metrics.CALLBACKS.set(db.callbacks)


def keep_synced(sources: Sources, interval_s: float = 1.0) -> asyncio.Task[None]:
    """Hand the hot path's counts (and, with several workers, this worker's gauges) to the series every
    ``interval_s`` (and once more at ``stop_syncing``): a scrape reads the other workers' files, which
    only their own loops fill."""
    shared = bool(os.environ.get(MULTIPROC_ENV))

    async def step() -> None:
        if shared:
            sources.local()
        else:
            metrics.sync()

    return every(interval_s, step, "metrics sync", wait_first=True)


async def stop_syncing(task: asyncio.Task[None]) -> None:
    """Stop the loop, then hand over what was counted since its last round."""
    await stop_task(task)
    metrics.sync()


def render() -> bytes:
    """The exposition of this process, or of every worker's files in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
