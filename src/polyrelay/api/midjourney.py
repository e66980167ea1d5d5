"""The Midjourney family (midjourney-proxy protocol): submit, query, act on tasks.

Callers see polyrelay task ids and only their own key's tasks. A submit is priced by
its action (``mj_imagine``, ``mj_upscale``, ... see ``ACTION_MODELS``) times the speed
mode's multiplier, reserved on the key, and charged when the upstream accepts it;
the task engine refunds it if the task fails, is cancelled or times out.
Errors come as midjourney-proxy's ``{code, description}``: 3 not found, 4 the request
is at fault (with HTTP 400/401/403/413/429 as the case is), 9 gateway/upstream failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay.api.midjourney_queries import (
    cancel,
    fetch,
    image,
    image_seed,
    list_by_condition,
    list_recent,
    query,
    queue,
)
from polyrelay.api.midjourney_submit import (
    action,
    blend,
    change,
    describe,
    imagine,
    modal,
    shorten,
    simple_change,
    swap_face,
    video,
)


def routes() -> list[BaseRoute]:
    table: list[tuple[str, Callable[[Request], Awaitable[Response]], str]] = [
        ("/mj/submit/imagine", imagine, "POST"),
        ("/mj/submit/action", action, "POST"),
        ("/mj/submit/blend", blend, "POST"),
        ("/mj/submit/describe", describe, "POST"),
        ("/mj/submit/modal", modal, "POST"),
        ("/mj/submit/shorten", shorten, "POST"),
        ("/mj/submit/video", video, "POST"),
        ("/mj/submit/change", change, "POST"),
        ("/mj/submit/simple-change", simple_change, "POST"),
        ("/mj/insight-face/swap", swap_face, "POST"),
        ("/mj/task/{task_id}/fetch", fetch, "GET"),
        ("/mj/task/list-by-condition", list_by_condition, "POST"),
        ("/mj/task/list-by-ids", list_by_condition, "POST"),
        ("/mj/task/list", list_recent, "GET"),
        ("/mj/task/queue", queue, "GET"),
        ("/mj/task/query", query, "POST"),
        ("/mj/image/{task_id}", image, "GET"),
        ("/mj/task/{task_id}/cancel", cancel, "POST"),
        ("/mj/task/{task_id}/image-seed", image_seed, "GET"),
    ]
    result: list[BaseRoute] = []
    for prefix in ("", "/{mode}"):
        result.extend(Route(prefix + path, handler, methods=[method]) for path, handler, method in table)
    return result
