"""Channel health: each channel's state, last probe and last event, and the trail of its events."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import aware, engine_of, iso, json_response, not_found, path_int, query_int, run_db
from polyrelay.relay.routing import AUTO_DISABLED
from polyrelay.store import models

_RECENT = 50  # events /api/health lists across all channels
_NEWEST_FIRST = (models.ChannelEvent.created_at.desc(), models.ChannelEvent.id.desc())


def event_json(row: models.ChannelEvent) -> dict[str, Any]:
    return {"id": row.id, "channel_id": row.channel_id, "created_at": iso(row.created_at), "kind": row.kind,
            "reason": row.reason, "actor": row.actor}


def state_of(row: models.Channel, now: datetime) -> str:
    """"disabled" (out of rotation), "cooling" (tried last until its cooldown ends) or "enabled"."""
    if not row.enabled:
        return "disabled"
    if row.cooldown_until is not None and aware(row.cooldown_until) > now:
        return "cooling"
    return "enabled"


@endpoint()
async def channel_events(request: Request, _: Principal) -> Response:
    """A channel's health trail, newest first: disables and enables (by health accounting, probes or an
    administrator), cooldowns and probe results."""
    channel_id = path_int(request)
    limit = query_int(request, "limit", 100, minimum=1, maximum=1000)
    offset = query_int(request, "offset", 0)

    def work() -> list[dict[str, Any]]:
        with Session(engine_of(request)) as session:
            if session.get(models.Channel, channel_id) is None:
                raise not_found(f"Channel {channel_id}")
            rows = session.scalars(select(models.ChannelEvent).where(models.ChannelEvent.channel_id == channel_id)
                                   .order_by(*_NEWEST_FIRST).limit(limit).offset(offset))
            return [event_json(r) for r in rows]

    return json_response({"data": await run_db(request, work)})


@endpoint()
async def health(request: Request, _: Principal) -> Response:
    """Every channel's state (enabled, cooling, disabled), whether probes will try to bring it back, its
    last probe and last event; the probe settings; the latest events of all channels."""
    settings = request.app.state.healer.settings

    def work() -> dict[str, Any]:
        now = datetime.now(timezone.utc)
        with Session(engine_of(request)) as session:
            latest = (select(models.ChannelEvent.channel_id, func.max(models.ChannelEvent.created_at).label("at"))
                      .group_by(models.ChannelEvent.channel_id).subquery())
            last = {e.channel_id: event_json(e) for e in session.scalars(
                select(models.ChannelEvent).join(latest, (latest.c.channel_id == models.ChannelEvent.channel_id)
                                                 & (latest.c.at == models.ChannelEvent.created_at))
                .order_by(models.ChannelEvent.id))}
            channels = [{
                "id": row.id, "name": row.name, "type": row.type, "state": state_of(row, now),
                "probed": not row.enabled and row.disabled_reason.startswith(AUTO_DISABLED) or (
                    row.enabled and state_of(row, now) == "cooling"),
                "disabled_reason": row.disabled_reason, "failure_count": row.failure_count,
                "cooldown_until": iso(row.cooldown_until), "last_error": row.last_error,
                "last_probe": None if row.tested_at is None else {
                    "at": iso(row.tested_at), "ok": row.test_result == "ok", "result": row.test_result,
                    "latency_ms": None if row.test_latency_ms is None else round(row.test_latency_ms, 1)},
                "last_event": last.get(row.id),
            } for row in session.scalars(select(models.Channel).order_by(models.Channel.id))]
            events = [event_json(e) for e in session.scalars(
                select(models.ChannelEvent).order_by(*_NEWEST_FIRST).limit(_RECENT))]
        counts = {state: sum(c["state"] == state for c in channels) for state in ("enabled", "cooling", "disabled")}
        return {"probes": settings.model_dump(), "counts": counts, "channels": channels, "events": events}

    return json_response(await run_db(request, work))
