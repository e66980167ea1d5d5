"""The Kling family in Kling's own format, under ``/kling/v1/...``.

``POST /kling/v1/videos/{text2video|image2video}``, ``POST /kling/v1/images/generations`` and
``GET`` the same path ``/{task_id}``; answers ``{code:0, message:"SUCCEED", request_id, data}``
with polyrelay's task id. Billing models: video ``<model_name>`` (mode std) or
``<model_name>-pro`` (mode pro), priced ``per_second`` x ``duration`` (5 or 10) plus any
``per_request``; images ``<model_name>-image`` x ``n`` (``per_image``). ``model_name`` defaults
to ``kling-v1``. ``callback_url`` becomes the task's callback (Kling's task object is POSTed).
Errors: ``{code, message, request_id}`` with Kling's codes (1000 auth, 1102 quota, 1103
forbidden, 1200 bad request, 1203 not found, 5000 gateway/upstream).
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay import kinds
from polyrelay.api.task_api import TaskCall, endpoint, hook, json_response, refusal
from polyrelay.billing.meter import Usage
from polyrelay.errors import RelayError, bad_request
from polyrelay.providers import kling as upstream
from polyrelay.store.snapshot import ChannelRecord
from polyrelay.providers.base import TaskView
from polyrelay.tasks.submit import Accepted, Order

FAMILY = upstream.FAMILY
_CODES = {401: 1000, 403: 1103, 404: 1203, 429: 1102, 413: 1200}
_UNSTORED = ("image", "image_tail", "static_mask", "dynamic_masks")
_ACTIONS = {"videos/text2video": "TEXT2VIDEO", "videos/image2video": "IMAGE2VIDEO", "images/generations": "IMAGE"}


def _request_id() -> str:
    return uuid.uuid4().hex


def render_error(error: RelayError) -> Response:
    relayed = error.relayed(FAMILY)
    if relayed is not None:
        return Response(relayed, status_code=error.status, media_type="application/json")
    code = _CODES.get(error.status, 1200 if error.status < 500 else 5000)
    return json_response({"code": code, "message": error.message, "request_id": _request_id()}, error.status,
                         error.headers)


kling_endpoint = endpoint(FAMILY, render_error)


def _accept(status: int, body: Any) -> Accepted:
    data = body.get("data") if isinstance(body, dict) else None
    if status >= 400 or not isinstance(data, dict) or body.get("code") != 0 or not data.get("task_id"):
        message = body.get("message") if isinstance(body, dict) else None
        raise refusal(FAMILY, status if status >= 400 else 400, body, str(message or f"Kling refused (HTTP {status})."))
    return Accepted(str(data["task_id"]), result=data)


def _billing(action: str, payload: dict[str, Any]) -> tuple[str, Usage]:
    model = str(payload.get("model_name") or payload.get("model") or "kling-v1")
    if action == "IMAGE":
        n = payload.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= 9:
            raise bad_request("n must be an integer from 1 to 9.", param="n")
        return f"{model}-image", Usage(images=n, source="request")
    duration = str(payload.get("duration") or "5")
    if duration not in ("5", "10"):
        raise bad_request("duration must be \"5\" or \"10\".", param="duration")
    mode = payload.get("mode") or "std"
    if mode not in ("std", "pro"):
        raise bad_request("mode must be std or pro.", param="mode")
    return (model if mode == "std" else f"{model}-pro"), Usage(seconds=float(duration), source="request")


async def submit_task(call: TaskCall, action: str, payload: dict[str, Any]) -> TaskView:
    """Validate, bill and send one Kling job (TEXT2VIDEO, IMAGE2VIDEO or IMAGE) in Kling's fields; the stored task."""
    if action != "IMAGE2VIDEO" and not str(payload.get("prompt") or "").strip():
        raise bad_request("prompt is required.", param="prompt")
    if action == "IMAGE2VIDEO" and not payload.get("image"):
        raise bad_request("image is required.", param="image")
    model, usage = _billing(action, payload)
    body = {k: v for k, v in payload.items() if k != "callback_url"}
    order = Order(FAMILY, action, model, kinds.KLING, f"kling.{upstream.PATHS[action].replace('/', '.')}",
                  {k: v for k, v in payload.items() if k not in _UNSTORED}, usage,
                  notify_hook=hook(payload.get("callback_url"), "callback_url"))

    async def send(channel: ChannelRecord, key: str) -> tuple[int, Any]:
        return await upstream.submit(call.engine.session, channel, key, action, body)

    return await call.submit(order, send, _accept)


@kling_endpoint
async def create(call: TaskCall) -> Response:
    action = _ACTIONS[call.request.url.path.removeprefix("/kling/v1/")]
    task = await submit_task(call, action, await call.payload())
    return json_response({"code": 0, "message": "SUCCEED", "request_id": _request_id(), "data": call.render(task)})


@kling_endpoint
async def query(call: TaskCall) -> Response:
    path = call.request.url.path.removeprefix("/kling/v1/").rsplit("/", 1)[0]
    task = await call.own(call.request.path_params["task_id"], _ACTIONS[path])
    return json_response({"code": 0, "message": "SUCCEED", "request_id": _request_id(), "data": call.render(task)})


def routes() -> list[BaseRoute]:
    result: list[BaseRoute] = []
    for path in _ACTIONS:
        result.append(Route(f"/kling/v1/{path}", create, methods=["POST"]))
        result.append(Route(f"/kling/v1/{path}/{{task_id}}", query, methods=["GET"]))
    return result
