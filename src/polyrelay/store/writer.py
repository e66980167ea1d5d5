"""The batching writer: usage logs, spend and channel health reach the database off the hot path.

Requests append to in-memory buffers; every ``interval`` (at most 100 ms) one
transaction writes everything buffered. Graceful shutdown flushes the rest, so only a
hard kill (SIGKILL, power loss) can lose what was settled in the last interval.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, insert, update
from sqlalchemy.orm import Session

from polyrelay.store import models
from polyrelay.store.db import bump_records_version

log = logging.getLogger("polyrelay")

_INSERT_USAGE = insert(models.UsageLog.__table__)


@dataclass(slots=True)
class _Batch:
    logs: list[dict[str, Any]] = field(default_factory=list)
    spend: dict[int, int] = field(default_factory=dict)  # token id -> micro-USD to add
    last_used: dict[int, datetime] = field(default_factory=dict)
    channels: dict[int, dict[str, Any]] = field(default_factory=dict)  # channel id -> columns

    def __bool__(self) -> bool:
        return bool(self.logs or self.spend or self.last_used or self.channels)


class BatchWriter:
    """Owns the process's single database thread; every write goes through it in order."""

    def __init__(self, engine: Engine, interval_s: float, executor: ThreadPoolExecutor) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._executor = executor
        self._batch = _Batch()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    def record_usage(self, row: dict[str, Any], token_id: int | None, cost_micros: int) -> None:
        self._batch.logs.append(row)
        if token_id is not None:
            self._batch.last_used[token_id] = row["created_at"]
            if cost_micros:
                self._batch.spend[token_id] = self._batch.spend.get(token_id, 0) + cost_micros

    def record_channel(self, channel_id: int, **columns: Any) -> None:
        self._batch.channels.setdefault(channel_id, {}).update(columns)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="polyrelay-batch-writer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.flush()

    async def flush(self) -> None:
        async with self._flush_lock:
            batch, self._batch = self._batch, _Batch()
            if not batch:
                return
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self._executor, self._write, batch)
            except Exception:
                # Keep the money: put the batch back so the next flush retries it.
                log.exception("usage flush failed; will retry")
                self._merge_back(batch)
                raise

    def _merge_back(self, batch: _Batch) -> None:
        current = self._batch
        current.logs[:0] = batch.logs
        for token_id, micros in batch.spend.items():
            current.spend[token_id] = current.spend.get(token_id, 0) + micros
        for token_id, when in batch.last_used.items():
            current.last_used.setdefault(token_id, when)
        for channel_id, columns in batch.channels.items():
            current.channels[channel_id] = {**columns, **current.channels.get(channel_id, {})}

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.flush()
            except Exception:  # already logged; the loop must keep going
                pass

    def _write(self, batch: _Batch) -> None:
        with Session(self._engine) as session, session.begin():
            if batch.logs:
                # A Core executemany: the ORM's bulk path costs several times more CPU per row,
                # and this thread holds the GIL the event loop needs.
                session.connection().execute(_INSERT_USAGE, batch.logs)
            for token_id, micros in batch.spend.items():
                session.execute(
                    update(models.Token)
                    .where(models.Token.id == token_id)
                    .values(used_micros=models.Token.used_micros + micros)
                )
            for token_id, when in batch.last_used.items():
                session.execute(update(models.Token).where(models.Token.id == token_id).values(last_used_at=when))
            for channel_id, columns in batch.channels.items():
                columns = {**columns, "updated_at": datetime.now(timezone.utc)}
                session.execute(update(models.Channel).where(models.Channel.id == channel_id).values(**columns))
            if any("enabled" in columns for columns in batch.channels.values()):
                bump_records_version(session)  # a channel left rotation: every process must see it
