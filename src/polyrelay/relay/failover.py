"""The one failover loop and status classifier, for relayed calls and task submits alike.

An attempt on one channel and key either answers (the loop returns it), refuses on the
request's merits (a ``RelayError``: another channel would say the same, so it goes to the
caller), or shows that this channel cannot serve now (``ChannelFailed``: the next one is
tried). Every attempt feeds the channel's health, so task channels cool down and rest
keys exactly like chat channels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

import aiohttp

from polyrelay.errors import RelayError
from polyrelay.providers.base import Target
from polyrelay.relay.routing import Health
from polyrelay.telemetry import metrics

if TYPE_CHECKING:
    from polyrelay.telemetry.spans import RequestTrace

T = TypeVar("T")

# Statuses that say "this channel or key cannot serve now", so another channel may.
FAILOVER_STATUSES = frozenset({401, 403, 408, 429, 500, 502, 503, 504, 520, 521, 522, 524, 529})
_KEY_STATUSES = frozenset({401, 403, 429})  # the key itself is the problem: rest it


class ChannelFailed(Exception, Generic[T]):
    """This channel cannot serve now: try the next. ``fallback`` is an answer to give the caller
    when no channel does better (Midjourney's "queue full" is both a failure and an answer).
    ``upstream_status`` is what the upstream answered, for metrics (0: no answer; absent: the error's)."""

    def __init__(self, error: RelayError, *, rest_key: bool = False, fallback: T | None = None,
                 upstream_status: int | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.rest_key = rest_key
        self.fallback = fallback
        self.upstream_status = error.status if upstream_status is None else upstream_status


def fails_over(status: int) -> bool:
    return status in FAILOVER_STATUSES


def status_failed(status: int, error: RelayError | None = None) -> ChannelFailed[T]:
    """The failure for an upstream status that ``fails_over``: a refused key is rested."""
    if error is None:
        # A refused credential keeps its status until ``exhausted`` words it for the caller.
        error = RelayError(status if status in (401, 403) else 502, f"The upstream answered HTTP {status}.",
                           type="upstream_error", code="upstream_failed")
    return ChannelFailed(error, rest_key=status in _KEY_STATUSES, upstream_status=status)


def transport_failed(exc: BaseException) -> ChannelFailed[T]:
    """The failure for a connection error or a timeout."""
    if isinstance(exc, asyncio.TimeoutError):
        return ChannelFailed(RelayError(504, "The upstream timed out.", type="upstream_error",
                                        code="timeout"), upstream_status=0)
    return ChannelFailed(RelayError(502, f"The upstream is unreachable ({type(exc).__name__}).",
                                    type="upstream_error", code="upstream_unreachable"), upstream_status=0)


TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


class Tried(Generic[T]):
    """How the loop ended: the answer, the target that gave it, and how many attempts it took."""

    __slots__ = ("target", "answer", "attempts")

    def __init__(self, target: Target, answer: T, attempts: int) -> None:
        self.target, self.answer, self.attempts = target, answer, attempts


async def first_answer(
    model: str, targets: Iterable[Target], attempt: Callable[[Target], Awaitable[T]], health: Health, *,
    on_attempt: Callable[[Target, int], None] | None = None, trace: RequestTrace | None = None,
) -> Tried[T]:
    """Run ``attempt`` on each target in turn until one answers; ``on_attempt`` hears of each try,
    and ``trace`` (the request's span, when tracing is on) gets a child span per attempt.

    Every error is scrubbed of the channel's keys before anyone sees it. Raises the request's own
    ``RelayError`` at once, else the last channel failure's error once
    every target failed (a refused credential becomes a 502: the caller's key is fine, ours are not).
    """
    last: ChannelFailed[T] | None = None
    last_channel = ""
    fallback: Tried[T] | None = None
    attempts = 0
    if trace is not None:
        attempt = _traced(attempt, trace)
    for target in targets:
        if last is not None:
            metrics.failover(last_channel)
        attempts += 1
        if on_attempt is not None:
            on_attempt(target, attempts)
        try:
            answer = await attempt(target)
        except ChannelFailed as failed:
            failed.error.scrub(target.channel.keys)
            health.failed(target, failed.error.message, rest_key=failed.rest_key)
            metrics.upstream_answered(target.channel.name, failed.upstream_status)
            last, last_channel = failed, target.channel.name
            if failed.fallback is not None:
                fallback = Tried(target, failed.fallback, attempts)
            continue
        except RelayError as error:
            health.succeeded(target.channel)  # the request was at fault, not the channel
            metrics.upstream_answered(target.channel.name, error.status)
            raise error.scrub(target.channel.keys)
        health.succeeded(target.channel)
        metrics.upstream_answered(target.channel.name, _status_of(answer))
        return Tried(target, answer, attempts)
    if fallback is not None:
        fallback.attempts = attempts
        return fallback
    raise exhausted(model, last.error if last is not None else None)


def _traced(attempt: Callable[[Target], Awaitable[T]], trace: RequestTrace) -> Callable[[Target], Awaitable[T]]:
    """``attempt``, each run in a child span of ``trace`` that says how it ended."""
    number = 0

    async def traced(target: Target) -> T:
        nonlocal number
        number += 1
        channel = target.channel
        with trace.attempt(number, channel.id, channel.name, channel.type) as span:
            try:
                answer = await attempt(target)
            # error.type is the status, as OpenTelemetry's HTTP conventions have it, or polyrelay's own
            # word for no answer: never an upstream's text, which may repeat the key it was sent.
            except ChannelFailed as failed:
                status = failed.upstream_status
                span.ended(status, str(status) if status else failed.error.code or "upstream_failed")
                raise
            except RelayError as error:
                span.ended(error.status, str(error.status))
                raise
            except BaseException as exc:
                span.ended(0, type(exc).__name__)
                raise
            span.ended(_status_of(answer))
            return answer

    return traced


def _status_of(answer: object) -> int:
    """The HTTP status of an answer (a reply or a stream); a task view's status is a word: 200."""
    status = getattr(answer, "status", 200)
    return status if isinstance(status, int) else 200


def exhausted(model: str, last: RelayError | None) -> RelayError:
    """The caller's error when no channel could serve ``model``."""
    if last is None:
        return RelayError(503, f"No channel is available for the model '{model}' now.", type="upstream_error",
                          code="no_channel")
    if last.status in (401, 403):
        # The caller's key is fine; ours were refused. Don't make the SDK blame the caller.
        return RelayError(502, f"Every channel for the model '{model}' refused polyrelay's credentials: "
                          f"{last.message}", type="upstream_error", code="upstream_auth_failed")
    return last
