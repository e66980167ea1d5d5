"""notifyHook delivery: POST the task JSON on every state change, retried, never blocking polling.

Per task only the newest state is pending: a retry of an older state is replaced by
a newer one, so a receiver never sees a task move backwards. Deliveries run from
memory; ``tasks/callbacks.py`` keeps a durable mark per task (``version``) so that
callbacks a stopped or crashed process still owed are delivered after a restart.

A callback URL is the caller's, so it goes through ``fetch.pinned_request`` like any
URL polyrelay did not configure: resolved once, refused unless every address is
public (``notify_allow_private`` lifts that), and posted to the checked address.
Redirects are not followed: a receiver that answers 3xx has not taken the callback
(retried like any failure), and a POST is never re-aimed at wherever it points.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from polyrelay.fetch import FetchError, FetchPolicy, Refused, Resolver, pinned_request, system_resolve
from polyrelay.tasks.settings import TaskSettings

log = logging.getLogger("polyrelay.tasks")

_MAX_PENDING = 10_000
_JSON = {"content-type": "application/json"}


def valid_hook(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


async def _ignore(response: aiohttp.ClientResponse) -> None:
    """A receiver's 2xx is all a delivery needs; its body is never read."""


class Notifier:
    """Callback delivery for one process; ``resolve`` is the DNS lookup (tests stand in a rebinding one)."""

    def __init__(
        self, session: aiohttp.ClientSession, settings: TaskSettings, resolve: Resolver = system_resolve
    ) -> None:
        self._session = session
        self._settings = settings
        self._policy = FetchPolicy(allow_private=settings.notify_allow_private, timeout_s=settings.notify_timeout_s,
                                   max_redirects=0, resolve=resolve)
        # task id -> (url, newest body, its durable mark or None)
        self._pending: dict[str, tuple[str, dict[str, Any], int | None]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self.done: list[tuple[str, int]] = []  # (task id, mark) delivered or given up, to clear durably

    def send(self, task_id: str, url: str, body: dict[str, Any], version: int | None = None) -> None:
        if not url:
            return
        if task_id not in self._pending and len(self._pending) >= _MAX_PENDING:
            log.warning("callback queue full; dropping the callback of task %s", task_id)
            return  # its durable mark stays: recovered later, when the queue has room
        self._pending[task_id] = (url, body, version)
        if task_id not in self._workers:
            self._workers[task_id] = asyncio.create_task(self._deliver(task_id), name=f"notify-{task_id}")

    def pending(self) -> dict[str, int | None]:
        """Undelivered callbacks: task id -> durable mark."""
        return {task_id: version for task_id, (_, _, version) in self._pending.items()}

    async def close(self) -> None:
        for worker in list(self._workers.values()):
            worker.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)

    def _finished(self, task_id: str, body: dict[str, Any]) -> None:
        """The newest body of a task was delivered (or given up): nothing pending remains."""
        entry = self._pending.get(task_id)
        if entry is not None and entry[1] is body:
            del self._pending[task_id]
            if entry[2] is not None:
                self.done.append((task_id, entry[2]))

    async def _deliver(self, task_id: str) -> None:
        settings = self._settings
        try:
            attempt = 0
            while task_id in self._pending:
                url, body, _ = self._pending[task_id]
                attempt += 1
                if await self._post(url, body):
                    self._finished(task_id, body)
                    attempt = 0
                    continue
                if attempt >= settings.notify_attempts:
                    log.warning("callback of task %s to %s failed %d times; giving up", task_id, url, attempt)
                    self._finished(task_id, body)
                    attempt = 0
                    continue
                await asyncio.sleep(settings.notify_backoff_s * 2 ** (attempt - 1))
                if self._pending[task_id][1] is not body:
                    attempt = 0  # a newer state replaced this one: it gets its own attempts
        finally:
            self._workers.pop(task_id, None)

    async def _post(self, url: str, body: dict[str, Any]) -> bool:
        """Whether the callback is settled: delivered, or refused for good (never worth a retry)."""
        try:
            await pinned_request(self._session, "POST", url, self._policy, _ignore, headers=_JSON,
                                 body=orjson.dumps(body))
        except Refused as exc:
            log.warning("callback to %s refused: %s", url, exc)
            return True
        except FetchError as exc:
            log.info("callback to %s failed: %s", url, exc)
            return False
        return True
