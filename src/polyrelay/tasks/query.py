"""Task lists across families (``GET /v1/tasks`` and the console's ``/api/me/tasks``, ``/api/tasks``).

The filter is parsed here once for every API; each answers a bad value in its own error
format. ``list_tasks`` runs on the DB thread like ``store``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from polyrelay.store import models
from polyrelay.providers.base import RANK, TaskView
from polyrelay.tasks.store import view


class FilterError(ValueError):
    """A bad query value; ``param`` names it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class TaskFilter:
    family: str | None = None
    statuses: tuple[str, ...] = ()
    limit: int = 20
    before: int | None = None  # a submit_time (epoch ms): the page of older tasks


def _int(value: str | None, name: str, default: int | None, low: int, high: int) -> int | None:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise FilterError(f"'{name}' must be an integer.", name) from None
    if not low <= number <= high:
        raise FilterError(f"'{name}' must be from {low} to {high}.", name)
    return number


def parse_filter(params: Mapping[str, str], families: Collection[str]) -> TaskFilter:
    """``family``; ``status``: engine statuses, comma-separated, case-insensitive; ``limit`` 1..100 (20);
    ``before``: a ``submit_time`` in epoch ms, for paging."""
    family = params.get("family") or None
    if family is not None and family not in families:
        raise FilterError(f"Unknown family '{family}'; known: {', '.join(sorted(families))}.", "family")
    statuses = tuple(s.strip().upper() for s in (params.get("status") or "").split(",") if s.strip())
    if unknown := [s for s in statuses if s not in RANK]:
        raise FilterError(f"Unknown status {unknown[0]!r}; known: {', '.join(RANK)}.", "status")
    limit = _int(params.get("limit"), "limit", 20, 1, 100) or 20
    return TaskFilter(family, statuses, limit, _int(params.get("before"), "before", None, 0, 2**62))


def list_tasks(
    engine: Engine, wanted: TaskFilter, *, token_id: int | None = None, user_id: int | None = None
) -> tuple[list[TaskView], bool]:
    """One page, newest first, and whether older tasks follow: of one key (``token_id``), of all of a
    user's keys (``user_id``), or everybody's (neither: admins only)."""
    Task = models.Task
    query = select(Task)
    if token_id is not None:
        query = query.where(Task.token_id == token_id)
    if user_id is not None:
        query = query.where(Task.token_id.in_(select(models.Token.id).where(models.Token.user_id == user_id)))
    if wanted.family:
        query = query.where(Task.family == wanted.family)
    if wanted.statuses:
        query = query.where(Task.status.in_(wanted.statuses))
    if wanted.before is not None:
        query = query.where(Task.submit_time < wanted.before)
    with Session(engine) as session:
        rows = session.scalars(query.order_by(Task.submit_time.desc()).limit(wanted.limit + 1))
        tasks = [view(row) for row in rows]
    return tasks[: wanted.limit], len(tasks) > wanted.limit
