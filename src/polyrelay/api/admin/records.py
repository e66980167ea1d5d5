"""One implementation of GET, PATCH and DELETE on a single record, shared by channels, groups and tokens.

Each writes in one transaction that names the changed record in the change log, then
reloads it in this process's snapshot; a missing record is a 404 and an update that collides a 409.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.common import engine_of, json_response, not_found, reload_snapshot, run_db
from polyrelay.api.admin.fields import commit_conflict
from polyrelay.store import changes
from polyrelay.store.db import bump_records_version

Row = TypeVar("Row")


async def record_op(
    request: Request,
    op: str,
    *,
    find: Callable[[Session], Row | None],
    missing: str,
    to_json: Callable[[Row], dict[str, Any]],
    apply: Callable[[Row], None],
    conflict: str | None = None,
) -> Response:
    """``op`` is "get", "update" or "delete"; ``missing`` names the record in the 404, ``conflict`` in the 409."""

    def work() -> dict[str, Any] | None:
        with Session(engine_of(request)) as session, session.begin():
            row = find(session)
            if row is None:
                raise not_found(missing)
            if op == "get":
                return to_json(row)
            if op == "delete":
                session.delete(row)
                bump_records_version(session, changes.of_row(row))
                return None
            apply(row)
            try:
                session.flush()
            except IntegrityError:
                if conflict is None:
                    raise
                raise commit_conflict(conflict) from None
            bump_records_version(session, changes.of_row(row))
            return to_json(row)

    result = await run_db(request, work)
    if op == "get":
        return json_response(result)
    await reload_snapshot(request)
    return Response(status_code=204) if result is None else json_response(result)


async def list_records(request: Request, query: Select[Row], to_json: Callable[[Row], dict[str, Any]]) -> Response:
    """``{"data": [...]}`` of the rows ``query`` selects (already ordered and paged)."""

    def work() -> list[dict[str, Any]]:
        with Session(engine_of(request)) as session:
            return [to_json(r) for r in session.scalars(query)]

    return json_response({"data": await run_db(request, work)})


async def fetch_record(request: Request, entity: type[Row], key: Any, missing: str,
                       to_json: Callable[[Row], dict[str, Any]]) -> dict[str, Any]:
    """One record as JSON by primary key; 404 naming ``missing`` when there is none."""

    def work() -> dict[str, Any]:
        with Session(engine_of(request)) as session:
            row = session.get(entity, key)
            if row is None:
                raise not_found(missing)
            return to_json(row)

    result: dict[str, Any] = await run_db(request, work)
    return result


async def insert_record(request: Request, build: Callable[[Session], Row], conflict: str,
                        to_json: Callable[[Row], dict[str, Any]],
                        after: Callable[[Session, Row], None] | None = None) -> dict[str, Any]:
    """Add the row ``build`` makes (409 naming ``conflict`` if it collides), run ``after`` on it, reload the snapshot."""

    def work() -> dict[str, Any]:
        with Session(engine_of(request)) as session, session.begin():
            row = build(session)
            session.add(row)
            try:
                session.flush()
            except IntegrityError:
                raise commit_conflict(conflict) from None
            if after is not None:
                after(session, row)
            bump_records_version(session, changes.of_row(row))
            return to_json(row)

    result: dict[str, Any] = await run_db(request, work)
    await reload_snapshot(request)
    return result
