"""notifyHook delivery: POST the task JSON on every state change, retried, never blocking polling.

Per task only the newest state is pending: a retry of an older state is replaced by
a newer one, so a receiver never sees a task move backwards. Deliveries run from
memory; ``tasks/callbacks.py`` keeps a durable mark per task (``version``) so that
callbacks a stopped or crashed process still owed are delivered after a restart.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from polyrelay.tasks.settings import TaskSettings

log = logging.getLogger("polyrelay.tasks")

_MAX_PENDING = 10_000


def valid_hook(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


async def _public(host: str, port: int) -> bool:
    """True when every address ``host`` resolves to is globally routable (no SSRF into the LAN)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    return bool(addresses) and all(address.is_global for address in addresses)


class Notifier:
    def __init__(self, session: aiohttp.ClientSession, settings: TaskSettings) -> None:
        self._session = session
        self._settings = settings
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
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if not self._settings.notify_allow_private and not await _public(host, port):
            log.warning("callback to %s refused: not a public address", url)
            return True  # permanent: do not retry
        try:
            async with self._session.post(
                url,
                data=orjson.dumps(body),
                headers={"content-type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self._settings.notify_timeout_s),
                allow_redirects=False,
            ) as response:
                await response.read()
                return 200 <= response.status < 300
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.info("callback to %s failed: %s", url, type(exc).__name__)
            return False
