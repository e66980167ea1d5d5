"""The Flux family in BFL's own format: ``POST /flux/v1/{model}``, ``GET /flux/v1/get_result?id=``.

Billed per submission under the path's model name (``flux-pro-1.1``, ``flux-pro``,
``flux-dev``, ...: one image, so ``per_request`` and/or ``per_image``), on ``flux``
channels (the same ones the DALL·E-format alias uses; ``model_mapping`` applies to the
upstream path). ``webhook_url`` becomes the task's callback (the get_result object is
POSTed on every change); it is not sent upstream. Errors are BFL's ``{detail}``; an
upstream refusal (422, 402...) is relayed as it came.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay import kinds
from polyrelay.api.task_api import TaskCall, accept_id, endpoint, hook, json_response
from polyrelay.billing.meter import Usage
from polyrelay.errors import RelayError
from polyrelay.providers import flux_tasks as upstream
from polyrelay.store.snapshot import ChannelRecord
from polyrelay.tasks.submit import Order

FAMILY = upstream.FAMILY
_NOT_SENT = ("webhook_url", "webhook_secret")
_UNSTORED = ("image_prompt", "input_image", "image", "mask")


def render_error(error: RelayError) -> Response:
    relayed = error.relayed(FAMILY)
    if relayed is not None:
        return Response(relayed, status_code=error.status, media_type="application/json")
    return json_response({"detail": error.message}, error.status, error.headers)


flux_endpoint = endpoint(FAMILY, render_error)


_accept = accept_id(FAMILY, "BFL refused the task")


@flux_endpoint
async def generate(call: TaskCall) -> Response:
    model = call.request.path_params["model"]
    payload = await call.payload()
    body = {k: v for k, v in payload.items() if k not in _NOT_SENT}
    order = Order(FAMILY, "GENERATE", model, kinds.FLUX, f"flux.{model}",
                  {k: v for k, v in body.items() if k not in _UNSTORED}, Usage(images=1, source="request"),
                  notify_hook=hook(payload.get("webhook_url"), "webhook_url"))

    async def send(channel: ChannelRecord, key: str) -> tuple[int, Any]:
        return await upstream.submit(call.engine.session, channel, key, channel.upstream_model(model), body)

    task = await call.submit(order, send, _accept)
    polling_url = f"{str(call.request.base_url).rstrip('/')}/flux/v1/get_result?id={task.id}"
    return json_response({"id": task.id, "polling_url": polling_url})


@flux_endpoint
async def get_result(call: TaskCall) -> Response:
    task_id = call.request.query_params.get("id", "")
    try:
        task = await call.own(task_id)
    except RelayError:
        return json_response({"id": task_id, "status": "Task not found", "result": None}, 404)
    return json_response(call.render(task))


def routes() -> list[BaseRoute]:
    return [
        Route("/flux/v1/get_result", get_result, methods=["GET"]),
        Route("/flux/v1/{model}", generate, methods=["POST"]),
    ]
