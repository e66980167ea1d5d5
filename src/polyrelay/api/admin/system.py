"""``GET /api/system``: the health of the answering process and of what it depends on.

Database and Redis round trips, the task poller's last round, the batching writer's
backlog and dead letters, undelivered callbacks and channels out of rotation. When the
database does not answer, the counts read from it are reported as 0 (``database.ok`` says why).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, and_, case, func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay import __version__
from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import engine_of, json_response, run_db, run_report
from polyrelay.billing.ratelimit import RateLimiter
from polyrelay.store import models
from polyrelay.store.db import ping
from polyrelay.tasks import callbacks, queries
from polyrelay.tasks.store import now_ms

_TIMEOUT_S = 5.0


def _counts(engine: Engine) -> dict[str, Any]:
    by_status, due = queries.census(engine, now_ms())
    channel = models.Channel
    enabled = channel.enabled.is_(True)
    cooling = and_(enabled, channel.cooldown_until > datetime.now(timezone.utc))
    with Session(engine) as session:
        total, on, cool = session.execute(
            select(func.count(), func.sum(case((enabled, 1), else_=0)), func.sum(case((cooling, 1), else_=0)))
        ).one()
        dead_letters = session.execute(select(func.count()).select_from(models.DeadLetter)).scalar_one()
    return {"by_status": by_status, "due": due, "callbacks": callbacks.pending(engine), "dead_letters": dead_letters,
            "channels": {"total": int(total), "enabled": int(on or 0), "cooling_down": int(cool or 0)}}


async def _database(request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    started = time.perf_counter()
    try:
        await asyncio.wait_for(run_db(request, ping, engine), _TIMEOUT_S)
        ok = True
    except Exception:
        ok = False
    return {"dialect": engine.dialect.name, "ok": ok, "latency_ms": (time.perf_counter() - started) * 1000}


async def _redis(limiter: RateLimiter, configured: bool) -> dict[str, Any]:
    if not configured:
        return {"configured": False, "ok": None, "latency_ms": None, "limits_shared": False}
    try:
        return {"configured": True, "ok": True, "latency_ms": await limiter.ping(), "limits_shared": limiter.shared}
    except Exception:
        return {"configured": True, "ok": False, "latency_ms": None, "limits_shared": False}


@endpoint()
async def system(request: Request, _: Principal) -> Response:
    """This process's health: database, Redis, task poller, usage writer, callbacks and channels."""
    state = request.app.state
    database = await _database(request)
    counts = {"by_status": {}, "due": 0, "callbacks": 0, "dead_letters": 0,
              "channels": {"total": 0, "enabled": 0, "cooling_down": 0}}
    if database["ok"]:
        counts = await run_report(request, _counts, engine_of(request))  # counts scan the tasks table
    poller = state.poller.health()
    last_round_at = datetime.fromtimestamp(poller.last_round_at, timezone.utc).isoformat() if poller.last_round_at else None
    return json_response({
        "version": __version__,
        "uptime_s": time.monotonic() - state.started_at,
        "database": database,
        "redis": await _redis(state.limiter, bool(state.settings.redis_url)),
        "tasks": {"poller_running": poller.running, "last_round_at": last_round_at,
                  "last_round_ms": poller.last_round_ms, "by_status": counts["by_status"], "due": counts["due"]},
        "writer": {"queued": state.writer.queued()},
        # Writes the usage writer could not commit, kept in the dead_letters table (docs/billing.md); normally 0.
        "dead_letters": counts["dead_letters"],
        # Quota held by requests in flight in this process; 0 when idle, or a settlement leaked.
        "reserved_micros": sum(t.reserved_micros for t in state.relay.snapshot.tokens_by_hash.values()),
        "leased_micros": state.relay.budgets.leased_micros(),
        "callbacks": {"pending": counts["callbacks"]},
        "channels": counts["channels"],
    })
