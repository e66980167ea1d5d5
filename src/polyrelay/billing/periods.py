"""Budget periods: where a daily, weekly or monthly budget's current period starts and ends (UTC).

A periodic budget counts the money charged under each period in a row of its own
(``budget_periods``, keyed by subject, period and start), so a "reset" is only a new row: it
happens exactly once whatever the number of nodes, needs no background job, and survives a
restart. A charge counts in the period its call was admitted in, however late it settles or
commits. The clock can be shifted (``budget.clock_offset_s``) so drills and tests reach a
boundary without waiting for midnight; the relay, grants and the API all read this one clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

PERIODS = ("daily", "weekly", "monthly")


@dataclass(frozen=True, slots=True)
class Period:
    kind: str  # daily | weekly | monthly
    start: int  # epoch seconds, UTC
    end: int  # the next period's start: when the budget resets

    def json(self, limit_micros: int, spent_micros: int) -> dict[str, Any]:
        """The period as the API shows it."""
        return {"period": self.kind, "limit_micros": limit_micros, "spent_micros": spent_micros,
                "starts_at": _iso(self.start), "resets_at": _iso(self.end)}

    def resets_at(self) -> str:
        return _iso(self.end)


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def period_at(kind: str, at: float) -> Period:
    """The period of ``kind`` that contains the instant ``at`` (epoch seconds): days from UTC midnight,
    weeks from Monday (ISO weeks), months from the 1st."""
    moment = datetime.fromtimestamp(at, timezone.utc)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "daily":
        start, end = day, day + timedelta(days=1)
    elif kind == "weekly":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif kind == "monthly":
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    else:
        raise ValueError(f"unknown budget period {kind!r}")
    return Period(kind, int(start.timestamp()), int(end.timestamp()))


class PeriodClock:
    """The current period of each kind, recomputed only when one ends (a float compare per call)."""

    def __init__(self, offset_s: float = 0.0) -> None:
        self.offset_s = offset_s
        self._current: dict[str, Period] = {}

    def now(self) -> float:
        return time.time() + self.offset_s

    def current(self, kind: str) -> Period:
        now = self.now()
        period = self._current.get(kind)
        if period is None or not period.start <= now < period.end:
            period = self._current[kind] = period_at(kind, now)
        return period
