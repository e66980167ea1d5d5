"""Durable bookkeeping of notifyHook callbacks, so a restart does not drop them.

``tasks.notify_due_at`` holds the time of the newest visible change whose callback is
not delivered yet (set in the same transaction as the change, by ``batch.apply`` (or ``store.apply_each``) and
``store.finish``; NULL otherwise). The process that made the change delivers it from
memory (``notify.Notifier``) and then clears the column, compare-and-set on that time
(a newer change keeps its own mark). A graceful stop marks its undelivered callbacks as
due at once (``hand_back``); a crashed process's marks go stale. Each poller tick,
``recover`` takes over stale marks -- one process per task, by a compare-and-set that moves
the mark to now -- and delivers the task's *current* state, so a receiver still never
sees a task go backwards. Delivery is at least once.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from polyrelay.store import models
from polyrelay.providers.base import TaskView
from polyrelay.tasks.store import view

Task = models.Task
HANDED_BACK = 1  # a mark this old is stale for everyone: recovered at the next tick


def settle(engine: Engine, delivered: list[tuple[str, int]], handed_back: list[tuple[str, int]]) -> None:
    """Clear the marks of delivered (or given-up) callbacks; make handed-back ones due at once."""
    if not delivered and not handed_back:
        return
    with Session(engine) as session, session.begin():
        for task_id, version in delivered:
            session.execute(
                update(Task).where(Task.id == task_id, Task.notify_due_at <= version)
                .values(notify_due_at=None).execution_options(synchronize_session=False)
            )
        for task_id, version in handed_back:
            session.execute(
                update(Task).where(Task.id == task_id, Task.notify_due_at == version)
                .values(notify_due_at=HANDED_BACK).execution_options(synchronize_session=False)
            )


def recover(engine: Engine, now: int, stale_before: int, exclude: Collection[str], limit: int = 500) -> list[TaskView]:
    """Take over callbacks whose mark is older than ``stale_before``; returns the tasks won."""
    with Session(engine) as session, session.begin():
        rows = session.execute(
            select(Task.id, Task.notify_due_at)
            .where(Task.notify_due_at.is_not(None), Task.notify_due_at < stale_before)
            .order_by(Task.notify_due_at).limit(limit)
        ).all()
        won = []
        for task_id, due in rows:
            if task_id in exclude:
                continue
            result = session.execute(
                update(Task).where(Task.id == task_id, Task.notify_due_at == due, Task.notify_hook != "")
                .values(notify_due_at=now).execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                won.append(task_id)
            else:  # no hook (should not happen) or another process won: nothing for us
                session.execute(
                    update(Task).where(Task.id == task_id, Task.notify_due_at == due, Task.notify_hook == "")
                    .values(notify_due_at=None).execution_options(synchronize_session=False)
                )
        if not won:
            return []
        return [view(row) for row in session.scalars(select(Task).where(Task.id.in_(won)))]


def pending(engine: Engine) -> int:
    """How many tasks have a callback not delivered yet."""
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(Task).where(Task.notify_due_at.is_not(None))) or 0)
