"""Retention of raw usage rows: old rows go in small batches; the daily rollups stay.

Each batch is its own short transaction (``DELETE ... WHERE id IN (SELECT id ... LIMIT n)``),
run on a thread of its own, with a pause between batches: the batching writer never waits
for more than one batch, on SQLite (one writer at a time) as on PostgreSQL. Every process
sweeps; two sweeping at once only find fewer rows to delete.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, delete, select

from polyrelay.background import every, stop_task
from polyrelay.store import models

log = logging.getLogger("polyrelay")

_PAUSE_S = 0.05  # between two batches: the writer's turn at the database


class UsageLogSettings(BaseModel):
    """``usage_logs:`` in the config file."""

    model_config = ConfigDict(extra="forbid")

    retention_days: int = Field(default=0, ge=0, le=36500,
                                description="Delete raw usage rows older than this; 0: keep them forever. "
                                            "The daily rollups (dashboard, stats) are kept either way.")
    retention_interval_s: float = Field(default=3600.0, gt=0, description="How often old rows are looked for.")
    retention_batch_rows: int = Field(default=5000, ge=1, le=100_000, description="Rows deleted per statement.")


def delete_batch(engine: Engine, cutoff: datetime, rows: int) -> int:
    """Delete up to ``rows`` usage rows created before ``cutoff``; how many went."""
    table = models.UsageLog.__table__
    oldest = select(table.c.id).where(table.c.created_at < cutoff).limit(rows)
    with engine.begin() as connection:
        return connection.execute(delete(table).where(table.c.id.in_(oldest))).rowcount


class Retention:
    """The background sweep; does nothing while ``retention_days`` is 0."""

    def __init__(self, engine: Engine, settings: UsageLogSettings) -> None:
        self._engine = engine
        self._settings = settings
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._settings.retention_days:
            self._task = every(self._settings.retention_interval_s, self.sweep, "usage-log retention sweep")

    async def stop(self) -> None:
        await stop_task(self._task)

    async def sweep(self) -> int:
        """Delete every raw row older than the retention, batch by batch; how many went."""
        settings = self._settings
        cutoff = datetime.now(timezone.utc) - timedelta(days=settings.retention_days)
        total = 0
        while True:
            deleted = await asyncio.to_thread(delete_batch, self._engine, cutoff, settings.retention_batch_rows)
            total += deleted
            if deleted < settings.retention_batch_rows:
                break
            await asyncio.sleep(_PAUSE_S)
        if total:
            log.info("usage-log retention: deleted %d rows older than %s", total, cutoff.isoformat())
        return total
