"""Usage logs: the filtered list, daily aggregates and the CSV export, for admins and for /api/me."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from sqlalchemy import Date, Engine, case, cast, func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

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


async def aggregate_of(request: Request, owner: int | None) -> Response:
    """Per day (UTC) x model x user: requests, errors, tokens and cost."""
    clauses = _log_filters(request, owner)

    def work() -> list[dict[str, Any]]:
        log = models.UsageLog
        day = log_day(engine_of(request)).label("day")
        query = (
            select(
                day, log.model, log.user_id, func.count().label("requests"),
                func.sum(case((log.status_code >= 400, 1), else_=0)).label("errors"),
                func.sum(log.prompt_tokens).label("prompt_tokens"),
                func.sum(log.completion_tokens).label("completion_tokens"),
                func.sum(log.cost_micros).label("cost_micros"),
            )
            .where(*clauses)
            .group_by(day, log.model, log.user_id)
            .order_by(day, log.model, log.user_id)
        )
        with Session(engine_of(request)) as session:
            return [
                {"day": str(r.day), "model": r.model, "user_id": r.user_id, "requests": int(r.requests),
                 "errors": int(r.errors or 0), "prompt_tokens": int(r.prompt_tokens or 0),
                 "completion_tokens": int(r.completion_tokens or 0), "cost_micros": int(r.cost_micros or 0)}
                for r in session.execute(query)
            ]

    return json_response({"data": await run_report(request, work)})


async def csv_of(request: Request, owner: int | None) -> Response:
    clauses = _log_filters(request, owner)
    columns = [c for c in _LOG_COLUMNS if owner is None or c not in ("channel_name", "channel_id")]

    def work() -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        log = models.UsageLog
        with Session(engine_of(request)) as session:
            for row in session.scalars(select(log).where(*clauses).order_by(log.id).limit(1_000_000)):
                writer.writerow([iso(v) if isinstance(v, datetime) else v for v in (getattr(row, c) for c in columns)])
        return out.getvalue()

    text = await run_report(request, work)
    return Response(text, media_type="text/csv", headers={"content-disposition": 'attachment; filename="usage.csv"'})


@endpoint()
async def logs(request: Request, _: Principal) -> Response:
    return await logs_of(request, None)


@endpoint()
async def logs_aggregate(request: Request, _: Principal) -> Response:
    return await aggregate_of(request, None)


@endpoint()
async def logs_csv(request: Request, _: Principal) -> Response:
    return await csv_of(request, None)
