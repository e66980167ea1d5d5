"""The spend of each period of a periodic budget (table ``budget_periods``; billing.periods says why).

Charges are added by the batching writer and the task engine in the transaction that commits them;
grants and the admin API read what a period has spent. Never on the hot path.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, case, select
from sqlalchemy.dialects import postgresql, sqlite

from polyrelay.store import models

PeriodRow = tuple[str, str, int]  # (subject, period, start): "t:<token id>" or "u:<user id>", daily..., epoch s
_TABLE = models.BudgetPeriod.__table__
_BIGINT_MAX = 2**63 - 1
_SPENT = select(_TABLE.c.used_micros).where(_TABLE.c.subject == bindparam("subject"),
                                            _TABLE.c.period == bindparam("period"),
                                            _TABLE.c.starts_at == bindparam("start"))
_UPSERTS: dict[str, Any] = {}


def spent_in(connection: Connection, subject: str, period: str, start: int) -> int:
    """What was charged under one period of ``subject`` and committed."""
    value = connection.execute(_SPENT, {"subject": subject, "period": period, "start": start}).scalar()
    return int(value or 0)


def count(connection: Connection, charges: dict[PeriodRow, int]) -> None:
    """Add committed charges to their periods, in the caller's transaction; in key order, so two nodes
    committing at once lock rows in the same order. Sums saturate at BIGINT's maximum rather than
    refuse the batch (a price typo is booked at the maximum, see store/writer.py)."""
    rows = [{"subject": subject, "period": period, "starts_at": start, "used_micros": micros}
            for (subject, period, start), micros in sorted(charges.items()) if micros > 0]
    if not rows:
        return
    dialect = connection.dialect.name
    statement = _UPSERTS.get(dialect)
    if statement is None:
        insert = postgresql.insert(_TABLE) if dialect == "postgresql" else sqlite.insert(_TABLE)
        used, new = _TABLE.c.used_micros, insert.excluded.used_micros
        statement = _UPSERTS[dialect] = insert.on_conflict_do_update(
            index_elements=["subject", "period", "starts_at"],
            set_={"used_micros": case((used <= _BIGINT_MAX - new, used + new), else_=_BIGINT_MAX)})
    connection.execute(statement, rows)


def charges_of(rows: tuple[PeriodRow, ...], micros: int, into: dict[PeriodRow, int]) -> None:
    """Add one charge of ``micros`` to each of its period rows in ``into``."""
    for row in rows:
        into[row] = into.get(row, 0) + micros
