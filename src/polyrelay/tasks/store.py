"""Durable task operations, run on the process's single DB thread.

Every transition is a compare-and-set UPDATE, and money moves in the same
transaction as the ``settlement`` column's ``held -> kept | refunded`` CAS, so a task
is settled exactly once whatever the number of pollers or processes.

Money: a task's charge is written at submit, in one transaction with the task row,
as a usage-log row (``request_id = task-<id>``, ``cost_micros = +cost``) plus
``tokens.used_micros += cost``. A refund writes ``task-<id>-refund`` with ``-cost``
and ``used_micros -= cost``. So ``sum(usage_logs.cost_micros) == tokens.used_micros``
holds per token, and the unique ``request_id`` is a second guard against a double refund.
Both also post the user's ledger entry (``charge`` / ``refund``, request id ``task-<id>``)
and move ``users.balance_micros`` in the same transaction (``polyrelay.billing.accounts.post``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, Row, case, insert, or_, select, update
from sqlalchemy.orm import Session

from polyrelay.billing import accounts
from polyrelay.store import models
from polyrelay.store.periods import PeriodRow, count
from polyrelay.providers.base import CANCEL, FAILURE, IN_PROGRESS, RANK, SUCCESS, TERMINAL, TaskUpdate, TaskView

Task = models.Task
TASKS = Task.__table__
_VIEW_FIELDS = tuple(f.name for f in fields(TaskView))
VIEW_COLUMNS = tuple(TASKS.c[name] for name in _VIEW_FIELDS)


def now_ms() -> int:
    return int(time.time() * 1000)


def view(row: models.Task) -> TaskView:
    return TaskView(**{name: getattr(row, name) for name in _VIEW_FIELDS})


@dataclass(slots=True)
class Settled:
    """A task that reached a terminal state in this transaction, and the refund it got."""

    task: TaskView
    refunded_micros: int


# What a submit stores: its task row, its charge's usage row, and the budget periods the charge counts in.
Creation = tuple[dict[str, Any], dict[str, Any], tuple[PeriodRow, ...]]


def create(engine: Engine, row: dict[str, Any], charge_log: dict[str, Any],
           periods: tuple[PeriodRow, ...] = ()) -> TaskView:
    """Insert the task and its charge atomically; the caller's in-memory reservation is settled after."""
    with Session(engine) as session, session.begin():
        session.execute(insert(Task), [row])
        cost = row["cost_micros"]
        user_id = accounts.user_of_token(session, row["token_id"])
        session.execute(insert(models.UsageLog), [{**charge_log, "cost_micros": cost, "user_id": user_id}])
        if cost and row["token_id"] is not None:
            session.execute(
                update(models.Token)
                .where(models.Token.id == row["token_id"])
                .values(used_micros=models.Token.used_micros + cost, last_used_at=charge_log["created_at"])
            )
            count(session.connection(), dict.fromkeys(periods, cost))
            if user_id is not None:  # the ledger charge and the balance, in the same transaction
                accounts.post(session, user_id, "charge", -cost, charge_log["request_id"], token_id=row["token_id"])
    return view_of(row)


def view_of(values: Mapping[str, Any]) -> TaskView:
    """A view from a row's columns (an inserted row's dict, or a Core result row's mapping)."""
    return TaskView(**{name: values.get(name) for name in _VIEW_FIELDS if name in values})


def view_of_row(row: Row[Any]) -> TaskView:
    """A view from a row selected as ``VIEW_COLUMNS``, by position (no mapping lookups: the poll path's hot spot)."""
    return TaskView(*row)


def get(engine: Engine, task_id: str) -> TaskView | None:
    with engine.connect() as connection:
        row = connection.execute(select(*VIEW_COLUMNS).where(TASKS.c.id == task_id)).first()
    return view_of_row(row) if row is not None else None


def list_for_token(
    engine: Engine, family: str, token_id: int, ids: list[str] | None = None, limit: int = 100
) -> list[TaskView]:
    """A key's own tasks, newest first; ``ids`` restricts to those (unknown or foreign ids are skipped)."""
    query = select(*VIEW_COLUMNS).where(TASKS.c.family == family, TASKS.c.token_id == token_id)
    if ids is not None:
        query = query.where(TASKS.c.id.in_(ids))
    query = query.order_by(TASKS.c.submit_time.desc()).limit(limit)
    with engine.connect() as connection:
        return [view_of_row(row) for row in connection.execute(query)]


def claim_due(engine: Engine, claim: str, now: int, lease_ms: int, limit: int) -> list[TaskView]:
    """Lease up to ``limit`` due tasks nobody holds (or whose holder's lease ran out), oldest due first.

    One statement: ``UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)
    RETURNING``. On PostgreSQL, a concurrent claimer skips the rows another is taking and
    takes the next ones rather than queueing behind them; the UPDATE repeats the "unleased"
    condition, so a row is never won twice. SQLite runs the statement under its write lock.
    """
    t = TASKS
    unleased = or_(t.c.lease_owner.is_(None), t.c.lease_expires_at < now)
    due = (
        select(t.c.id)
        .where(t.c.next_poll_at.is_not(None), t.c.next_poll_at <= now, unleased)
        .order_by(t.c.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)  # rendered on PostgreSQL only
    )
    with engine.begin() as connection:
        rows = connection.execute(
            update(t)
            .where(t.c.id.in_(due.scalar_subquery()), unleased, t.c.next_poll_at.is_not(None),
                   t.c.status.not_in(TERMINAL))
            .values(lease_owner=claim, lease_expires_at=now + lease_ms)
            .returning(*VIEW_COLUMNS)
        ).all()
    return [view_of_row(row) for row in rows]


def renew(engine: Engine, held: dict[str, list[str]], now: int, lease_ms: int) -> int:
    """Extend the leases rounds still at work hold (claim -> task ids); how many rows are still ours.

    By primary key, so it costs the same however large the table's history grows.
    """
    renewed = 0
    with engine.begin() as connection:
        for claim, ids in held.items():
            result = connection.execute(
                update(TASKS).where(TASKS.c.id.in_(ids), TASKS.c.lease_owner == claim)
                .values(lease_expires_at=now + lease_ms)
            )
            renewed += int(result.rowcount)
    return renewed


@dataclass(slots=True)
class Advance:
    """The poller's verdict on one claimed task: its new state (or None: unchanged) and next poll."""

    task: TaskView
    update: TaskUpdate | None
    next_poll_at: int | None


def advance_values(advance: Advance, now: int) -> tuple[dict[str, Any], bool]:
    """The columns a poll's verdict sets on its task (its lease aside), and whether callers see a change."""
    task, new = advance.task, advance.update
    values: dict[str, Any] = {"next_poll_at": advance.next_poll_at, "updated_at": now}
    visible = new is not None and (new.status != task.status or new.progress != task.progress)
    if new is not None:
        values.update(
            status=new.status,
            progress=new.progress,
            fail_reason=new.fail_reason[:4000],
            start_time=task.start_time or new.start_time or (now if RANK[new.status] >= RANK[IN_PROGRESS] else None),
        )
        if new.result is not None:
            values["result"] = new.result
        if visible and task.notify_hook:
            values["notify_due_at"] = now  # a callback is owed (tasks/callbacks.py)
        if new.status in TERMINAL:
            values.update(next_poll_at=None, finish_time=new.finish_time or now)
    return values, visible


def apply_each(
    engine: Engine, claim: str, advances: list[Advance], now: int
) -> tuple[list[TaskView], list[Settled]]:
    """``apply``, one compare-and-set per task: the slow path, for a round some other process raced."""
    changed: list[TaskView] = []
    settled: list[Settled] = []
    with Session(engine) as session, session.begin():
        for advance in advances:
            task, new = advance.task, advance.update
            values, visible = advance_values(advance, now)
            values.update(lease_owner=None, lease_expires_at=None, poll_count=Task.poll_count + 1)
            result = session.execute(
                update(Task)
                .where(Task.id == task.id, Task.lease_owner == claim, Task.status == task.status,
                       Task.status.not_in(TERMINAL))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                continue
            if new is None:
                continue
            # The row now holds exactly these values: build its view here rather than read it back.
            after = replace(task, **{k: v for k, v in values.items() if k in _VIEW_FIELDS and k != "poll_count"},
                            poll_count=task.poll_count + 1)
            if new.status in TERMINAL:
                refunded = _settle(session, task, keep=new.status == SUCCESS, reason=new.fail_reason, now=now)
                if refunded is not None:
                    after.settlement = "kept" if new.status == SUCCESS else "refunded"
                    settled.append(Settled(after, refunded))
                changed.append(after)
            elif visible:
                changed.append(after)
    return changed, settled


def finish(engine: Engine, task_id: str, status: str, reason: str, now: int) -> Settled | None:
    """End a task from outside the poller (caller's cancel); None if it had already ended."""
    assert status in (FAILURE, CANCEL)
    with Session(engine) as session, session.begin():
        result = session.execute(
            update(Task)
            .where(Task.id == task_id, Task.status.not_in(TERMINAL))
            .values(status=status, fail_reason=reason, progress="", finish_time=now, next_poll_at=None,
                    lease_owner=None, lease_expires_at=None, updated_at=now,
                    notify_due_at=case((Task.notify_hook != "", now), else_=None))
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return None
        row = session.get(Task, task_id, populate_existing=True)
        assert row is not None
        refunded = _settle(session, view(row), keep=False, reason=reason, now=now)
        session.refresh(row)
        return Settled(view(row), refunded or 0)


def release(engine: Engine, owner_prefix: str) -> None:
    """Give back the leases this process holds (graceful stop), so another poller takes over at once."""
    with Session(engine) as session, session.begin():
        session.execute(
            update(Task)
            .where(Task.lease_owner.like(owner_prefix + "%"))
            .values(lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )


def _settle(session: Session, task: TaskView, *, keep: bool, reason: str, now: int) -> int | None:
    """``held -> kept | refunded``, at most once; the micro-USD refunded now, None if settled before."""
    result = session.execute(
        update(Task)
        .where(Task.id == task.id, Task.settlement == "held")
        .values(settlement="kept" if keep else "refunded")
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    if keep or not task.cost_micros:
        return 0
    cost = task.cost_micros
    user_id = accounts.user_of_token(session, task.token_id)
    session.execute(
        insert(models.UsageLog),
        [
            {
                "user_id": user_id,
                "request_id": f"task-{task.id}-refund",
                "created_at": datetime.now(timezone.utc),
                "token_id": task.token_id,
                "token_name": task.token_name,
                "channel_id": task.channel_id,
                "family": task.family,
                "endpoint": "task.refund",
                "model": task.model,
                "status_code": 0,
                "usage_source": "request",
                "cost_micros": -cost,
                "error": reason[:2000],
            }
        ],
    )
    if task.token_id is not None:
        session.execute(
            update(models.Token)
            .where(models.Token.id == task.token_id)
            .values(used_micros=models.Token.used_micros - cost)
        )
        if user_id is not None:
            accounts.post(session, user_id, "refund", cost, f"task-{task.id}", reason[:200], token_id=task.token_id)
    return cost
