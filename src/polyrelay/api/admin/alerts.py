"""The alerts told (``alert_log``, written by the watch loop of whichever node told them), newest first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import engine_of, iso, json_response, paging, run_report
from polyrelay.store import models


def alert_json(row: models.AlertLog) -> dict[str, Any]:
    return {"id": row.id, "created_at": iso(row.created_at), "kind": row.kind, "severity": row.severity,
            "subject": row.subject, "details": row.details, "user_id": row.user_id,
            "user_emailed": row.user_emailed}


@endpoint()
async def list_alerts(request: Request, _: Principal) -> Response:
    """``?limit=&offset=``: a page of the alerts told, and how many there are."""
    limit, offset = paging(request)

    def work() -> dict[str, Any]:
        log = models.AlertLog
        with Session(engine_of(request)) as session:
            rows = session.scalars(select(log).order_by(log.created_at.desc(), log.id.desc()).limit(limit)
                                   .offset(offset))
            return {"data": [alert_json(r) for r in rows],
                    "total": session.scalar(select(func.count()).select_from(log))}

    return json_response(await run_report(request, work))
