"""Brute-force guard for console sign-in: failed attempts per (name, address) and per address, in a sliding window.

Two limits over 15 minutes: 5 failures for one name from one address (keyed by both, so a
guesser cannot lock that user out from everywhere else) and 20 failures from one address over
all names (so one address can neither spray a password over many names nor flood the table).
Every attempt counts as failed until the password proves right, so concurrent guesses cannot
slip past a limit; a success forgives the name and takes its own count back from the address.

The table is bounded but never forgets a live lock. When it is full, the least recently failed
unlocked key goes (forgetting it gives a guesser nothing: making that room took more failed
sign-ins, from more addresses, than the forgotten count held). Only when every entry is a live
lock are attempts that need a new entry refused, until the first lock runs out.

With ``redis_url`` the counts live in Redis (one sorted set per key, expiring with the window),
so the limits hold across processes and no process's table can be flushed. When Redis does not
answer, the process counts in its own table (one warning per outage) and sign-in goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("polyrelay")

MAX_FAILURES = 5
MAX_ADDRESS_FAILURES = 20
WINDOW_S = 900.0
_REDIS_TIMEOUT_S = 1.0
_REDIS_RETRY_S = 5.0  # after Redis failed, sign-ins count locally this long before it is tried again

# KEYS: the keys to check and count; ARGV: now (ms), window (ms), stamp, then each key's limit.
# Returns 0 when admitted (the failure is counted on every key), else the milliseconds to wait.
_ADMIT_SCRIPT = """
local now, window, stamp = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 + i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local nth = redis.call('ZRANGE', key, -limit, -limit, 'WITHSCORES')
    wait = math.max(wait, tonumber(nth[2]) + window - now)
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, stamp)
  redis.call('ZREMRANGEBYRANK', key, 0, -tonumber(ARGV[3 + i]) - 1)
  redis.call('PEXPIRE', key, window)
end
return 0
"""


class FailureTable:
    """Recent failure times per key (at most a key's limit of them), at most ``max_entries`` keys."""

    def __init__(self, window_s: float, max_entries: int, clock: Callable[[], float]) -> None:
        if max_entries < 2:
            raise ValueError("a sign-in needs room for two keys: its name and its address")
        self._window, self._max, self._clock = window_s, max_entries, clock
        self._open: OrderedDict[str, deque[float]] = OrderedDict()  # under their limit, least recently failed first
        self._locked: OrderedDict[str, deque[float]] = OrderedDict()  # at their limit: never dropped while live

    def __len__(self) -> int:
        return len(self._open) + len(self._locked)

    def admit(self, keys: Sequence[tuple[str, int]], stamp: float) -> float | None:
        """Seconds to wait when a key is locked or no room is left; else one failure at ``stamp`` on every key."""
        now = self._clock()
        held = {key: self._take(key, now) for key, _ in keys}  # out of the table, so making room cannot drop them
        wait = max((self._lock_left(f, now) for f in held.values() if f is not None and self._is_locked(f)),
                   default=None)
        if wait is None:
            wait = self._make_room(len(keys), now)
        if wait is None:
            for key, limit in keys:
                failures = held[key] if held[key] is not None else deque(maxlen=limit)
                failures.append(stamp)
                held[key] = failures
        for key, failures in held.items():
            self._file(key, failures)
        return wait

    def forget(self, key: str) -> None:
        self._open.pop(key, None)
        self._locked.pop(key, None)

    def take_back(self, key: str, stamp: float) -> None:
        """Remove the failure counted at ``stamp``: the attempt turned out right."""
        failures = self._take(key, self._clock())
        if failures is not None and stamp in failures:
            failures.remove(stamp)
        self._file(key, failures)

    def _make_room(self, needed: int, now: float) -> float | None:
        while len(self) + needed > self._max:
            if self._open:
                self._open.popitem(last=False)
                continue
            for key in list(self._locked):  # only when every entry is locked: refile the locks that ran out
                self._file(key, self._take(key, now))
            if not self._open and len(self) + needed > self._max:
                return min(self._lock_left(failures, now) for failures in self._locked.values())
        return None

    def _take(self, key: str, now: float) -> deque[float] | None:
        """The key's failures still in the window, removed from the table."""
        failures = self._open.pop(key, None)
        if failures is None:
            failures = self._locked.pop(key, None)
        if failures is None:
            return None
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        return failures or None

    def _file(self, key: str, failures: deque[float] | None) -> None:
        if failures:
            (self._locked if self._is_locked(failures) else self._open)[key] = failures

    def _lock_left(self, failures: deque[float], now: float) -> float:
        return failures[0] + self._window - now

    @staticmethod
    def _is_locked(failures: deque[float]) -> bool:
        return len(failures) == failures.maxlen


@dataclass(frozen=True, slots=True)
class Attempt:
    """One sign-in attempt: refused (``retry_after`` seconds), or admitted and counted as failed."""

    name_key: str
    address_key: str
    retry_after: float | None
    stamp: float | str  # what identifies this attempt's count on the address: a time locally, a member in Redis
    shared: bool  # counted in Redis, not in this process's table


class LoginThrottle:
    def __init__(self, *, max_entries: int, redis_url: str | None = None, namespace: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self._table = FailureTable(WINDOW_S, max_entries, clock)
        self._clock = clock
        self._redis_url = redis_url
        # Processes share counts when they share the namespace: the cluster_id, like the rate limiter's.
        self._prefix = f"polyrelay:signin:{namespace}:"
        self._redis: Any = None
        self._script: Any = None
        self._redis_away_until: float | None = None  # monotonic; set while Redis is away

    async def admit(self, name: str, address: str) -> Attempt:
        """Refuse when a limit is reached; else count the attempt as failed until it proves right."""
        name_key = "n:" + hashlib.sha256(name.casefold().encode()).hexdigest()[:32] + ":" + address
        address_key = "a:" + address
        if self._redis_usable():
            stamp = secrets.token_hex(8)
            try:
                wait_ms = await asyncio.wait_for(self._script(
                    keys=[self._prefix + name_key, self._prefix + address_key],
                    args=[int(self._clock() * 1000), int(WINDOW_S * 1000), stamp, MAX_FAILURES, MAX_ADDRESS_FAILURES],
                ), _REDIS_TIMEOUT_S)
            except Exception as exc:
                self._redis_failed(exc)
            else:
                self._redis_answered()
                return Attempt(name_key, address_key, wait_ms / 1000 if wait_ms else None, stamp, shared=True)
        stamp = self._clock()
        wait = self._table.admit([(name_key, MAX_FAILURES), (address_key, MAX_ADDRESS_FAILURES)], stamp)
        return Attempt(name_key, address_key, wait, stamp, shared=False)

    async def succeeded(self, attempt: Attempt) -> None:
        """Forgive the name's failures from this address, and take this attempt's count back from the address."""
        if not attempt.shared:
            self._table.forget(attempt.name_key)
            self._table.take_back(attempt.address_key, attempt.stamp)
            return
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._prefix + attempt.name_key)
        pipe.zrem(self._prefix + attempt.address_key, attempt.stamp)
        try:
            await asyncio.wait_for(pipe.execute(), _REDIS_TIMEOUT_S)
        except Exception as exc:  # the user is in; only the count stays until the window forgets it
            self._redis_failed(exc)

    def _redis_usable(self) -> bool:
        if not self._redis_url:
            return False
        if self._redis is None:
            import redis.asyncio as aioredis  # deferred: only needed when sharing through Redis

            self._redis = aioredis.from_url(self._redis_url, socket_connect_timeout=_REDIS_TIMEOUT_S,
                                            socket_timeout=_REDIS_TIMEOUT_S)
            self._script = self._redis.register_script(_ADMIT_SCRIPT)
        return self._redis_away_until is None or time.monotonic() >= self._redis_away_until

    def _redis_failed(self, exc: BaseException) -> None:
        if self._redis_away_until is None:  # once per outage
            log.warning("sign-in throttle: Redis does not answer (%s); failed sign-ins are counted per process "
                        "until it does", type(exc).__name__)
        self._redis_away_until = time.monotonic() + _REDIS_RETRY_S

    def _redis_answered(self) -> None:
        if self._redis_away_until is not None:
            log.warning("sign-in throttle: Redis answers again; failed sign-ins are shared between processes")
            self._redis_away_until = None
