"""Keeps one process's snapshot current: applies the change log as other processes write it.

On PostgreSQL a dedicated connection ``LISTEN``s for the writers' ``NOTIFY`` and wakes the feed
at once; the change log is also polled every ``every_s`` as the safety net (SQLite, a lost
notification, the listener reconnecting), so a change is never missed, only late. Reads run on
the process's DB thread, like the batching writer's commits, and are applied on the event loop:
that order is what keeps ``unflushed_micros`` and the money read in agreement (``Snapshot.adopt``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from polyrelay.store import changes
from polyrelay.store.snapshot import Changes, Snapshot, load_changes, load_snapshot

log = logging.getLogger("polyrelay")

_PRUNE_EVERY_S = 60.0
_RECONNECT_MAX_S = 10.0


class Holder(Protocol):
    """Whatever serves from the snapshot (the relay)."""

    snapshot: Snapshot


def read_snapshot(engine: Engine, previous: Snapshot | None = None) -> Snapshot:
    """Every hot-path record, read whole (in the DB thread); ``Snapshot.adopt`` then makes it current."""
    with Session(engine) as session:
        return load_snapshot(session, previous)


class Feed:
    def __init__(self, holder: Holder, engine: Engine, executor: ThreadPoolExecutor, every_s: float) -> None:
        self.holder, self.engine, self.executor, self.every_s = holder, engine, executor, every_s
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name="polyrelay-feed"))
        if self.engine.dialect.name == "postgresql":
            self._tasks.append(asyncio.create_task(self._listen(), name="polyrelay-feed-listen"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def catch_up(self) -> None:
        """Apply every change committed so far (the admin API calls this after its own write)."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            since = self.holder.snapshot.version
            delta = await loop.run_in_executor(self.executor, self._read_changes, since)
            if delta is not None:
                if delta.version != since:
                    self.holder.snapshot = self.holder.snapshot.apply(delta)
                return
            fresh = await loop.run_in_executor(self.executor, self._read_all, self.holder.snapshot)
            self.holder.snapshot = fresh.adopt(self.holder.snapshot)  # on the loop: carries reservations and money over

    def _read_changes(self, since: int) -> Changes | None:
        with Session(self.engine) as session:
            return load_changes(session, since)

    def _read_all(self, previous: Snapshot) -> Snapshot:
        return read_snapshot(self.engine, previous)

    def _prune(self) -> None:
        with Session(self.engine) as session, session.begin():
            changes.prune(session)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = time.monotonic() + _PRUNE_EVERY_S
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.every_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.catch_up()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + _PRUNE_EVERY_S
                    await loop.run_in_executor(self.executor, self._prune)
            except Exception:
                log.exception("applying record changes failed; serving the previous snapshot")

    async def _listen(self) -> None:
        """Wake the feed on every NOTIFY; reconnect with back-off when the connection drops."""
        import psycopg  # deferred: only PostgreSQL databases listen, and SQLite starts faster without it

        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        delay, lost = 0.5, False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {changes.NOTIFY_CHANNEL}")
                    if lost:
                        log.warning("listening for record changes again")
                    delay, lost = 0.5, False
                    self._wake.set()  # whatever was committed while nobody listened
                    async for _ in connection.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not lost:  # once per outage, not per attempt
                    log.warning("record-change listener lost (%s); polling every %.1fs until it is back",
                                type(exc).__name__, self.every_s)
                lost = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_S)
