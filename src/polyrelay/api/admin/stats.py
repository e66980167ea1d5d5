"""The console's dashboard numbers: per day and model over the last N UTC days, and the window's totals.

A task refund is a usage row with ``status_code`` 0: it counts in the money, not as a
request (nor in the latency median), so a failed task is one request that cost nothing.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, case, func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import engine_of, json_response, query_int, run_report
from polyrelay.api.admin.logs import log_day
from polyrelay.store import models

_MAX_DAYS = 90


def _window(request: Request) -> list[str]:
    """The window's days, oldest first, ending today (UTC)."""
    days = query_int(request, "days", 14, 1, _MAX_DAYS)
    today = datetime.now(timezone.utc).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]


def _stats(engine: Engine, days: list[str], user_id: int | None) -> dict[str, Any]:
    log = models.UsageLog
    start = datetime.combine(datetime.fromisoformat(days[0]).date(), time.min, tzinfo=timezone.utc)
    clauses = [log.created_at >= start] + ([log.user_id == user_id] if user_id is not None else [])
    request = log.status_code > 0  # not a refund row
    day = log_day(engine).label("day")
    grouped = (
        select(day, log.model, func.sum(case((request, 1), else_=0)).label("requests"),
               func.sum(case((log.status_code >= 400, 1), else_=0)).label("errors"),
               func.sum(log.cost_micros).label("cost_micros"), func.sum(log.prompt_tokens).label("prompt_tokens"),
               func.sum(log.completion_tokens).label("completion_tokens"))
        .where(*clauses).group_by(day, log.model)
    )
    index = {name: n for n, name in enumerate(days)}
    series: dict[str, dict[str, Any]] = {}
    totals = {"requests": 0, "errors": 0, "cost_micros": 0, "prompt_tokens": 0, "completion_tokens": 0}
    with Session(engine) as session:
        for row in session.execute(grouped):
            at = index.get(str(row.day))
            if at is None:  # a row stamped in the future (clock skew): not in the window's days
                continue
            entry = series.setdefault(row.model, {"model": row.model, "requests": [0] * len(days),
                                                  "errors": [0] * len(days), "cost_micros": [0] * len(days)})
            for name in totals:
                value = int(getattr(row, name) or 0)
                totals[name] += value
                if name in entry:
                    entry[name][at] = value
        median = None
        if totals["requests"]:  # the middle row by latency, found by the database
            median = session.scalar(select(log.latency_ms).where(*clauses, request).order_by(log.latency_ms)
                                    .offset(totals["requests"] // 2).limit(1))
    ordered = sorted(series.values(), key=lambda s: (-sum(s["requests"]), s["model"]))
    error_rate = totals["errors"] / totals["requests"] if totals["requests"] else 0.0
    return {"days": days, "series": ordered,
            "totals": {**totals, "error_rate": error_rate, "p50_latency_ms": median}}


async def stats_of(request: Request, owner: int | None) -> Response:
    """``days`` 1..90 (default 14); admins may narrow to one ``user_id``."""
    days = _window(request)
    user_id = owner
    if owner is None and request.query_params.get("user_id"):
        user_id = query_int(request, "user_id")
    return json_response(await run_report(request, _stats, engine_of(request), days, user_id))


@endpoint()
async def stats(request: Request, _: Principal) -> Response:
    """Requests, errors and cost per day and model, with totals and the median latency; all users or one."""
    return await stats_of(request, None)
