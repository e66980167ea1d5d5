"""The console's dashboard numbers: per day and model over the last N UTC days, and the window's totals.

Read from the daily rollups (``store/rollups.py``), never from ``usage_logs``: a window costs one
row per day x model it covers (per day x model of the one user when narrowed to one), however
many requests those rows count, and the numbers
stay after retention has deleted the raw rows. A task refund (a usage row with ``status_code`` 0)
counts in the money, not as a request nor in the latency median. The median is estimated from the
rollups' latency buckets and latency sum (``median_of``): always within the true median's bucket.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, func, select
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import engine_of, json_response, query_int, run_report
from polyrelay.store import models

_MAX_DAYS = 90
_TOTALS = ("requests", "errors", "cost_micros", "prompt_tokens", "completion_tokens")
_BUCKETS = tuple(f"latency_le_{bound}" for bound in models.LATENCY_BUCKETS_MS)


def _window(request: Request) -> list[str]:
    """The window's days, oldest first, ending today (UTC)."""
    days = query_int(request, "days", 14, 1, _MAX_DAYS)
    today = datetime.now(timezone.utc).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]


def median_of(counts: list[int], requests: int, mean: float) -> float | None:
    """The median latency (ms) estimated from bucket counts (``models.LATENCY_BUCKETS_MS``; the rest of
    ``requests`` is slower than the last bound): the mean when it lies in the median's bucket (traffic
    of one kind, where it is the better guess), else by linear interpolation within the bucket."""
    if not requests:
        return None
    rank = requests // 2  # the row the exact query would pick: 0-based, after sorting by latency
    below, low = 0, 0.0
    for bound, count in zip(models.LATENCY_BUCKETS_MS, counts):
        if rank < below + count:
            return mean if low <= mean <= bound else low + (bound - low) * (rank - below + 0.5) / count
        below, low = below + count, float(bound)
    return max(mean, low)


def _stats(engine: Engine, days: list[str], user_id: int | None) -> dict[str, Any]:
    # Everyone: one row per day and model; one user: that user's rows, found by (user_id, day, model).
    # Days after today (a clock ahead) are not in the window.
    daily = (models.ModelDaily if user_id is None else models.UsageDaily).__table__.c
    clauses = [daily.day.between(date.fromisoformat(days[0]), date.fromisoformat(days[-1]))]
    if user_id is not None:
        clauses.append(daily.user_id == user_id)
    grouped = (select(daily.day, daily.model, *(func.sum(daily[name]) for name in _TOTALS))
               .where(*clauses).group_by(daily.day, daily.model))
    latencies = select(func.sum(daily.latency_ms_sum), *(func.sum(daily[name]) for name in _BUCKETS)).where(*clauses)
    with engine.connect() as connection:
        rows = connection.execute(grouped).all()
        latency_sum, *counts = connection.execute(latencies).one()
    buckets = [int(count or 0) for count in counts]
    index = {name: n for n, name in enumerate(days)}
    series: dict[str, dict[str, Any]] = {}
    totals = dict.fromkeys(_TOTALS, 0)
    for day, model, *values in rows:
        at = index[str(day)]
        entry = series.get(model)
        if entry is None:
            entry = series[model] = {"model": model, "requests": [0] * len(days), "errors": [0] * len(days),
                                     "cost_micros": [0] * len(days)}
        for name, value in zip(_TOTALS, values):
            value = int(value or 0)
            totals[name] += value
            if name in entry:
                entry[name][at] = value
    ordered = sorted(series.values(), key=lambda s: (-sum(s["requests"]), s["model"]))
    requests = totals["requests"]
    error_rate = totals["errors"] / requests if requests else 0.0
    median = median_of(buckets, requests, float(latency_sum or 0) / (requests or 1))
    result = {"days": days, "series": ordered, "totals": {**totals, "error_rate": error_rate, "p50_latency_ms": median}}
    if user_id is None:  # everyone: the dashboard's balance tile shows what all metered users hold
        result["users_balance_micros"] = _users_balance(engine)
    return result


def _users_balance(engine: Engine) -> int:
    """The sum of the balances of users without unlimited credit (unlimited ones have none to count)."""
    with engine.connect() as connection:
        total = connection.execute(select(func.sum(models.User.balance_micros))
                                   .where(models.User.unlimited.is_(False))).scalar()
    return int(total or 0)


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
