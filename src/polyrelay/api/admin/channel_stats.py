"""Usage per channel and UTC day (``GET /api/stats/channels?start&end``), read from ``channel_daily``.

One row per channel and day it served, however many requests that day counted; kept after
retention has deleted the raw rows. ``channel_id`` 0 is what was answered without a channel
(refused before one was tried).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, select
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import ApiError, engine_of, json_response, run_report
from polyrelay.api.admin.stats import median_of
from polyrelay.store import models

_MAX_DAYS = 366
_DEFAULT_DAYS = 14
_SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros")
_BUCKETS = tuple(f"latency_le_{bound}" for bound in models.LATENCY_BUCKETS_MS)


def _day(request: Request, name: str, default: date) -> date:
    raw = request.query_params.get(name)
    if not raw:
        return default
    try:
        if len(raw) == 10:
            return date.fromisoformat(raw)
    except ValueError:
        pass
    raise ApiError(400, "invalid_query", f"'{name}' must be a date (YYYY-MM-DD).")


def _window(request: Request) -> tuple[date, date]:
    """[start, end], whole UTC days; by default the last 14 days up to today."""
    end = _day(request, "end", datetime.now(timezone.utc).date())
    start = _day(request, "start", end - timedelta(days=_DEFAULT_DAYS - 1))
    if start > end or (end - start).days >= _MAX_DAYS:
        raise ApiError(400, "invalid_query", f"'start' must be at most 'end', and the window {_MAX_DAYS} days at most.")
    return start, end


def _rows(engine: Engine, start: date, end: date) -> list[dict[str, Any]]:
    daily = models.ChannelDaily.__table__.c
    names = models.Channel.__table__.c
    query = (select(daily, names.name).select_from(models.ChannelDaily.__table__.outerjoin(
        models.Channel.__table__, names.id == daily.channel_id))
             .where(daily.day.between(start, end)).order_by(daily.day, daily.channel_id))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    result = []
    for row in rows:
        requests = int(row.requests)
        result.append({
            "day": str(row.day), "channel_id": row.channel_id, "channel": row.name,
            **{name: int(getattr(row, name)) for name in _SUMS},
            "error_rate": row.errors / requests if requests else 0.0,
            "p50_latency_ms": median_of([int(getattr(row, b)) for b in _BUCKETS], requests,
                                        float(row.latency_ms_sum) / (requests or 1)),
        })
    return result


@endpoint()
async def channel_stats(request: Request, _: Principal) -> Response:
    """Requests, errors, tokens, cost and the median latency per channel and UTC day, ``start``..``end``
    (inclusive, YYYY-MM-DD; the last 14 days by default; 366 days at most). ``channel`` is null for a
    channel deleted since (or 0: none)."""
    start, end = _window(request)
    data = await run_report(request, _rows, engine_of(request), start, end)
    return json_response({"start": str(start), "end": str(end), "data": data})
