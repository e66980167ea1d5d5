"""The series polyrelay exports, and the cheap ways the hot path feeds them.

A request only adds to plain numbers kept per label set (one dict lookup, no ``.labels()``,
no lock, no file write); ``sync`` moves them into the prometheus-client series at scrape time
and every second (``exposition.keep_synced``), through children bound once per label set.
With ``--workers N`` the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers import this
module, so every series is kept in files shared by the workers (``exposition.render``).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# Few buckets: each one is a series per label set (seconds).
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TTFB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_FLUSH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)

_REQUEST = ("family", "endpoint", "model", "channel", "status_class")
_MONEY = ("model", "channel", "group")

REQUESTS = Counter("polyrelay_requests", "Relayed requests, by how they ended.", _REQUEST)
ERRORS = Counter("polyrelay_errors", "Relayed requests answered with an error (status >= 400).", _REQUEST)
LATENCY = Histogram("polyrelay_request_duration_seconds", "Time from admission to the last byte.",
                    ("family", "model", "channel"), buckets=_LATENCY_BUCKETS)
TTFB = Histogram("polyrelay_time_to_first_byte_seconds", "Time from admission to the upstream's first byte.",
                 ("family", "model", "channel"), buckets=_TTFB_BUCKETS)
TOKENS = Counter("polyrelay_tokens", "Tokens billed, by kind (prompt, completion, cached).", (*_MONEY, "kind"))
SPEND = Counter("polyrelay_spend_micros", "Money charged, in micro-USD.", _MONEY)
UPSTREAM = Counter("polyrelay_upstream_responses", "Upstream answers by status code (0: no answer: "
                   "a timeout or a refused connection).", ("channel", "code"))
FAILOVERS = Counter("polyrelay_failovers", "Attempts that failed on a channel and moved to the next.", ("channel",))
REFUSALS = Counter("polyrelay_refusals", "Calls refused before any upstream was tried: a missing or bad key, an "
                   "address outside the key's fence, a rate limit; by the error code answered.", ("reason",))
FLUSH = Histogram("polyrelay_writer_flush_seconds", "Time of one batching-writer flush.", buckets=_FLUSH_BUCKETS)
FLUSH_FAILURES = Counter("polyrelay_writer_flush_failures", "Flushes that left rows to retry (database down, a bug).")

# Scrape-time gauges, set by ``exposition.Gauges`` from the process's state.
CHANNEL_STATE = Gauge("polyrelay_channel_state", "1 for the state each channel is in (enabled, cooling, disabled).",
                      ("channel", "state"), multiprocess_mode="mostrecent")
RESERVED = Gauge("polyrelay_reserved_micros", "Money held by requests in flight (reservations).",
                 multiprocess_mode="livesum")
LEASED = Gauge("polyrelay_budget_leased_micros", "Money leased to this node for reservations (billing.budget).",
               multiprocess_mode="livesum")
QUEUE = Gauge("polyrelay_writer_queue_rows", "Usage rows waiting for the next flush.", multiprocess_mode="livesum")
TASKS = Gauge("polyrelay_tasks_in_flight", "Tasks still polled, by family and status.", ("family", "status"),
              multiprocess_mode="mostrecent")
POLL_LAG = Gauge("polyrelay_task_poll_lag_seconds", "How late the most overdue task poll is (0: none is due).",
                 multiprocess_mode="mostrecent")
CALLBACKS = Gauge("polyrelay_callback_backlog", "Task callbacks (notifyHook) not delivered yet.",
                  multiprocess_mode="mostrecent")


class _Bound:
    """The children of one (family, endpoint, model, channel, status, group): bound once, then reused."""

    __slots__ = ("requests", "errors", "latency", "ttfb", "prompt", "completion", "cached", "spend")

    def __init__(self, family: str, endpoint: str, model: str, channel: str, status: int, group: str) -> None:
        status_class = f"{status // 100}xx" if status else "none"
        self.requests = REQUESTS.labels(family, endpoint, model, channel, status_class)
        self.errors = ERRORS.labels(family, endpoint, model, channel, status_class) if status >= 400 else None
        self.latency = LATENCY.labels(family, model, channel)
        self.ttfb = TTFB.labels(family, model, channel)
        self.prompt = TOKENS.labels(model, channel, group, "prompt")
        self.completion = TOKENS.labels(model, channel, group, "completion")
        self.cached = TOKENS.labels(model, channel, group, "cached")
        self.spend = SPEND.labels(model, channel, group)


class _Pending:
    """What one label set counted since the last ``sync``: plain numbers, added to on the event loop."""

    __slots__ = ("key", "requests", "prompt", "completion", "cached", "spend", "latency", "latency_sum", "ttfb",
                 "ttfb_sum")

    def __init__(self, key: tuple[str, str, str, str, int, str]) -> None:
        self.key = key
        self.requests = self.prompt = self.completion = self.cached = self.spend = 0
        self.latency = [0] * (len(_LATENCY_BUCKETS) + 1)  # per bucket (not cumulative), the last one +Inf
        self.ttfb = [0] * (len(_TTFB_BUCKETS) + 1)
        self.latency_sum = self.ttfb_sum = 0.0


_pending: dict[tuple[str, str, str, str, int, str], _Pending] = {}
_bound: dict[tuple[str, str, str, str, int, str], _Bound] = {}
_answers: dict[tuple[str, int], int] = {}
_failovers: dict[str, int] = {}
_refusals: dict[str, int] = {}


def request(row: dict[str, Any], group: str) -> None:
    """Count one finished request from its usage row (``relay.settlement.usage_row``).

    The hot path only adds to plain numbers (about 2 µs, ``bench/metrics_cost.py``); a prometheus-client
    ``inc``/``observe`` costs 1-3 µs each, and several times that in multiprocess mode, where every
    one writes a memory-mapped file. ``sync`` hands the sums over at scrape time and every second.
    """
    key = (row["family"], row["endpoint"], row["model"], row["channel_name"], row["status_code"], group)
    pending = _pending.get(key)
    if pending is None:
        pending = _pending[key] = _Pending(key)
    pending.requests += 1
    pending.prompt += row["prompt_tokens"]
    pending.completion += row["completion_tokens"]
    pending.cached += row["cached_tokens"]
    pending.spend += row["cost_micros"]
    seconds = row["latency_ms"] / 1000
    pending.latency[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
    pending.latency_sum += seconds
    seconds = row["ttfb_ms"] / 1000
    pending.ttfb[bisect_left(_TTFB_BUCKETS, seconds)] += 1
    pending.ttfb_sum += seconds


def upstream_answered(channel: str, status: int) -> None:
    """One attempt on ``channel`` ended with the upstream's ``status`` (0: no answer)."""
    key = (channel, status)
    _answers[key] = _answers.get(key, 0) + 1


def failover(channel: str) -> None:
    """An attempt failed on ``channel`` and the loop moves to the next one."""
    _failovers[channel] = _failovers.get(channel, 0) + 1


def refused(reason: str) -> None:
    """A call was refused at admission (``reason``: the error code it was answered with)."""
    _refusals[reason] = _refusals.get(reason, 0) + 1


def sync() -> None:
    """Move what was counted since the last call into the exported series (on the event loop)."""
    for key, pending in _pending.items():
        if not pending.requests:
            continue
        bound = _bound.get(key)
        if bound is None:
            bound = _bound[key] = _Bound(*key)
        bound.requests.inc(pending.requests)
        if bound.errors is not None:
            bound.errors.inc(pending.requests)
        for child, amount in ((bound.prompt, pending.prompt), (bound.completion, pending.completion),
                              (bound.cached, pending.cached), (bound.spend, pending.spend)):
            if amount:
                child.inc(amount)
        _add(bound.latency, pending.latency, pending.latency_sum)
        _add(bound.ttfb, pending.ttfb, pending.ttfb_sum)
        _pending[key] = _Pending(key)
    answers, failovers, refusals = dict(_answers), dict(_failovers), dict(_refusals)
    _answers.clear()
    _failovers.clear()
    _refusals.clear()
    for (channel, status), count in answers.items():
        UPSTREAM.labels(channel, str(status)).inc(count)
    for channel, count in failovers.items():
        FAILOVERS.labels(channel).inc(count)
    for reason, count in refusals.items():
        REFUSALS.labels(reason).inc(count)


def _add(child: Any, counts: list[int], total: float) -> None:
    """Add a batch of observations to a histogram child: its per-bucket values and its sum, which
    is what ``Histogram.observe`` itself updates (prometheus-client keeps them non-cumulative)."""
    for value, count in zip(child._buckets, counts):
        if count:
            value.inc(count)
    child._sum.inc(total)


def flushed(seconds: float, ok: bool) -> None:
    """One batching-writer flush took ``seconds``; ``ok`` False: rows were left to retry."""
    FLUSH.observe(seconds)
    if not ok:
        FLUSH_FAILURES.inc()
