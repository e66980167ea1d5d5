"""The Suno family: new-api's relay routes, plus concat and the "/suno/v1" envelope some clients use.

Native: ``POST /suno/submit/{music|lyrics|concat}`` -> ``{code:"success", message:"", data:"<task id>"}``;
``GET /suno/fetch/{id}`` -> ``{code:"success", data: TaskDto}``; ``POST /suno/fetch {ids}`` -> ``data: [TaskDto]``.
Envelope: ``POST /suno/v1/music`` (mv chirp-v3-0 unless ``input.mv``), ``POST /suno/v1/mv-3.5``
(chirp-v3-5), ``POST /suno/v1/v3.0/music/concat {clip_id}`` with ``{custom_mode, input:{...}, notify_hook}``
-> ``{code:200, data:{task_id}, message:"success"}``; ``GET /suno/v1/music/{id}`` -> ``{code:200, data: TaskDto}``.
Billing models per submission: ``suno_music``, ``suno_lyrics``, ``suno_concat``. ``task_id`` (with
``continue_clip_id``, or with ``clip_id`` for concat) names the caller's earlier task and sends the job
to that task's channel and key. Errors: ``{code, message, data:null}`` (envelope: ``code`` = the HTTP
status); the quota answer is HTTP 429 ``insufficient_quota``; upstream refusals are relayed as they came.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay import kinds
from polyrelay.api.task_api import TaskCall, batch_ids, endpoint, hook, json_response, refusal
from polyrelay.errors import RelayError, bad_request
from polyrelay.providers import suno as upstream
from polyrelay.store.snapshot import ChannelRecord
from polyrelay.providers.base import TaskView
from polyrelay.tasks.submit import Accepted, Order

FAMILY = upstream.FAMILY
MODELS = {"MUSIC": "suno_music", "LYRICS": "suno_lyrics", "CONCAT": "suno_concat"}


def render_error(error: RelayError) -> Response:
    relayed = error.relayed(FAMILY)
    if relayed is not None:
        return Response(relayed, status_code=error.status, media_type="application/json")
    return json_response({"code": error.code or error.type, "message": error.message, "data": None},
                         error.status, error.headers)


def render_envelope_error(error: RelayError) -> Response:
    return json_response({"code": error.status, "message": error.message, "data": None}, error.status,
                         error.headers)


native = endpoint(FAMILY, render_error)
envelope = endpoint(FAMILY, render_envelope_error)


def _accept(status: int, body: Any) -> Accepted:
    if status >= 400 or not isinstance(body, dict) or body.get("code") != "success" or not body.get("data"):
        message = body.get("message") if isinstance(body, dict) else None
        raise refusal(FAMILY, status if status >= 400 else 400, body, str(message or f"Suno refused (HTTP {status})."))
    return Accepted(str(body["data"]))


async def _run(call: TaskCall, action: str, payload: dict[str, Any], callback: str) -> TaskView:
    """Validate, pick the parent (continuations, concat), submit; the stored task."""
    if action == "LYRICS" and not str(payload.get("prompt") or "").strip():
        raise bad_request("prompt is required for lyrics.", param="prompt")
    if action == "CONCAT" and not payload.get("clip_id"):
        raise bad_request("clip_id is required.", param="clip_id")
    if payload.get("continue_clip_id") and not payload.get("task_id"):
        raise bad_request("task_id is required with continue_clip_id.", param="task_id")
    parent = await call.own(payload["task_id"]) if payload.get("task_id") else None
    body = {k: v for k, v in payload.items() if k not in ("notify_hook", "task_id")}
    if parent is not None:
        body["task_id"] = parent.upstream_id
    order = Order(FAMILY, action, MODELS[action], kinds.SUNO, f"suno.submit.{action.lower()}", dict(payload),
                  notify_hook=callback, parent=parent)

    async def send(channel: ChannelRecord, key: str) -> tuple[int, Any]:
        return await upstream.submit(call.engine.session, channel, key, action, body)

    return await call.submit(order, send, _accept)


@native
async def submit(call: TaskCall) -> Response:
    action = call.request.path_params["action"].upper()
    if action not in MODELS:
        raise RelayError(404, f"Unknown action '{action.lower()}'.", code="invalid_action")
    payload = await call.payload()
    task = await _run(call, action, payload, hook(payload.get("notify_hook"), "notify_hook"))
    return json_response({"code": "success", "message": "", "data": task.id})


@native
async def fetch_one(call: TaskCall) -> Response:
    task = await call.own(call.request.path_params["task_id"])
    return json_response({"code": "success", "message": "", "data": call.render(task)})


@native
async def fetch_many(call: TaskCall) -> Response:
    tasks = await call.own_many(batch_ids(await call.payload()))
    return json_response({"code": "success", "message": "", "data": [call.render(t) for t in tasks]})


def _envelope_submit(action: str, mv: str = "") -> Any:
    @envelope
    async def run(call: TaskCall) -> Response:
        payload = await call.payload()
        fields = payload.get("input") if isinstance(payload.get("input"), dict) else {}
        fields = {**({"mv": mv} if mv else {}), **fields}
        for name in ("clip_id", "is_infill", "task_id"):  # concat sends these at the top level
            if name in payload and name not in fields:
                fields[name] = payload[name]
        task = await _run(call, action, fields, hook(payload.get("notify_hook"), "notify_hook"))
        return json_response({"code": 200, "data": {"task_id": task.id}, "message": "success"})

    return run


@envelope
async def envelope_fetch(call: TaskCall) -> Response:
    task = await call.own(call.request.path_params["task_id"])
    return json_response({"code": 200, "data": call.render(task), "message": "success"})


def routes() -> list[BaseRoute]:
    post, get = ["POST"], ["GET"]
    return [
        Route("/suno/submit/{action}", submit, methods=post),
        Route("/suno/fetch/{task_id}", fetch_one, methods=get),
        Route("/suno/fetch", fetch_many, methods=post),
        Route("/suno/v1/music", _envelope_submit("MUSIC", "chirp-v3-0"), methods=post),
        Route("/suno/v1/mv-3.5", _envelope_submit("MUSIC", "chirp-v3-5"), methods=post),
        Route("/suno/v1/v3.0/music/concat", _envelope_submit("CONCAT"), methods=post),
        Route("/suno/v1/music/{task_id}", envelope_fetch, methods=get),
    ]
