"""Periodic budgets as the admin API shows them: the current period, its spend and when it resets."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import object_session
from starlette.requests import Request

from polyrelay.billing.periods import PeriodClock
from polyrelay.store import models
from polyrelay.store.periods import spent_in
from polyrelay.store.snapshot import key_budget_period


def clock_of(request: Request) -> PeriodClock:
    """The clock this process reckons budget periods on (``budget.clock_offset_s``)."""
    clock: PeriodClock = request.app.state.relay.budgets.clock
    return clock


def _budget(row: models.Token | models.User, subject: str, limit: int | None, period: str | None,
            clock: PeriodClock) -> dict[str, Any] | None:
    if limit is None or period is None:
        return None
    session = object_session(row)
    assert session is not None, "a row read in a session"
    current = clock.current(period)
    return current.json(limit, spent_in(session.connection(), subject, current.kind, current.start))


def token_budget(row: models.Token, clock: PeriodClock) -> dict[str, Any] | None:
    """A key's periodic limit now (the stricter of its owner's and an administrator's), or None."""
    limits = [limit for limit in (row.quota_micros, row.admin_quota_micros) if limit is not None]
    return _budget(row, f"t:{row.id}", min(limits, default=None), key_budget_period(row), clock)


def user_budget(row: models.User, clock: PeriodClock) -> dict[str, Any] | None:
    """A user's cap per period now, or None."""
    return _budget(row, f"u:{row.id}", row.budget_micros, row.budget_period, clock)
