"""Settlement and the usage-log row: one builder and one exactly-once settle for every family.

Once admission has reserved money for a request, every way the request can end (an
answer, a refusal, an adaptor's exception, a timeout, a caller who left) reaches
``Settler.finish`` or, for a task whose charge is committed with the task, ``Settler.charged``:
the hold becomes the real cost (or is released) exactly once, and one usage row says what happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from polyrelay.billing.meter import Price, Usage
from polyrelay.billing.quota import Reservation, charge
from polyrelay.billing.ratelimit import RateLimiter
from polyrelay.errors import RelayError
from polyrelay.providers.base import Target
from polyrelay.scrub import scrub
from polyrelay.store.snapshot import TokenRecord
from polyrelay.store.writer import BatchWriter
from polyrelay.telemetry import logs, metrics, tracing

if TYPE_CHECKING:
    from polyrelay.telemetry.spans import RequestTrace

log = logging.getLogger("polyrelay")

CLIENT_GONE = 499  # nginx's "client closed request": logged when the caller left before the end


@dataclass(slots=True)
class Outcome:
    """What happened to one request, of any family: filled in as it goes, settled once at the end."""

    request_id: str
    family: str
    endpoint: str
    model: str
    client_ip: str = ""
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)
    token: TokenRecord | None = None
    price: Price | None = None
    reservation: Reservation | None = None
    target: Target | None = None
    attempts: int = 0
    status: int = 0
    usage: Usage | None = None
    fixed_cost: int | None = None  # a charge known up front (task submits), instead of the usage's price
    error: str = ""
    ttfb: float | None = None
    drained: bool = False  # a streamed reply was read to its end
    settled: bool = False
    trace: RequestTrace | None = None  # its span, when tracing is on (ended when it is settled)

    @property
    def served(self) -> bool:
        """An upstream produced something billable (a caller who left mid-stream pays for what was made)."""
        return self.target is not None and (self.status < 400 or self.status == CLIENT_GONE)

    def cost(self) -> int:
        if not self.served or self.token is None:
            return 0
        if self.fixed_cost is not None:
            return self.fixed_cost
        if self.price is None:
            return 0
        return charge(self.token, self.price.cost(self.usage or Usage(source="request")))


def note_attempt(outcome: Outcome) -> Callable[[Target, int], None]:
    """The failover loop's ``on_attempt``: the outcome names the channel and attempt now running."""

    def note(target: Target, attempt: int) -> None:
        outcome.target, outcome.attempts = target, attempt

    return note


def usage_row(outcome: Outcome, cost: int) -> dict[str, Any]:
    """The usage-log row of a finished request; the one place such rows are built."""
    token, target = outcome.token, outcome.target
    served = outcome.served
    usage = (outcome.usage or Usage(source="request")) if served else Usage(source="")
    now = time.perf_counter()
    ttfb = outcome.ttfb if outcome.ttfb is not None else now - outcome.started
    return {
        "request_id": outcome.request_id,
        "created_at": datetime.now(timezone.utc),
        "token_id": token.id if token else None,
        "token_name": token.name if token else "",
        "channel_id": target.channel.id if target else None,
        "channel_name": target.channel.name if target else "",
        "family": outcome.family,
        "endpoint": outcome.endpoint,
        "model": outcome.model,
        "upstream_model": target.upstream_model if target else "",
        "stream": outcome.stream,
        "status_code": outcome.status,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "images": usage.images,
        "seconds": usage.seconds,
        "characters": usage.characters,
        "usage_source": usage.source,
        "cost_micros": cost,
        "price_set": outcome.price is not None,
        "attempts": outcome.attempts,
        "latency_ms": (now - outcome.started) * 1000,
        "ttfb_ms": ttfb * 1000,
        "error": scrub(outcome.error, target.channel.keys)[:2000] if target is not None else outcome.error[:2000],
        "client_ip": outcome.client_ip,
        "user_id": token.user.id if token is not None and token.user is not None else None,
    }


def _told(row: dict[str, Any], outcome: Outcome) -> None:
    """A settled call's usage row, to the metrics, the access log and its trace."""
    token = outcome.token
    metrics.request(row, token.user.group if token is not None and token.user is not None else "")
    logs.request(row)
    if outcome.trace is not None:
        outcome.trace.end(row)


class Settler:
    """Turns holds into charges and outcomes into usage rows, for every family."""

    def __init__(self, writer: BatchWriter, limiter: RateLimiter) -> None:
        self.writer = writer
        self.limiter = limiter

    def finish(self, outcome: Outcome) -> None:
        """Settle the hold to the real cost (0 releases it) and queue the usage row; once."""
        if outcome.settled:
            return
        outcome.settled = True
        cost = outcome.cost()
        reservation = outcome.reservation
        if reservation is not None:
            reservation.settle(cost)
            if outcome.token is not None and outcome.usage is not None:
                self.limiter.used(outcome.token, outcome.usage)
        token = outcome.token
        row = usage_row(outcome, cost)
        self.writer.record_usage(row, token.id if token else None, cost, reservation)
        _told(row, outcome)

    def charged(self, outcome: Outcome, row: dict[str, Any]) -> None:
        """The charge and its usage ``row`` were committed elsewhere (with its task): settle the hold to it,
        and count the call in the metrics and the access log like any other."""
        if outcome.settled:
            return
        outcome.settled = True
        if outcome.reservation is not None:
            outcome.reservation.settle(outcome.cost(), committed=True)
        _told(row, outcome)

    @contextmanager
    def guard(self, outcome: Outcome) -> Iterator[None]:
        """Settle ``outcome`` if the block raises, whatever it raises; the error the caller sees.

        A ``RelayError`` passes as it is; any other exception (an adaptor's bug, an answer that
        could not be read) becomes a 502 in the caller's dialect, never a bare 500; a
        cancellation (the caller left) is logged as 499. Settling on success is the block's job.
        With tracing on, the request's span begins here (settling ends it).
        """
        if tracing.active is not None:
            outcome.trace = tracing.active.request(outcome.family, outcome.endpoint, outcome.request_id,
                                                   outcome.model, outcome.stream)
        try:
            yield
        except RelayError as error:
            outcome.status, outcome.error = error.status, error.message
            self.finish(outcome)
            raise
        except Exception as exc:
            log.exception("request %s failed after admission", outcome.request_id)
            error = RelayError(502, f"The upstream gave an answer polyrelay could not relay ({type(exc).__name__}).",
                               type="upstream_error", code="bad_upstream_response")
            outcome.status, outcome.error = error.status, error.message
            self.finish(outcome)
            raise error from None
        except BaseException:
            outcome.status, outcome.error = CLIENT_GONE, "client disconnected before the answer"
            self.finish(outcome)
            raise
