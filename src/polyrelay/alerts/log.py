"""The record of alerts told (``alert_log``): what the console's Health page and ``GET /api/alerts``
(api/admin/alerts.py) list."""

from __future__ import annotations

from sqlalchemy import Engine, insert

from polyrelay.alerts.messages import Alert
from polyrelay.store import models

_SUBJECT = models.AlertLog.__table__.c.subject.type.length


def record(engine: Engine, node: str, alerts: list[Alert], emailed: set[int]) -> None:
    """One row per alert; ``emailed``: the users whose alert also went to their own address."""
    rows = [{"created_at": a.at, "kind": a.kind, "severity": a.severity, "subject": a.subject[:_SUBJECT],
             "details": a.details, "node": node, "user_id": a.user_id,
             "user_emailed": a.user_id in emailed and a.kind == "balance_low" and not a.repeat} for a in alerts]
    with engine.begin() as connection:
        connection.execute(insert(models.AlertLog), rows)

