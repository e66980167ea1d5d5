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

from polyrelay.relay.pipeline import Relay
from polyrelay.tasks import store
from polyrelay.tasks.base import TaskAdaptor, TaskView
from polyrelay.tasks.notify import Notifier
from polyrelay.tasks.settings import TaskSettings

T = TypeVar("T")


def new_task_id() -> str:
    """Digits, like midjourney-proxy's ids (epoch ms + 6 random digits), so clients that parse them cope."""
    return f"{store.now_ms()}{secrets.randbelow(10**6):06d}"


class TaskEngine:
    def __init__(
        self,
        db: Engine,
        executor: ThreadPoolExecutor,
        relay: Relay,
        session: aiohttp.ClientSession,
        settings: TaskSettings,
        adaptors: dict[str, TaskAdaptor],
    ) -> None:
        self.db = db
        self.relay = relay
        self.session = session
        self.settings = settings
        self.adaptors = adaptors
        self.notifier = Notifier(session, settings)
        # Unique per process start: leases name their holder, a restart never inherits them.
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._executor = executor

    async def run_db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def create(self, row: dict[str, Any], charge_log: dict[str, Any]) -> TaskView:
        return await self.run_db(store.create, self.db, row, charge_log)

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
        tokens = {t.id: t for t in self.relay.snapshot.tokens_by_hash.values()}
        for item in settled:
            token = tokens.get(item.task.token_id) if item.task.token_id is not None else None
            if token is not None and item.refunded_micros:
                token.used_micros = max(0, token.used_micros - item.refunded_micros)

    def changed(self, tasks: list[TaskView]) -> None:
        for task in tasks:
            adaptor = self.adaptors.get(task.family)
            if task.notify_hook and adaptor is not None:
                self.notifier.send(task.id, task.notify_hook, adaptor.render(task))
