"""polyrelay's own task query for every family: ``GET /v1/tasks/{id}``, ``GET /v1/tasks``.

Same ownership rule as each family's native query: a key sees only its own tasks; a
foreign id answers 404 like a missing one. Filters: ``family`` (midjourney, suno,
luma, kling, flux, stability), ``status`` (engine statuses, comma-separated,
case-insensitive), ``limit`` (1..100, default 20) and ``before`` (a ``submit_time`` in
epoch ms, for paging). Errors in OpenAI's shape (this is ``/v1``).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay.api.openai import error_response
from polyrelay.api.task_api import TaskCall, endpoint, json_response, not_found
from polyrelay.errors import bad_request
from polyrelay.tasks.base import RANK, TaskView
from polyrelay.tasks.query import list_tasks

tasks_endpoint = endpoint("", error_response)


def _object(call: TaskCall, task: TaskView) -> dict[str, Any]:
    adaptor = call.engine.adaptors.get(task.family)
    return {
        "id": task.id, "object": "task", "family": task.family, "action": task.action, "model": task.model,
        "status": task.status, "progress": task.progress, "fail_reason": task.fail_reason,
        "submit_time": task.submit_time, "start_time": task.start_time, "finish_time": task.finish_time,
        "cost_micros": task.cost_micros, "settlement": task.settlement,
        "data": adaptor.render(task) if adaptor is not None else None,  # the family's own task object
    }


def _int(value: str | None, name: str, default: int | None, low: int, high: int) -> int | None:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"'{name}' must be an integer.", param=name) from None
    if not low <= number <= high:
        raise bad_request(f"'{name}' must be from {low} to {high}.", param=name)
    return number


@tasks_endpoint
async def get_task(call: TaskCall) -> Response:
    task_id = call.request.path_params["task_id"]
    task = await call.engine.get(task_id)
    if task is None or task.token_id != call.token.id:
        raise not_found(task_id)
    return json_response(_object(call, task))


@tasks_endpoint
async def list_all(call: TaskCall) -> Response:
    query = call.request.query_params
    family = query.get("family") or None
    if family is not None and family not in call.engine.adaptors:
        raise bad_request(f"Unknown family '{family}'; known: {', '.join(sorted(call.engine.adaptors))}.",
                          param="family")
    statuses = [s.strip().upper() for s in (query.get("status") or "").split(",") if s.strip()]
    if unknown := [s for s in statuses if s not in RANK]:
        raise bad_request(f"Unknown status {unknown[0]!r}; known: {', '.join(RANK)}.", param="status")
    limit = _int(query.get("limit"), "limit", 20, 1, 100) or 20
    before = _int(query.get("before"), "before", None, 0, 2**62)
    tasks = await call.engine.run_db(list_tasks, call.engine.db, call.token.id, family, statuses or None, limit + 1,
                                     before)
    return json_response({"object": "list", "data": [_object(call, t) for t in tasks[:limit]],
                          "has_more": len(tasks) > limit})


def routes() -> list[BaseRoute]:
    return [Route("/v1/tasks", list_all, methods=["GET"]), Route("/v1/tasks/{task_id}", get_task, methods=["GET"])]
