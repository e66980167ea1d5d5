"""The Luma family in the Luma-API proxy's format.

``POST /luma/generations`` (``user_prompt``, ``aspect_ratio``, ``expand_prompt``, ``image_url``,
``image_end_url``, ``loop``, optional ``notify_hook``) and ``POST /luma/generations/{id}/extend``
answer the generation object with polyrelay's id; ``GET /luma/generations/{id}`` reads it and
``GET /luma/generations/{id}/download_video_url`` answers ``{url}`` for a completed one (all
also under ``/luma/v1/``). ``POST /luma/generations/file_upload {url}`` relays an image upload to
the channel a generation would use (a URL on a private host is refused first: the upstream would
fetch it). ``POST /luma/tasks {ids}`` reads the caller's own tasks among ``ids`` as new-api
TaskDtos. Billing models per submission: ``luma_generation``, ``luma_extend``; ``luma_file_upload``
only when priced. An extension goes to the channel and key of the generation it extends. Errors:
``{detail: {reason, code}}``; upstream refusals are relayed as they came.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import aiohttp
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay import kinds
from polyrelay.api.task_api import TaskCall, batch_ids, endpoint, hook, json_response, refusal
from polyrelay.errors import RelayError, bad_request
from polyrelay.fetch import FetchError, FetchPolicy, check_public_url
from polyrelay.providers import luma as upstream
from polyrelay.store.snapshot import ChannelRecord
from polyrelay.providers.base import SUCCESS, TaskView
from polyrelay.providers.dto import task_dto
from polyrelay.tasks.notify import valid_hook
from polyrelay.tasks.submit import Accepted, Order, channel_and_key

FAMILY = upstream.FAMILY
GENERATION_MODEL = "luma_generation"
UPLOAD_MODEL = "luma_file_upload"


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


async def submit_generation(
    call: TaskCall, payload: dict[str, Any], parent: TaskView | None = None, model: str = GENERATION_MODEL
) -> TaskView:
    """Validate, bill under ``model`` and send a generation, or with ``parent`` its extension; the stored task."""
    if parent is None and not str(payload.get("user_prompt") or "").strip():
        raise bad_request("user_prompt is required.", param="user_prompt")
    action = "GENERATE" if parent is None else "EXTEND"
    path = "/luma/generations" if parent is None else f"/luma/generations/{quote(parent.upstream_id)}/extend"
    body = {k: v for k, v in payload.items() if k != "notify_hook"}
    order = Order(FAMILY, action, model if parent is None else "luma_extend", kinds.LUMA, f"luma.{action.lower()}",
                  dict(payload), notify_hook=hook(payload.get("notify_hook"), "notify_hook"), parent=parent)

    async def send(channel: ChannelRecord, key: str) -> tuple[int, Any]:
        return await upstream.submit(call.engine.session, channel, key, path, body)

    return await call.submit(order, send, _accept)


@luma_endpoint
async def generate(call: TaskCall) -> Response:
    return json_response(call.render(await submit_generation(call, await call.payload())))


@luma_endpoint
async def extend(call: TaskCall) -> Response:
    payload = await call.payload()
    parent = await call.own(call.request.path_params["task_id"])
    return json_response(call.render(await submit_generation(call, payload, parent)))


@luma_endpoint
async def get(call: TaskCall) -> Response:
    return json_response(call.render(await call.own(call.request.path_params["task_id"])))


@luma_endpoint
async def download_video_url(call: TaskCall) -> Response:
    """``{url}`` of a completed generation: its re-hosted copy when there is one, else a fresh link from Luma."""
    task = await call.own(call.request.path_params["task_id"])
    if task.status != SUCCESS:
        raise RelayError(400, f"Generation {task.id} is not completed.", code="invalid_state")
    files = call.engine.spine.files
    stored = upstream.stored_download_url(task.result or {})
    if files is not None and stored.startswith(files.url_of("")):
        return json_response({"url": stored})
    channel, key = channel_and_key(call.engine, task)
    session = call.engine.session
    try:
        status, body = await upstream.fetch_download_url(session, channel, key, task.upstream_id)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise RelayError(502, f"The Luma channel is unreachable ({type(exc).__name__}).", type="upstream_error",
                         code="upstream_failed") from None
    url = body.get("url") if isinstance(body, dict) else None
    if status >= 400 or not isinstance(url, str) or not url:
        raise refusal(FAMILY, status if status >= 400 else 502, body,
                      f"Luma gave no download URL (HTTP {status}).").scrub(channel.keys)
    if files is not None:
        url = await files.rehost_url(url, channel, session) or url
    return json_response({"url": url})


@luma_endpoint
async def file_upload(call: TaskCall) -> Response:
    """Relay ``{url}`` to the upstream's upload; its answer (the Luma-hosted image) comes back as it is."""
    payload = await call.payload()
    url = payload.get("url")
    if not isinstance(url, str) or not valid_hook(url):
        raise bad_request("url must be the http(s) URL of the image to upload.", param="url")
    await _public_image_url(call, url)
    order = Order(FAMILY, "FILE_UPLOAD", UPLOAD_MODEL, kinds.LUMA, "luma.file_upload", {})

    async def send(channel: ChannelRecord, key: str) -> tuple[int, Any]:
        return await upstream.submit(call.engine.session, channel, key, "/luma/generations/file_upload", {"url": url})

    status, body = await call.call_once(order, send)
    if status >= 400 or body is None:
        raise refusal(FAMILY, status if status >= 400 else 502, body, f"Luma refused the upload (HTTP {status}).")
    return json_response(body)


async def _public_image_url(call: TaskCall, url: str) -> None:
    """Refuse a URL on a private host: the upstream would fetch it from inside the operator's network."""
    settings = call.request.app.state.settings
    try:
        await check_public_url(url, FetchPolicy(allow_private=settings.allow_private_image_hosts))
    except FetchError as exc:
        raise bad_request(f"url cannot be uploaded: {exc}.", param="url", code="invalid_image_url") from None


@luma_endpoint
async def tasks(call: TaskCall) -> Response:
    """``{code:"success", data:[TaskDto]}`` of the caller's own tasks among ``ids``; others are left out."""
    found = await call.own_many(batch_ids(await call.payload()))
    return json_response({"code": "success", "message": "", "data": [task_dto(t, call.render(t)) for t in found]})


def routes() -> list[BaseRoute]:
    result: list[BaseRoute] = [Route("/luma/tasks", tasks, methods=["POST"])]
    for prefix in ("/luma", "/luma/v1"):
        result += [Route(f"{prefix}/generations", generate, methods=["POST"]),
                   Route(f"{prefix}/generations/file_upload", file_upload, methods=["POST"]),
                   Route(f"{prefix}/generations/{{task_id}}/extend", extend, methods=["POST"]),
                   Route(f"{prefix}/generations/{{task_id}}/download_video_url", download_video_url, methods=["GET"]),
                   Route(f"{prefix}/generations/{{task_id}}", get, methods=["GET"])]
    return result
