"""The database reads of the watch loop: small, indexed, on the report threads (never the writer's)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, case, func, select

from polyrelay.providers.base import TERMINAL
from polyrelay.scrub import scrub
from polyrelay.store import models


@dataclass(frozen=True, slots=True)
class ChannelState:
    name: str
    enabled: bool
    reason: str  # why it was disabled, the channel's keys scrubbed out
    balance_micros: int | None  # the upstream balance fetched (relay/balance.py) or noted by hand


def channel_states(engine: Engine) -> dict[int, ChannelState]:
    """Every channel's ``enabled``: the snapshot holds enabled channels only, and not why one left."""
    c = models.Channel
    with engine.connect() as connection:
        rows = connection.execute(select(c.id, c.name, c.enabled, c.disabled_reason, c.keys, c.balance_micros)).all()
    return {row.id: ChannelState(row.name, bool(row.enabled), scrub(row.disabled_reason or "", tuple(row.keys or ())),
                                 row.balance_micros) for row in rows}


def error_counts(engine: Engine, since: datetime) -> tuple[int, int]:
    """(requests, answers of status 500 or more) logged since ``since``: one range scan of the created_at index."""
    u = models.UsageLog
    with engine.connect() as connection:
        total, errors = connection.execute(
            select(func.count(), func.coalesce(func.sum(case((u.status_code >= 500, 1), else_=0)), 0))
            .where(u.created_at >= since)
        ).one()
    return int(total), int(errors)


def late_tasks(engine: Engine, submitted_before_ms: int, limit: int) -> int:
    """Unfinished tasks submitted before the cutoff, counted up to ``limit`` (only unfinished tasks have
    a ``next_poll_at``, so the scan stays on that index's non-null part)."""
    t = models.Task
    late = (select(t.id).where(t.next_poll_at.is_not(None), t.submit_time < submitted_before_ms,
                               t.status.not_in(TERMINAL)).limit(limit).subquery())
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(late)).scalar_one())


def verified_emails(engine: Engine, user_ids: list[int]) -> dict[int, str]:
    """The verified addresses of these users (the snapshot holds no addresses): a primary-key lookup."""
    u = models.User
    with engine.connect() as connection:
        rows = connection.execute(select(u.id, u.email).where(u.id.in_(user_ids), u.email.is_not(None),
                                                               u.email_verified.is_(True))).all()
    return {row.id: row.email for row in rows}
