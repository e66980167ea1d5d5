"""The Luma family in the Luma-API proxy's format.

``POST /luma/generations`` (``user_prompt``, ``aspect_ratio``, ``expand_prompt``, ``image_url``,
``image_end_url``, ``loop``, optional ``notify_hook``) and ``POST /luma/generations/{id}/extend``
answer the generation object with polyrelay's id; ``GET /luma/generations/{id}`` reads it (also
under ``/luma/v1/``). Billing models per submission: ``luma_generation``, ``luma_extend``. An
extension goes to the channel and key of the generation it extends. Errors:
``{detail: {reason, code}}``; upstream refusals are relayed as they came.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay.api.task_api import TaskCall, endpoint, hook, json_response, refusal
from polyrelay.errors import RelayError, bad_request
from polyrelay.providers import luma as upstream
from polyrelay.store.snapshot import ChannelRecord
from polyrelay.tasks.submit import Accepted, Order

FAMILY = upstream.FAMILY


def render_error(error: RelayError) -> Response:
    relayed = error.relayed(FAMILY)
    if relayed is not None:
        return Response(relayed, status_code=error.status, media_type="application/json")
    return json_response({"detail": {"reason": error.message, "code": error.code or error.type}}, error.status,
                         error.headers)


luma_endpoint = endpoint(FAMILY, render_error)


def _accept(status: int, body: Any) -> Accepted:
    item = upstream.generation(body)
    if status >= 400 or item is None:
        raise refusal(FAMILY, status if status >= 400 else 502, body, f"Luma refused the generation (HTTP {status}).")
    return Accepted(str(item["id"]), upstream.update(item).status, item)


async def _create(call: TaskCall, action: str, path_of: Any, parent_id: str | None = None) -> Response:
    payload = await call.payload()
    if action == "GENERATE" and not str(payload.get("user_prompt") or "").strip():
        raise bad_request("user_prompt is required.", param="user_prompt")
    parent = await call.own(parent_id) if parent_id is not None else None
    body = {k: v for k, v in payload.items() if k != "notify_hook"}
    model = "luma_generation" if action == "GENERATE" else "luma_extend"
    path = path_of(parent)
    order = Order(FAMILY, action, model, upstream.TYPE, f"luma.{action.lower()}", dict(payload),
                  notify_hook=hook(payload.get("notify_hook"), "notify_hook"), parent=parent)

    async def send(channel: ChannelRecord, key: str) -> tuple[int, Any]:
        return await upstream.submit(call.engine.session, channel, key, path, body)

    task = await call.submit(order, send, _accept)
    return json_response(call.render(task))


@luma_endpoint
async def generate(call: TaskCall) -> Response:
    return await _create(call, "GENERATE", lambda parent: "/luma/generations")


@luma_endpoint
async def extend(call: TaskCall) -> Response:
    return await _create(call, "EXTEND", lambda parent: f"/luma/generations/{quote(parent.upstream_id)}/extend",
                         call.request.path_params["task_id"])


@luma_endpoint
async def get(call: TaskCall) -> Response:
    return json_response(call.render(await call.own(call.request.path_params["task_id"])))


def routes() -> list[BaseRoute]:
    result: list[BaseRoute] = []
    for prefix in ("/luma", "/luma/v1"):
        result += [Route(f"{prefix}/generations", generate, methods=["POST"]),
                   Route(f"{prefix}/generations/{{task_id}}/extend", extend, methods=["POST"]),
                   Route(f"{prefix}/generations/{{task_id}}", get, methods=["GET"])]
    return result
