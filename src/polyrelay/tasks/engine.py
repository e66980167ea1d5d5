"""The task engine's face to API families: create, read and cancel tasks; settle in memory too.

Database work runs on the process's single DB thread (the executor the batching
writer uses), so it never blocks the event loop and never races the writer.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiohttp
from sqlalchemy import Engine

from polyrelay.relay.spine import Spine
from polyrelay.tasks import batch, callbacks, store
from polyrelay.providers.base import TaskAdaptor, TaskView
from polyrelay.tasks.notify import Notifier
from polyrelay.tasks.settings import TaskSettings
from polyrelay.store.periods import PeriodRow

T = TypeVar("T")
_CREATE_BATCH = 500  # most submits one transaction stores
_CREATE_LINGER_S = 0.005


def new_task_id() -> str:
    """Digits, like midjourney-proxy's ids (epoch ms + 6 random digits), so clients that parse them cope."""
    return f"{store.now_ms()}{secrets.randbelow(10**6):06d}"


class TaskEngine:
    def __init__(
        self,
        db: Engine,
        executor: ThreadPoolExecutor,
        spine: Spine,
        session: aiohttp.ClientSession,
        settings: TaskSettings,
        adaptors: dict[str, TaskAdaptor],
    ) -> None:
        self.db = db
        self.spine = spine
        self.session = session
        self.settings = settings
        self.adaptors = adaptors
        self.notifier = Notifier(session, settings)
        # Unique per process start: leases name their holder, a restart never inherits them.
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._executor = executor
        # Submits that arrive while the DB thread stores earlier ones wait here and are stored
        # together, in one transaction (a group commit; tasks/batch.py).
        self._creates: list[tuple[dict[str, Any], dict[str, Any], tuple[PeriodRow, ...], asyncio.Future[TaskView]]] = []
        self._creating: asyncio.Task[None] | None = None

    async def run_db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def create(self, row: dict[str, Any], charge_log: dict[str, Any],
                     periods: tuple[PeriodRow, ...] = ()) -> TaskView:
        """Store a task and its charge (counted in ``periods`` of periodic budgets too); committed (with
        whatever other submits queued meanwhile) on return."""
        future: asyncio.Future[TaskView] = asyncio.get_running_loop().create_future()
        self._creates.append((row, charge_log, periods, future))
        if self._creating is None:
            self._creating = asyncio.create_task(self._store_creates(), name="polyrelay-task-creates")
        return await future

    async def _store_creates(self) -> None:
        try:
            while self._creates:
                # A moment for the submits already in flight to join: one transaction for many is far
                # cheaper than one each, and a submit's upstream round trip dwarfs this wait.
                await asyncio.sleep(_CREATE_LINGER_S)
                queued, self._creates = self._creates[:_CREATE_BATCH], self._creates[_CREATE_BATCH:]
                try:
                    results = await self.run_db(batch.create_many, self.db, [item[:3] for item in queued])
                except BaseException as exc:  # the DB thread itself failed: every waiting submit hears it
                    for *_, future in queued:
                        if not future.done():
                            future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("stopped"))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (*_, future), result in zip(queued, results):
                    if future.done():  # the submit was cancelled; its task is stored all the same
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._creating = None

    async def get(self, task_id: str) -> TaskView | None:
        return await self.run_db(store.get, self.db, task_id)

    async def list_for_token(
        self, family: str, token_id: int, ids: list[str] | None = None, limit: int = 100
    ) -> list[TaskView]:
        return await self.run_db(store.list_for_token, self.db, family, token_id, ids, limit)

    async def finish(self, task: TaskView, status: str, reason: str) -> TaskView | None:
        """End a task now (cancel); refunds once; None when it had already ended."""
        settled = await self.run_db(store.finish, self.db, task.id, status, reason, store.now_ms())
        if settled is None:
            return None
        self.settled([settled])
        self.changed([settled.task])
        return settled.task

    def settled(self, settled: list[store.Settled]) -> None:
        """Mirror refunds on the in-memory token records, so admission sees the money again."""
        if not any(s.refunded_micros for s in settled):
            return
        tokens = {t.id: t for t in self.spine.snapshot.tokens_by_hash.values()}
        for item in settled:
            token = tokens.get(item.task.token_id) if item.task.token_id is not None else None
            if token is not None and item.refunded_micros:
                token.used_micros = max(0, token.used_micros - item.refunded_micros)
                if token.user is not None:  # the refund is committed: the user's live balance gets it back
                    token.user.balance_micros += item.refunded_micros

    def changed(self, tasks: list[TaskView]) -> None:
        for task in tasks:
            adaptor = self.adaptors.get(task.family)
            if task.notify_hook and adaptor is not None:
                self.notifier.send(task.id, task.notify_hook, adaptor.render(task), task.notify_due_at)

    async def sync_callbacks(self) -> None:
        """Clear the durable marks of delivered callbacks; take over stale ones (tasks/callbacks.py)."""
        done, self.notifier.done = self.notifier.done, []
        await self.run_db(callbacks.settle, self.db, done, [])
        now = store.now_ms()
        settings = self.settings
        # A live process may still be retrying a mark this young: its whole retry window, plus a lease.
        window_s = min(86_400.0, settings.notify_timeout_s * settings.notify_attempts
                       + settings.notify_backoff_s * 2 ** min(40, max(0, settings.notify_attempts - 1)))
        stale_before = now - int((window_s + settings.lease_s) * 1000)
        recovered = await self.run_db(callbacks.recover, self.db, now, stale_before, set(self.notifier.pending()))
        self.changed(recovered)

    async def close_callbacks(self) -> None:
        """Stop delivering; hand undelivered callbacks to whichever process polls next."""
        await self.notifier.close()
        done, self.notifier.done = self.notifier.done, []
        pending = [(task_id, v) for task_id, v in self.notifier.pending().items() if v is not None]
        await self.run_db(callbacks.settle, self.db, done, pending)
