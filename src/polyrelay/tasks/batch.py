"""The task engine's hot writes, batched: many submits in one transaction, a poll round in a few statements.

``create_many`` stores the tasks and charges of the submits that queued up while the DB thread
was busy; ``apply`` writes a whole poll round. Both write exactly the rows ``store.create`` and
``store.apply_each`` write one task at a time (the same usage-log and ledger rows, the same sums
on tokens and balances), as Core ``executemany`` statements built once, with no ORM objects.

A batch must prove it did what the row-by-row path would have: every compare-and-set hit its
row (the summed rowcount equals the batch's size) and no unique key refused a row. Otherwise
(a cancel or a lost lease raced the round, a duplicate request id) its transaction is rolled
back whole and the row-by-row path runs instead, so nothing happens twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, Update, bindparam, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from polyrelay.providers.base import SUCCESS, TERMINAL, TaskView
from polyrelay.store import models
from polyrelay.store.periods import PeriodRow, charges_of, count
from polyrelay.tasks import store
from polyrelay.tasks.store import TASKS, Advance, Settled

_TOKENS = models.Token.__table__
_USERS = models.User.__table__
_USAGE = models.UsageLog.__table__
_LEDGER = models.LedgerEntry.__table__
_VIEW_FIELDS = frozenset(column.name for column in store.VIEW_COLUMNS)

_TOKEN_SPEND = (
    update(_TOKENS).where(_TOKENS.c.id == bindparam("b_id"))
    .values(used_micros=_TOKENS.c.used_micros + bindparam("b_micros"))
)
_TOKEN_SPEND_AT = _TOKEN_SPEND.values(last_used_at=bindparam("b_at"))
_BALANCE = (
    update(_USERS).where(_USERS.c.id == bindparam("b_id"))
    .values(balance_micros=_USERS.c.balance_micros + bindparam("b_micros"))
)
_SETTLE = (
    update(TASKS).where(TASKS.c.id == bindparam("b_id"), TASKS.c.settlement == "held")
    .values(settlement=bindparam("b_settlement"))
)


class _Raced(Exception):
    """A row of the batch failed its compare-and-set: redo it row by row."""


def create_many(engine: Engine, items: list[store.Creation]) -> list[TaskView | Exception]:
    """``store.create`` for each (task row, charge log, budget periods); per item, its view or why it failed."""
    try:
        with engine.begin() as connection:
            _create(connection, items)
        return [store.view_of(row) for row, *_ in items]
    except SQLAlchemyError:
        pass  # one by one, so each caller gets its own answer
    results: list[TaskView | Exception] = []
    for row, charge_log, periods in items:
        try:
            results.append(store.create(engine, row, charge_log, periods))
        except Exception as exc:
            results.append(exc)
    return results


def apply(engine: Engine, claim: str, advances: list[Advance], now: int) -> tuple[list[TaskView], list[Settled]]:
    """Write a poll round's results and release its leases, in one transaction.

    Returns the tasks whose visible state changed (for callbacks) and those settled now.
    A row another process changed meanwhile (a cancel, a lost lease) fails its CAS and
    is left alone (by the row-by-row path this then falls back to).
    """
    if not advances:
        return [], []
    if engine.dialect.supports_sane_multi_rowcount:
        try:
            with engine.begin() as connection:
                return _apply(connection, claim, advances, now)
        except (_Raced, IntegrityError):
            pass
    return store.apply_each(engine, claim, advances, now)


def _create(connection: Connection, items: list[store.Creation]) -> None:
    rows = [row for row, *_ in items]
    _insert(connection, TASKS, rows)
    users = _users_of(connection, (row["token_id"] for row in rows))
    _insert(connection, _USAGE, [{**log, "cost_micros": row["cost_micros"], "user_id": users.get(row["token_id"])}
                                 for row, log, _ in items])
    spent: dict[int, tuple[int, datetime]] = {}
    in_periods: dict[PeriodRow, int] = {}
    ledger = []
    now = datetime.now(timezone.utc)
    for row, log, periods in items:
        cost, token_id = row["cost_micros"], row["token_id"]
        if not cost or token_id is None:
            continue
        charges_of(periods, cost, in_periods)
        total, at = spent.get(token_id, (0, log["created_at"]))
        spent[token_id] = (total + cost, max(at, log["created_at"]))
        if (user_id := users.get(token_id)) is not None:
            ledger.append({"created_at": now, "user_id": user_id, "token_id": token_id, "kind": "charge",
                           "amount_micros": -cost, "request_id": log["request_id"], "note": ""})
    if spent:
        connection.execute(_TOKEN_SPEND_AT, [{"b_id": token_id, "b_micros": total, "b_at": at}
                                             for token_id, (total, at) in spent.items()])
    count(connection, in_periods)
    _post(connection, ledger)


def _apply(connection: Connection, claim: str, advances: list[Advance], now: int) -> tuple[list[TaskView], list[Settled]]:
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    written: list[tuple[Advance, dict[str, Any], bool]] = []
    for advance in advances:
        task = advance.task
        values, visible = store.advance_values(advance, now)
        params = {"b_id": task.id, "b_claim": claim, "b_old": task.status}
        params.update({"b_" + key: value for key, value in values.items()})
        shapes.setdefault(tuple(sorted(values)), []).append(params)
        written.append((advance, values, visible))
    hit = sum(connection.execute(_round_update(shape), params).rowcount for shape, params in shapes.items())
    if hit != len(advances):
        raise _Raced
    changed: list[TaskView] = []
    ended: list[tuple[TaskView, TaskView, bool, str]] = []  # (before, after, kept, reason)
    for advance, values, visible in written:
        task, new = advance.task, advance.update
        if new is None:
            continue
        # The row now holds exactly these values: build its view here rather than read it back.
        after = replace(task, **{k: v for k, v in values.items() if k in _VIEW_FIELDS}, poll_count=task.poll_count + 1)
        if new.status in TERMINAL:
            ended.append((task, after, new.status == SUCCESS, new.fail_reason))
        elif visible:
            changed.append(after)
    settled: list[Settled] = []
    if ended:
        result = connection.execute(_SETTLE, [{"b_id": task.id, "b_settlement": "kept" if kept else "refunded"}
                                              for task, _, kept, _ in ended])
        if result.rowcount != len(ended):
            raise _Raced  # settled before: only the row-by-row path can tell which
        _refund(connection, [(task, reason) for task, _, kept, reason in ended if not kept and task.cost_micros])
        for task, after, kept, _ in ended:
            after.settlement = "kept" if kept else "refunded"
            settled.append(Settled(after, 0 if kept else task.cost_micros))
            changed.append(after)
    return changed, settled


@lru_cache(maxsize=64)
def _round_update(shape: tuple[str, ...]) -> Update:
    """The CAS UPDATE of a round's rows that set these columns; built once per shape."""
    t = TASKS
    return (
        update(t)
        .where(t.c.id == bindparam("b_id"), t.c.lease_owner == bindparam("b_claim"), t.c.status == bindparam("b_old"))
        .values({"lease_owner": None, "lease_expires_at": None, "poll_count": t.c.poll_count + 1,
                 **{column: bindparam("b_" + column) for column in shape}})
    )


def _refund(connection: Connection, refunds: list[tuple[TaskView, str]]) -> None:
    """The refunds' usage-log rows, token spend and ledger entries (``store._settle``'s money part)."""
    if not refunds:
        return
    users = _users_of(connection, (task.token_id for task, _ in refunds))
    created = datetime.now(timezone.utc)
    _insert(connection, _USAGE, [
        {"user_id": users.get(task.token_id), "request_id": f"task-{task.id}-refund", "created_at": created,
         "token_id": task.token_id, "token_name": task.token_name, "channel_id": task.channel_id,
         "family": task.family, "endpoint": "task.refund", "model": task.model, "status_code": 0,
         "usage_source": "request", "cost_micros": -task.cost_micros, "error": reason[:2000]}
        for task, reason in refunds
    ])
    spent: dict[int, int] = {}
    ledger = []
    for task, reason in refunds:
        if task.token_id is None:
            continue
        spent[task.token_id] = spent.get(task.token_id, 0) - task.cost_micros
        if (user_id := users.get(task.token_id)) is not None:
            ledger.append({"created_at": created, "user_id": user_id, "token_id": task.token_id, "kind": "refund",
                           "amount_micros": task.cost_micros, "request_id": f"task-{task.id}", "note": reason[:200]})
    if spent:
        connection.execute(_TOKEN_SPEND, [{"b_id": token_id, "b_micros": micros} for token_id, micros in spent.items()])
    _post(connection, ledger)


def _post(connection: Connection, entries: list[dict[str, Any]]) -> None:
    """``accounts.post`` for many entries: the ledger rows, and each user's balance moved by their sum."""
    if not entries:
        return
    connection.execute(_LEDGER.insert(), entries)  # (request_id, kind) is unique: a repeat fails the batch
    moved: dict[int, int] = {}
    for entry in entries:
        moved[entry["user_id"]] = moved.get(entry["user_id"], 0) + entry["amount_micros"]
    connection.execute(_BALANCE, [{"b_id": user_id, "b_micros": micros} for user_id, micros in moved.items()])


def _users_of(connection: Connection, token_ids: Iterable[int | None]) -> dict[int, int]:
    ids = {token_id for token_id in token_ids if token_id is not None}
    if not ids:
        return {}
    rows = connection.execute(select(_TOKENS.c.id, _TOKENS.c.user_id).where(_TOKENS.c.id.in_(ids)))
    return {token_id: user_id for token_id, user_id in rows if user_id is not None}


def _insert(connection: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """executemany INSERT; rows grouped by their keys, as one statement binds one set of columns."""
    by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        by_keys.setdefault(tuple(row), []).append(row)
    for group in by_keys.values():
        connection.execute(table.insert(), group)
