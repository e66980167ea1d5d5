"""polyrelay's own task query for every family: ``GET /v1/tasks/{id}``, ``GET /v1/tasks``.

Same ownership rule as each family's native query: a key sees only its own tasks; a
foreign id answers 404 like a missing one. Filters: ``family`` (midjourney, suno,
luma, kling, flux, stability), ``status`` (engine statuses, comma-separated,
case-insensitive), ``limit`` (1..100, default 20) and ``before`` (a ``submit_time`` in
epoch ms, for paging). Errors in OpenAI's shape (this is ``/v1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay.api.openai import error_response
from polyrelay.api.task_api import TaskCall, endpoint, json_response, not_found
from polyrelay.errors import bad_request
from polyrelay.providers.base import TaskAdaptor, TaskView
from polyrelay.tasks.query import FilterError, list_tasks, parse_filter

tasks_endpoint = endpoint("", error_response)


def task_object(adaptors: Mapping[str, TaskAdaptor], task: TaskView) -> dict[str, Any]:
    """polyrelay's task object, the same for every family (also the base of the console's)."""
    adaptor = adaptors.get(task.family)
    return {
        "id": task.id, "object": "task", "family": task.family, "action": task.action, "model": task.model,
        "status": task.status, "progress": task.progress, "fail_reason": task.fail_reason,
        "submit_time": task.submit_time, "start_time": task.start_time, "finish_time": task.finish_time,
        "cost_micros": task.cost_micros, "settlement": task.settlement,
        "data": adaptor.render(task) if adaptor is not None else None,  # the family's own task object
    }


@tasks_endpoint
async def get_task(call: TaskCall) -> Response:
    task_id = call.request.path_params["task_id"]
    task = await call.engine.get(task_id)
    if task is None or task.token_id != call.token.id:
        raise not_found(task_id)
    return json_response(task_object(call.engine.adaptors, task))


@tasks_endpoint
async def list_all(call: TaskCall) -> Response:
    engine = call.engine
    try:
        wanted = parse_filter(call.request.query_params, engine.adaptors)
    except FilterError as error:
        raise bad_request(str(error), param=error.param) from None
    tasks, more = await engine.run_db(lambda: list_tasks(engine.db, wanted, token_id=call.token.id))
    return json_response({"object": "list", "data": [task_object(engine.adaptors, t) for t in tasks],
                          "has_more": more})


def routes() -> list[BaseRoute]:
    return [Route("/v1/tasks", list_all, methods=["GET"]), Route("/v1/tasks/{task_id}", get_task, methods=["GET"])]
