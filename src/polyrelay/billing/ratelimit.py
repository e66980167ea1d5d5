"""Requests and tokens per minute, per token and per user, answered with 429 and ``Retry-After``.

Fixed one-minute windows. The counters live on the in-memory token and user records,
so a check is a few integer operations on the event loop. With ``redis_url`` set,
every process pushes its counts to one Redis hash per window and reads everybody's
back every ``sync_s`` (100 ms): limits then hold across processes, give or take what
the other processes admitted since the last sync. Redis is never awaited per request.
A Redis that is down at start or goes away later never stops serving: limits then hold
per process (one warning per outage) until it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from polyrelay.background import stop_task
from polyrelay.billing.meter import Usage
from polyrelay.errors import RelayError
from polyrelay.store.snapshot import TokenRecord, UserRecord

log = logging.getLogger("polyrelay")

_WINDOW_S = 60
_Subject = TokenRecord | UserRecord


def _limited(subject: _Subject | None) -> bool:
    return subject is not None and (subject.rpm_limit is not None or subject.tpm_limit is not None)


class RateLimiter:
    def __init__(self, redis_url: str | None = None, sync_s: float = 0.1, namespace: str = "") -> None:
        self._redis_url = redis_url
        # Processes share counts when they share the namespace (app.py: one per database).
        self._prefix = f"polyrelay:rl:{namespace}:" if namespace else "polyrelay:rl:"
        self._sync_s = sync_s
        self._redis: Any = None
        self._task: asyncio.Task[None] | None = None
        # field -> [subject, requests, tokens] not yet pushed to Redis (this window only)
        self._pending: dict[str, list[Any]] = {}
        self._shared: dict[str, int] = {}  # field -> count across every process, as last read
        self._window = 0
        self._shared_ok = True  # the last exchange with Redis worked

    # --- hot path ---------------------------------------------------------------------------

    def admit(self, token: TokenRecord) -> None:
        """Count one request against the token and its user, or refuse it with 429."""
        user = token.user
        token_limited, user_limited = _limited(token), _limited(user)
        if not (token_limited or user_limited):
            return
        window = int(time.time()) // _WINDOW_S
        if token_limited:
            self._check(token, "t", window)
        if user_limited:
            self._check(user, "u", window)  # type: ignore[arg-type]
        if token_limited:
            self._count(token, "t", 1, 0)
        if user_limited:
            self._count(user, "u", 1, 0)  # type: ignore[arg-type]

    def used(self, token: TokenRecord, usage: Usage) -> None:
        """Count a finished request's tokens (prompt + completion)."""
        spent = usage.prompt_tokens + usage.completion_tokens
        if not spent:
            return
        user = token.user
        if token.tpm_limit is not None:
            self._count(token, "t", 0, spent)
        if user is not None and user.tpm_limit is not None:
            self._count(user, "u", 0, spent)

    def _check(self, subject: _Subject, kind: str, window: int) -> None:
        if subject.rl_window != window:
            subject.rl_window, subject.rl_requests, subject.rl_tokens = window, 0, 0
        requests, tokens = subject.rl_requests, subject.rl_tokens
        if self._redis is not None and self._window == window:
            requests = max(requests, self._shared.get(f"{kind}{subject.id}:r", 0))
            tokens = max(tokens, self._shared.get(f"{kind}{subject.id}:t", 0))
        who = "API key" if kind == "t" else "account"
        if subject.rpm_limit is not None and requests >= subject.rpm_limit:
            raise _limit_error(f"Rate limit reached: this {who} may send {subject.rpm_limit} requests per minute.")
        if subject.tpm_limit is not None and tokens >= subject.tpm_limit:
            raise _limit_error(f"Rate limit reached: this {who} may use {subject.tpm_limit} tokens per minute.")

    def _count(self, subject: _Subject, kind: str, requests: int, tokens: int) -> None:
        window = int(time.time()) // _WINDOW_S
        if subject.rl_window != window:
            subject.rl_window, subject.rl_requests, subject.rl_tokens = window, 0, 0
        subject.rl_requests += requests
        subject.rl_tokens += tokens
        if self._redis is not None:
            key = f"{kind}{subject.id}"
            entry = self._pending.get(key)
            if entry is None or entry[3] != window:
                self._pending[key] = entry = [subject, 0, 0, window]
            entry[1] += requests
            entry[2] += tokens

    # --- Redis sharing ----------------------------------------------------------------------

    async def start(self) -> None:
        if not self._redis_url:
            return
        import redis.asyncio as aioredis  # deferred: only needed when sharing through Redis

        self._redis = aioredis.from_url(self._redis_url, socket_connect_timeout=2, socket_timeout=2)
        try:
            await self._redis.ping()
        except Exception as exc:  # serve anyway: limits hold per process until Redis answers
            self._shared_ok = False
            log.warning("Redis at %s does not answer (%s): rate limits are per process, NOT shared between "
                        "processes, until it does", _redacted(self._redis_url), type(exc).__name__)
        self._task = asyncio.create_task(self._run(), name="polyrelay-ratelimit-sync")

    async def ping(self) -> float | None:
        """Round trip to Redis in ms, None without Redis; raises when Redis does not answer."""
        if self._redis is None:
            return None
        started = time.perf_counter()
        await asyncio.wait_for(self._redis.ping(), timeout=2.0)
        return (time.perf_counter() - started) * 1000

    async def close(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
            try:
                await self.sync()
            except Exception:
                pass
        if self._redis is not None:
            await self._redis.aclose()

    @property
    def shared(self) -> bool:
        """Limits are shared through Redis right now (False without Redis, or while it is away)."""
        return self._redis is not None and self._shared_ok

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._sync_s)
            try:
                await self.sync()
            except Exception as exc:
                if self._shared_ok:  # once per outage, not every 100 ms
                    log.warning("rate-limit sync with Redis failed (%s); limits are per process until it is back",
                                type(exc).__name__)
                self._shared_ok = False
            else:
                if not self._shared_ok:
                    log.warning("Redis answers again: rate limits are shared between processes")
                self._shared_ok = True

    async def sync(self) -> None:
        """Push this process's counts, read everybody's."""
        window = int(time.time()) // _WINDOW_S
        pending, self._pending = self._pending, {}
        name = f"{self._prefix}{window}"
        pipe = self._redis.pipeline(transaction=False)
        for key, (_subject, requests, tokens, entry_window) in pending.items():
            target = f"{self._prefix}{entry_window}"
            if requests:
                pipe.hincrby(target, f"{key}:r", requests)
            if tokens:
                pipe.hincrby(target, f"{key}:t", tokens)
            pipe.expire(target, _WINDOW_S * 3)
        pipe.hgetall(name)
        try:
            results = await pipe.execute()
        except Exception:
            for key, entry in pending.items():  # keep the counts for the next try
                current = self._pending.setdefault(key, [entry[0], 0, 0, entry[3]])
                if current[3] == entry[3]:
                    current[1] += entry[1]
                    current[2] += entry[2]
            raise
        shared = {k.decode(): int(v) for k, v in (results[-1] or {}).items()}
        # Counts admitted here since the push started are not in Redis yet: add them.
        for key, entry in self._pending.items():
            if entry[3] == window:
                for suffix, index in ((":r", 1), (":t", 2)):
                    if entry[index]:
                        shared[key + suffix] = shared.get(key + suffix, 0) + entry[index]
        self._shared, self._window = shared, window


def _redacted(url: str) -> str:
    """The Redis URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{parts.hostname}:{parts.port or 6379}"))


def _limit_error(message: str) -> RelayError:
    retry = max(1, math.ceil(_WINDOW_S - time.time() % _WINDOW_S))
    return RelayError(
        429, f"{message} Try again in {retry} s.", type="rate_limit_error", code="rate_limit_exceeded",
        headers={"retry-after": str(retry)},
    )
