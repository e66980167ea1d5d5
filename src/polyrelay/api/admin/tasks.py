"""The console's task lists (a user's own, or everybody's for admins) and the Stability video link.

Each task is ``GET /v1/tasks/{id}``'s object plus what a gallery needs, from the family's
adaptor: ``token_name``, ``prompt``, ``media`` and (Midjourney) ``buttons``. Filters are
``/v1/tasks``' (``tasks/query.py``); ``next_before`` pages on.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import ApiError, engine_of, json_response, not_found, query_int, run_db
from polyrelay.api.stability_video import stream_result
from polyrelay.api.tasks import task_object
from polyrelay.billing import accounts
from polyrelay.errors import RelayError
from polyrelay.providers.stability_video import FAMILY as STABILITY
from polyrelay.providers.base import SUCCESS, TaskView
from polyrelay.tasks.engine import TaskEngine
from polyrelay.tasks.query import FilterError, list_tasks, parse_filter
from polyrelay.tasks.submit import channel_and_key


def _console_task(engine: TaskEngine, task: TaskView) -> dict[str, Any]:
    adaptor = engine.adaptors.get(task.family)
    return {
        **task_object(engine.adaptors, task), "token_name": task.token_name,
        "prompt": adaptor.prompt(task) if adaptor is not None else "",
        "media": adaptor.media(task) if adaptor is not None else [],
        "buttons": adaptor.buttons(task) if adaptor is not None else [],
    }


async def tasks_of(request: Request, owner: int | None) -> Response:
    """``family``, ``status``, ``limit``, ``before`` as on ``/v1/tasks``; admins may narrow to one ``user_id``."""
    engine: TaskEngine = request.app.state.tasks
    try:
        wanted = parse_filter(request.query_params, engine.adaptors)
    except FilterError as error:
        raise ApiError(400, "invalid_query", str(error)) from None
    user_id = owner
    if owner is None and request.query_params.get("user_id"):
        user_id = query_int(request, "user_id")
    tasks, more = await run_db(request, lambda: list_tasks(engine_of(request), wanted, user_id=user_id))
    return json_response({"data": [_console_task(engine, t) for t in tasks],
                          "next_before": tasks[-1].submit_time if more else None})


@endpoint()
async def list_all_tasks(request: Request, _: Principal) -> Response:
    """Everybody's tasks, newest first, with prompt, media and buttons."""
    return await tasks_of(request, None)


@endpoint(admin=False)
async def task_video(request: Request, principal: Principal) -> Response:
    """A finished Stability image-to-video result, streamed from the key that made it.

    The upstream keeps it readable only with that key, so the console's `<video>` loads it
    here, with its session cookie. Admins may load any; a user only its own.
    """
    engine: TaskEngine = request.app.state.tasks
    task = await engine.get(request.path_params["task_id"])
    if task is None or task.family != STABILITY:
        raise not_found("The task")
    if not principal.admin:

        def owner() -> int | None:
            with Session(engine_of(request)) as session:
                return accounts.user_of_token(session, task.token_id)

        if await run_db(request, owner) != principal.user_id:
            raise not_found("The task")
    if task.status != SUCCESS:
        raise ApiError(409, "not_ready", f"The task is {task.status}; only a finished task has a video.")
    try:
        return await stream_result(engine.session, "video/*", task.upstream_id, channel_and_key(engine, task))
    except RelayError as error:
        raise ApiError(error.status if error.status >= 500 else 502, "upstream_error", error.message) from None
