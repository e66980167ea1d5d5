"""Usage logs: the filtered list, daily aggregates and the streamed CSV export, for admins and for /api/me."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, Engine, case, cast, func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import INT64_MAX, engine_of, iso, json_response, paging, query_int, run_report
from polyrelay.api.admin.fields import parse_time
from polyrelay.store import models


_LOG_COLUMNS = [c.name for c in models.UsageLog.__table__.columns]


def _log_filters(request: Request, owner: int | None) -> list[Any]:
    """Filters: start, end (ISO 8601), user_id, token_id, model, channel_id, status (code, 'ok' or 'error')."""
    log = models.UsageLog
    params = request.query_params
    clauses: list[Any] = []
    if params.get("start"):
        clauses.append(log.created_at >= parse_time(params["start"], "start"))
    if params.get("end"):
        clauses.append(log.created_at < parse_time(params["end"], "end"))
    if owner is not None:
        clauses.append(log.user_id == owner)
    elif params.get("user_id"):
        clauses.append(log.user_id == query_int(request, "user_id"))
    if params.get("token_id"):
        clauses.append(log.token_id == query_int(request, "token_id"))
    if params.get("model"):
        clauses.append(log.model == params["model"])
    if params.get("channel_id"):
        clauses.append(log.channel_id == query_int(request, "channel_id"))
    status = params.get("status")
    if status == "ok":
        clauses.append(log.status_code < 400)
    elif status == "error":
        clauses.append(log.status_code >= 400)
    elif status:
        clauses.append(log.status_code == query_int(request, "status", maximum=999))
    return clauses


def _log_json(row: Any, owner: int | None) -> dict[str, Any]:
    data = {name: getattr(row, name) for name in _LOG_COLUMNS}
    data["created_at"] = iso(data["created_at"])
    if owner is not None:  # a user sees its own rows, without the operator's channel names
        data.pop("channel_name", None)
        data.pop("channel_id", None)
    return data


async def logs_of(request: Request, owner: int | None) -> Response:
    limit, offset = paging(request)
    clauses = _log_filters(request, owner)
    before = query_int(request, "before_id", INT64_MAX, 1, INT64_MAX)

    def work() -> dict[str, Any]:
        log = models.UsageLog
        query = select(log).where(*clauses, log.id < before)
        with Session(engine_of(request)) as session:
            rows = list(session.scalars(query.order_by(log.id.desc()).limit(limit).offset(offset)))
            total = session.scalar(select(func.count()).select_from(log).where(*clauses))
            return {"data": [_log_json(r, owner) for r in rows], "total": total,
                    "next_before_id": rows[-1].id if len(rows) == limit else None}

    return json_response(await run_report(request, work))


def log_day(engine: Engine) -> Any:
    """A usage row's UTC day, on SQLite and PostgreSQL."""
    column = models.UsageLog.created_at
    if engine.dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)


_CSV_PAGE = 5000  # rows per query of the CSV export: memory stays one page, whatever the table holds
_MIDNIGHT = (0, 0, 0, 0)


def _rollup_days(request: Request) -> tuple[date | None, date | None] | None:
    """The [start, end) UTC days when the aggregate's filters are ones the daily rollups can answer
    (user, model and whole days); None when only the raw rows can (token, channel, status, a time)."""
    params = request.query_params
    if any(params.get(name) for name in ("token_id", "channel_id", "status")):
        return None
    days: list[date | None] = []
    for name in ("start", "end"):
        if not params.get(name):
            days.append(None)
            continue
        when = parse_time(params[name], name)
        if (when.hour, when.minute, when.second, when.microsecond) != _MIDNIGHT:
            return None
        days.append(when.date())
    return days[0], days[1]


def _aggregate_rollups(days: tuple[date | None, date | None], owner: int | None, request: Request) -> Any:
    daily = models.UsageDaily.__table__.c
    params = request.query_params
    clauses: list[Any] = []
    if days[0] is not None:
        clauses.append(daily.day >= days[0])
    if days[1] is not None:
        clauses.append(daily.day < days[1])
    if owner is not None:
        clauses.append(daily.user_id == owner)
    elif params.get("user_id"):
        clauses.append(daily.user_id == query_int(request, "user_id"))
    if params.get("model"):
        clauses.append(daily.model == params["model"])
    return (select(daily.day, daily.model, daily.user_id, daily.requests, daily.errors, daily.prompt_tokens,
                   daily.completion_tokens, daily.cost_micros)
            .where(*clauses).order_by(daily.day, daily.model, daily.user_id))


def _aggregate_raw(engine: Engine, clauses: list[Any]) -> Any:
    log = models.UsageLog
    day = log_day(engine).label("day")
    return (
        select(
            day, log.model, log.user_id, func.sum(case((log.status_code > 0, 1), else_=0)).label("requests"),
            func.sum(case((log.status_code >= 400, 1), else_=0)).label("errors"),
            func.sum(log.prompt_tokens).label("prompt_tokens"),
            func.sum(log.completion_tokens).label("completion_tokens"),
            func.sum(log.cost_micros).label("cost_micros"),
        )
        .where(*clauses)
        .group_by(day, log.model, log.user_id)
        .order_by(day, log.model, log.user_id)
    )


async def aggregate_of(request: Request, owner: int | None) -> Response:
    """Per day (UTC) x model x user: requests (task refunds are not), errors, tokens and cost. From the
    daily rollups when the filters allow (so also for days whose raw rows retention deleted), else
    from the raw rows."""
    clauses = _log_filters(request, owner)
    days = _rollup_days(request)
    engine = engine_of(request)
    query = _aggregate_raw(engine, clauses) if days is None else _aggregate_rollups(days, owner, request)

    def work() -> list[dict[str, Any]]:
        with Session(engine) as session:
            return [
                {"day": str(r.day), "model": r.model, "user_id": r.user_id or None, "requests": int(r.requests or 0),
                 "errors": int(r.errors or 0), "prompt_tokens": int(r.prompt_tokens or 0),
                 "completion_tokens": int(r.completion_tokens or 0), "cost_micros": int(r.cost_micros or 0)}
                for r in session.execute(query)
            ]

    return json_response({"data": await run_report(request, work)})


async def csv_of(request: Request, owner: int | None) -> Response:
    """Every matching row, oldest first, streamed a page at a time (by id, so a page is an index range
    scan and rows written meanwhile neither repeat nor shift the pages)."""
    clauses = _log_filters(request, owner)  # a bad filter is a 400 before the first byte
    columns = [c for c in _LOG_COLUMNS if owner is None or c not in ("channel_name", "channel_id")]
    table = models.UsageLog.__table__
    engine = engine_of(request)

    def page(after: int) -> tuple[str, int | None]:
        query = (select(*(table.c[name] for name in columns)).where(*clauses, table.c.id > after)
                 .order_by(table.c.id).limit(_CSV_PAGE))
        with Session(engine) as session:
            rows = session.execute(query).all()
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerows([iso(v) if isinstance(v, datetime) else v for v in row] for row in rows)
        return out.getvalue(), rows[-1].id if len(rows) == _CSV_PAGE else None

    async def body() -> AsyncIterator[str]:
        header = io.StringIO()
        csv.writer(header).writerow(columns)
        yield header.getvalue()
        after: int | None = 0
        while after is not None:
            text, after = await run_report(request, page, after)
            yield text

    return StreamingResponse(body(), media_type="text/csv",
                             headers={"content-disposition": 'attachment; filename="usage.csv"'})


@endpoint()
async def logs(request: Request, _: Principal) -> Response:
    return await logs_of(request, None)


@endpoint()
async def logs_aggregate(request: Request, _: Principal) -> Response:
    return await aggregate_of(request, None)


@endpoint()
async def logs_csv(request: Request, _: Principal) -> Response:
    return await csv_of(request, None)
