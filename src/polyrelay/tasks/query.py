"""Reading a key's tasks across families (``GET /v1/tasks``); runs on the DB thread like ``store``."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from polyrelay.store import models
from polyrelay.tasks.store import view
from polyrelay.tasks.base import TaskView


def list_tasks(
    engine: Engine, token_id: int, family: str | None = None, statuses: list[str] | None = None,
    limit: int = 100, before: int | None = None,
) -> list[TaskView]:
    """A key's own tasks, newest first, optionally of one family, in some statuses, submitted before a time."""
    Task = models.Task
    query = select(Task).where(Task.token_id == token_id)
    if family:
        query = query.where(Task.family == family)
    if statuses:
        query = query.where(Task.status.in_(statuses))
    if before is not None:
        query = query.where(Task.submit_time < before)
    with Session(engine) as session:
        return [view(row) for row in session.scalars(query.order_by(Task.submit_time.desc()).limit(limit))]
