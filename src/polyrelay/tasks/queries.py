"""Read-only task listings beyond store.py's basics: a key's queue, paged, filtered queries, counts.

Run on the DB thread like store.py. Column filters (ids, action, status) are SQL; filters
on the upstream's free text (prompt, promptEn, description, state) are applied in Python
over at most ``TEXT_FILTER_SCAN`` of the key's newest matching tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from polyrelay.store import models
from polyrelay.providers.base import TaskView
from polyrelay.tasks.store import view

Task = models.Task
TEXT_FILTER_SCAN = 10_000
_SORTS = {"id": Task.id, "submitTime": Task.submit_time, "startTime": Task.start_time,
          "finishTime": Task.finish_time, "status": Task.status, "action": Task.action}


@dataclass(slots=True)
class TaskQuery:
    family: str
    token_id: int
    offset: int = 0
    limit: int = 10
    sort: str = "id"
    descending: bool = True
    ids: list[str] | None = None
    actions: list[str] | None = None
    statuses: list[str] | None = None
    texts: dict[str, str] = field(default_factory=dict)  # rendered field -> substring it must contain


def queued(engine: Engine, family: str, token_id: int, statuses: list[str], limit: int = 1000) -> list[TaskView]:
    """A key's tasks in ``statuses``, oldest submit first."""
    with Session(engine) as session:
        query = (select(Task).where(Task.family == family, Task.token_id == token_id, Task.status.in_(statuses))
                 .order_by(Task.submit_time, Task.id).limit(limit))
        return [view(row) for row in session.scalars(query)]


def page(engine: Engine, query: TaskQuery, text_of: Any = None) -> tuple[list[TaskView], int]:
    """One page of a key's tasks and the total that match. ``text_of(task, field)`` reads text filters."""
    conditions = [Task.family == query.family, Task.token_id == query.token_id]
    if query.ids is not None:
        conditions.append(Task.id.in_(query.ids))
    if query.actions:
        conditions.append(Task.action.in_(query.actions))
    if query.statuses:
        conditions.append(Task.status.in_(query.statuses))
    column = _SORTS.get(query.sort, Task.id)
    order = [column.desc() if query.descending else column.asc(), Task.id.desc() if query.descending else Task.id]
    with Session(engine) as session:
        if not query.texts:
            total = session.scalar(select(func.count()).select_from(Task).where(*conditions)) or 0
            rows = session.scalars(select(Task).where(*conditions).order_by(*order)
                                   .offset(query.offset).limit(query.limit))
            return [view(row) for row in rows], int(total)
        rows = session.scalars(select(Task).where(*conditions).order_by(*order).limit(TEXT_FILTER_SCAN))
        matching = [task for task in (view(row) for row in rows)
                    if all(needle.lower() in str(text_of(task, name) or "").lower()
                           for name, needle in query.texts.items())]
        return matching[query.offset: query.offset + query.limit], len(matching)


def census(engine: Engine, now: int) -> tuple[dict[str, int], int]:
    """Tasks per status, and how many are due for a poll now (``/api/system``: a growing due count means
    the pollers fall behind)."""
    with Session(engine) as session:
        by_status = {status: int(n) for status, n in session.execute(
            select(Task.status, func.count()).group_by(Task.status))}
        due = session.scalar(select(func.count()).select_from(Task).where(Task.next_poll_at <= now)) or 0
    return by_status, int(due)
