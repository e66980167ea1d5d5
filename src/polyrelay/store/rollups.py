"""Daily rollups of the usage log: what the dashboard reads instead of scanning raw rows.

The batching writer adds each flush's usage rows to ``usage_daily`` (day x user x model),
``model_daily`` (day x model: the all-users dashboard) and ``channel_daily`` (day x channel)
in the same transaction as the rows, so the rollups always
equal the committed raw rows (until retention deletes raw rows; the rollups stay). A flush is
first summed in Python, so it costs one upsert per key it touched, not one per request; the
upserts go in key order, so two nodes flushing at once lock rows in the same order.

Sums saturate at BIGINT's maximum instead of failing: a price typo booked at the maximum
(``writer.py``) must not make every later flush of that day refuse.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import Connection, Float, Table, case
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from polyrelay.store import models
from polyrelay.store.bulk import integer_range

_MEASURES = models.DAILY_MEASURES
_BUCKETS = models.LATENCY_BUCKETS_MS
_REQUESTS, _ERRORS, _PROMPT, _COMPLETION, _COST, _LATENCY, _FIRST_BUCKET = (_MEASURES.index(name) for name in (
    "requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros", "latency_ms_sum",
    f"latency_le_{_BUCKETS[0]}"))
_BIGINT_MAX = integer_range(models.UsageDaily.__table__.c.requests.type)[1]

Sums = dict[tuple[Any, ...], list[Any]]
_TABLES = (models.UsageDaily, models.ModelDaily, models.ChannelDaily)  # in the order ``sums`` returns
_KEYS = (("day", "user_id", "model"), ("day", "model"), ("day", "channel_id"))


def day_of(created_at: Any) -> date:
    """A usage row's UTC day from its driver value: a datetime (PostgreSQL), or the text SQLite
    stores (whose first ten characters ``date()`` reads, so the raw log and the rollup agree)."""
    if isinstance(created_at, datetime):
        return (created_at.astimezone(timezone.utc) if created_at.tzinfo else created_at).date()
    return date.fromisoformat(str(created_at)[:10])


def add(sums: Sums, key: tuple[Any, ...], status: int, prompt: int, completion: int, cost: int,
        latency_ms: float) -> None:
    """Count one usage row into ``sums[key]``; a refund row (status 0) adds money, not a request."""
    measures = sums.get(key)
    if measures is None:
        measures = sums[key] = [0] * len(_MEASURES)
        measures[_LATENCY] = 0.0
    if status > 0:
        measures[_REQUESTS] += 1
        measures[_LATENCY] += latency_ms
        bucket = bisect_left(_BUCKETS, latency_ms)
        if bucket < len(_BUCKETS):
            measures[_FIRST_BUCKET + bucket] += 1
    if status >= 400:
        measures[_ERRORS] += 1
    measures[_PROMPT] += prompt
    measures[_COMPLETION] += completion
    measures[_COST] = min(measures[_COST] + cost, _BIGINT_MAX)


class Rollups:
    """Sums usage rows (as ``BulkInsert`` tuples) and upserts them into the rollup tables."""

    def __init__(self, positions: dict[str, int]) -> None:
        """``positions``: where each usage-log column is in a row tuple."""
        self._at = [positions[name] for name in ("created_at", "user_id", "model", "channel_id", "status_code",
                                                 "prompt_tokens", "completion_tokens", "cost_micros", "latency_ms")]
        self._statements: dict[str, list[Insert]] = {}

    def sums(self, rows: Sequence[tuple[Any, ...]]) -> tuple[Sums, Sums, Sums]:
        """Per (day, user, model), per (day, model) and per (day, channel)."""
        users: Sums = {}
        models_: Sums = {}
        channels: Sums = {}
        at_created, at_user, at_model, at_channel, at_status, at_prompt, at_completion, at_cost, at_latency = self._at
        for row in rows:
            day = day_of(row[at_created])
            values = (row[at_status], row[at_prompt] or 0, row[at_completion] or 0, row[at_cost] or 0,
                      row[at_latency] or 0.0)
            model = row[at_model] or ""
            add(users, (day, row[at_user] or 0, model), *values)
            add(models_, (day, model), *values)
            add(channels, (day, row[at_channel] or 0), *values)
        return users, models_, channels

    def upsert(self, connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Add the rows to the rollups within the caller's transaction."""
        if not rows:
            return
        statements = self._for(connection.dialect.name)
        for statement, sums, keys in zip(statements, self.sums(rows), _KEYS):
            connection.execute(statement, _params(sums, keys))

    def _for(self, dialect: str) -> list[Insert]:
        statements = self._statements.get(dialect)
        if statements is None:
            statements = self._statements[dialect] = [upsert_statement(table.__table__, dialect) for table in _TABLES]
        return statements


def _params(sums: Sums, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{**dict(zip(keys, key)), **dict(zip(_MEASURES, sums[key]))} for key in sorted(sums)]


def upsert_statement(table: Table, dialect: str) -> Insert:
    """``INSERT ... ON CONFLICT (key) DO UPDATE SET m = m + excluded.m`` (saturating) for every measure."""
    insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    new = insert.excluded
    sets: dict[str, Any] = {}
    for name in _MEASURES:
        column = table.c[name]
        if isinstance(column.type, Float):
            sets[name] = column + new[name]
        else:
            sets[name] = case((column <= _BIGINT_MAX - new[name], column + new[name]), else_=_BIGINT_MAX)
    return insert.on_conflict_do_update(index_elements=[c.name for c in table.primary_key.columns], set_=sets)
