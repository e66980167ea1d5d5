"""Requests and tokens per minute, per token and per user, answered with 429 and ``Retry-After``.

Fixed one-minute windows (Retry-After: the seconds left in the minute). Only tokens with a
limit on themselves or their user are counted; every other request returns before any work.

With ``redis_url`` set, a limited request is admitted by one Lua script call (EVALSHA) that
checks and counts the token and its user atomically, so the limits are exact across any number
of processes sharing the namespace (``cluster_id``). Tokens are counted after the call, batched
into one pipelined HINCRBY per event-loop turn without waiting for the answer.

When Redis does not answer, limits fall back to counting in this process (seeded with the
cluster's counts last seen), and Redis is not tried again per request: a background probe
pings it until it answers. One warning is logged per change of state, lost or back.
Fixed windows rather than a sliding window or GCRA: the local fallback and Retry-After keep
their meaning, a subject costs one small hash per minute in Redis, and the token count that
arrives after the call simply lands in the window it belongs to.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from urllib.parse import urlsplit, urlunsplit

from polyrelay.background import stop_task
from polyrelay.billing.meter import Usage
from polyrelay.errors import RelayError
from polyrelay.store.redis_pipe import RedisPipe, Script
from polyrelay.store.snapshot import TokenRecord, UserRecord

log = logging.getLogger("polyrelay")

_WINDOW_S = 60
_KEY_TTL_S = 2 * _WINDOW_S  # a window's hash outlives it a little, for counts that arrive late
_Subject = TokenRecord | UserRecord

# KEYS: one hash per limited subject (token, then user) for the current window.
# ARGV: the key TTL (s), then per subject its rpm and tpm limits (-1: none).
# Returns {0, 0, r1, t1[, r2, t2]} when admitted (the request counted on every key), else
# {subject index, 1 for rpm or 2 for tpm, ...}; r/t: each key's requests and tokens this window.
_ADMIT_SCRIPT = Script("""
local counts, refused, which = {}, 0, 0
for i, key in ipairs(KEYS) do
  local got = redis.call('HMGET', key, 'r', 't')
  local r, t = tonumber(got[1]) or 0, tonumber(got[2]) or 0
  local rpm, tpm = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if refused == 0 then
    if rpm >= 0 and r >= rpm then refused, which = i, 1
    elseif tpm >= 0 and t >= tpm then refused, which = i, 2 end
  end
  counts[2 * i - 1], counts[2 * i] = r, t
end
if refused == 0 then
  for i, key in ipairs(KEYS) do
    counts[2 * i - 1] = redis.call('HINCRBY', key, 'r', 1)
    if counts[2 * i - 1] == 1 then redis.call('EXPIRE', key, ARGV[1]) end
  end
end
return {refused, which, unpack(counts)}
""")


def _limited(subject: _Subject | None) -> bool:
    return subject is not None and (subject.rpm_limit is not None or subject.tpm_limit is not None)


class RateLimiter:
    def __init__(self, redis_url: str | None = None, namespace: str = "", *, timeout_s: float = 1.0,
                 probe_s: float = 1.0) -> None:
        self._redis_url = redis_url
        # Processes share counts when they share the namespace: the cluster_id (polyrelay.cluster).
        self._prefix = f"polyrelay:rl:{namespace}:" if namespace else "polyrelay:rl:"
        self._timeout_s = timeout_s
        self._probe_s = probe_s
        self._redis: RedisPipe | None = None
        self._up = False  # Redis answered last time: limits are shared
        self._probe: asyncio.Task[None] | None = None
        self._spent: dict[str, int] = {}  # hash key -> tokens not yet added in Redis
        self._flush: asyncio.Task[None] | None = None

    # --- hot path ---------------------------------------------------------------------------

    async def acquire(self, token: TokenRecord) -> None:
        """Count one request against the token and its user, or refuse it with 429.

        Shared through Redis while it answers (one round trip), else counted in this process.
        """
        user = token.user
        token_limited, user_limited = _limited(token), _limited(user)
        if not (token_limited or user_limited):
            return
        if self._up:
            try:
                await self._acquire_shared(token, user if user_limited else None, token_limited)
                return
            except RelayError:
                raise
            except Exception as exc:  # Redis is away: this request and the next ones count locally
                self._lost(exc)
        self._admit_local(token, token_limited, user_limited)

    def used(self, token: TokenRecord, usage: Usage) -> None:
        """Count a finished request's tokens (prompt + completion); never waits on Redis."""
        spent = usage.prompt_tokens + usage.completion_tokens
        if not spent:
            return
        user = token.user
        window = int(time.time()) // _WINDOW_S
        for subject, kind in ((token, "t"), (user, "u")):
            if subject is None or subject.tpm_limit is None:
                continue
            _roll(subject, window)
            subject.rl_tokens += spent
            if self._up:
                key = self._key(kind, subject.id, window)
                self._spent[key] = self._spent.get(key, 0) + spent
        if self._spent and self._flush is None:
            # One pipeline for everything spent in this turn of the event loop.
            self._flush = asyncio.get_running_loop().create_task(self._flush_spent())

    async def _acquire_shared(self, token: TokenRecord, user: UserRecord | None, token_limited: bool) -> None:
        window = int(time.time()) // _WINDOW_S
        subjects: list[tuple[_Subject, str]] = [(token, "t")] if token_limited else []
        if user is not None:
            subjects.append((user, "u"))
        keys, args = [], [_KEY_TTL_S]
        for subject, kind in subjects:
            keys.append(self._key(kind, subject.id, window))
            args += [_or_none(subject.rpm_limit), _or_none(subject.tpm_limit)]
        assert self._redis is not None
        async with asyncio.timeout(self._timeout_s):
            result = await self._redis.evalsha(_ADMIT_SCRIPT, keys, args)
        refused, which = int(result[0]), int(result[1])
        for index, (subject, _kind) in enumerate(subjects):
            # Mirror the cluster's counts, so a fallback to local counting starts from them.
            _roll(subject, window)
            subject.rl_requests = max(subject.rl_requests, int(result[2 + 2 * index]))
            subject.rl_tokens = max(subject.rl_tokens, int(result[3 + 2 * index]))
        if refused:
            subject, kind = subjects[refused - 1]
            raise _refusal(subject, kind, requests=which == 1)

    def _admit_local(self, token: TokenRecord, token_limited: bool, user_limited: bool) -> None:
        window = int(time.time()) // _WINDOW_S
        user = token.user
        checked: list[tuple[_Subject, str]] = [(token, "t")] if token_limited else []
        if user_limited:
            checked.append((user, "u"))  # type: ignore[arg-type]
        for subject, kind in checked:
            _roll(subject, window)
            if subject.rpm_limit is not None and subject.rl_requests >= subject.rpm_limit:
                raise _refusal(subject, kind, requests=True)
            if subject.tpm_limit is not None and subject.rl_tokens >= subject.tpm_limit:
                raise _refusal(subject, kind, requests=False)
        for subject, _kind in checked:
            subject.rl_requests += 1

    def _key(self, kind: str, subject_id: int, window: int) -> str:
        return f"{self._prefix}{kind}{subject_id}:{window}"

    async def _flush_spent(self) -> None:
        spent, self._spent = self._spent, {}
        self._flush = None
        assert self._redis is not None
        calls = []
        for key, tokens in spent.items():  # written back to back: one round trip
            calls += [self._redis.call("HINCRBY", key, "t", tokens), self._redis.call("EXPIRE", key, _KEY_TTL_S)]
        try:
            async with asyncio.timeout(self._timeout_s):
                await asyncio.gather(*calls)
        except Exception as exc:  # these tokens stay counted locally only
            self._lost(exc)

    # --- Redis state ------------------------------------------------------------------------

    async def start(self) -> None:
        if not self._redis_url:
            return
        # No retries: a request falls back to local counting at the first failure instead.
        self._redis = RedisPipe(self._redis_url, connect_timeout_s=self._timeout_s)
        self._up = True
        await self.check()

    async def check(self) -> bool | None:
        """Ping Redis now (None without Redis); a change of state is logged and switches the limits."""
        if self._redis is None:
            return None
        try:
            await self.ping()
        except Exception as exc:
            self._lost(exc)
            return False
        self._back()
        return True

    async def ping(self) -> float | None:
        """Round trip to Redis in ms, None without Redis; raises when Redis does not answer."""
        if self._redis is None:
            return None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._redis.call("PING")
        except BaseException:
            self._redis.reset()
            raise
        return (time.perf_counter() - started) * 1000

    @property
    def shared(self) -> bool:
        """Limits are shared through Redis right now (False without Redis, or while it is away)."""
        return self._redis is not None and self._up

    async def close(self) -> None:
        if self._probe is not None:
            await stop_task(self._probe)
        if self._flush is not None:
            try:
                await self._flush
            except Exception:
                pass
        if self._redis is not None:
            await self._redis.close()

    def _lost(self, exc: BaseException) -> None:
        if not self._up:
            return
        self._up = False
        self._spent.clear()
        if self._redis is not None:
            self._redis.reset()  # a connection that stopped answering must not hold the next replies
        log.warning("rate limits: Redis at %s does not answer (%s); limits are counted per process, NOT shared, "
                    "until it does", _redacted(self._redis_url or ""), type(exc).__name__)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_back(), name="polyrelay-rl-probe")

    def _back(self) -> None:
        if self._up:
            return
        self._up = True
        log.warning("rate limits: Redis answers again; limits are shared between processes")

    async def _probe_until_back(self) -> None:
        while not self._up:
            await asyncio.sleep(self._probe_s)
            try:
                await self.ping()
            except Exception:
                continue
            self._back()


def _roll(subject: _Subject, window: int) -> None:
    if subject.rl_window != window:
        subject.rl_window, subject.rl_requests, subject.rl_tokens = window, 0, 0


def _or_none(limit: int | None) -> int:
    return -1 if limit is None else limit


def _refusal(subject: _Subject, kind: str, *, requests: bool) -> RelayError:
    who = "API key" if kind == "t" else "account"
    if requests:
        return _limit_error(f"Rate limit reached: this {who} may send {subject.rpm_limit} requests per minute.")
    return _limit_error(f"Rate limit reached: this {who} may use {subject.tpm_limit} tokens per minute.")


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
