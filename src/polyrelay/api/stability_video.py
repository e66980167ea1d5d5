"""Stability image-to-video: ``POST /v2beta/image-to-video``, ``GET /v2beta/image-to-video/result/{id}``.

Submit takes Stability's multipart (``image``*, ``seed``, ``cfg_scale``, ``motion_bucket_id``),
checks the image, bills one ``stable-video-diffusion`` request and answers ``{id}`` with
polyrelay's id. The result answers 202 ``{id, status:"in-progress"}`` until the engine saw the
video ready, then streams the video from the submitting channel **and key** (Stability keeps
results per key for 24 h) with the caller's ``accept`` (``video/*`` or ``application/json``).
A failed job answers Stability's error as it came (a timeout: 504). Also under ``/sd``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from polyrelay import kinds
from polyrelay.api import uploads
from polyrelay.api.common import form_parts, read_body
from polyrelay.api.stability import REQUEST_LIMIT, v2beta_error
from polyrelay.api.task_api import TaskCall, accept_id, endpoint, json_response, refusal
from polyrelay.errors import RelayError, bad_request
from polyrelay.providers import stability_video as upstream
from polyrelay.store.snapshot import ChannelRecord
from polyrelay.providers.base import FAILURE, SUCCESS
from polyrelay.tasks.submit import Order, channel_and_key

FAMILY = upstream.FAMILY
_FIELDS = ("seed", "cfg_scale", "motion_bucket_id")

video_endpoint = endpoint(FAMILY, v2beta_error)


_accept = accept_id(FAMILY, "Stability refused the job")


@video_endpoint
async def submit(call: TaskCall) -> Response:
    if not uploads.is_multipart(call.request):
        raise bad_request("Send the request as multipart/form-data.")
    body = await read_body(call.request)
    limit = uploads.upload_limit(call.request, kinds.STABILITY_VIDEO, upstream.MODEL, REQUEST_LIMIT)
    if len(body) > limit:
        raise uploads.too_large("body", limit)
    content_type = call.request.headers["content-type"]
    parts = form_parts(call.request)
    uploads.check_image(body, uploads.require(parts, "image"), limit)
    stored = {name: value for name in _FIELDS if (value := uploads.text(body, parts, name)) is not None}
    order = Order(FAMILY, "IMAGE_TO_VIDEO", upstream.MODEL, kinds.STABILITY_VIDEO, "v2beta.image-to-video", stored)

    async def send(channel: ChannelRecord, key: str) -> tuple[int, Any]:
        return await upstream.submit(call.engine.session, channel, key, body, content_type)

    task = await call.submit(order, send, _accept)
    return json_response({"id": task.id})


def _accept_header(call: TaskCall) -> str:
    return "application/json" if "application/json" in call.request.headers.get("accept", "") else "video/*"


@video_endpoint
async def result(call: TaskCall) -> Response:
    task = await call.own(call.request.path_params["task_id"])
    if task.status == FAILURE or task.finished and task.status != SUCCESS:
        stored = task.result or {}
        if isinstance(stored.get("error"), dict):
            raise refusal(FAMILY, int(stored.get("error_status") or 500), stored["error"], task.fail_reason)
        raise RelayError(504, task.fail_reason or "The job failed.", code="generation_failed")
    if task.status != SUCCESS:
        return json_response({"id": task.id, "status": "in-progress"}, 202)
    return await stream_result(call.engine.session, _accept_header(call), task.upstream_id,
                               channel_and_key(call.engine, task))


async def stream_result(
    session: aiohttp.ClientSession, accept: str, upstream_id: str, target: tuple[ChannelRecord, str]
) -> Response:
    """A finished job's video (or JSON), streamed from its channel and key; also the console's video link."""
    channel, key = target
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=channel.connect_timeout_s, sock_read=channel.timeout_s)
    try:
        response = await session.get(upstream.result_url(channel, upstream_id),
                                     headers=upstream.headers(key, accept), timeout=timeout)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RelayError(502, f"The upstream is unreachable ({type(exc).__name__}).",
                         type="upstream_error") from None
    if response.status != 200:
        raw = await response.read()
        response.release()
        error = RelayError(response.status if response.status >= 400 else 502,
                           f"Stability answered HTTP {response.status} for a finished job.", type="upstream_error")
        raise (error.with_raw(FAMILY, raw) if response.status >= 400 and raw else error).scrub(channel.keys)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in response.content.iter_chunked(65536):
                yield chunk
        finally:
            response.release()

    headers = {name: response.headers[name] for name in upstream.KEPT_HEADERS if name in response.headers}
    return StreamingResponse(chunks(), status_code=200, headers=headers,
                             media_type=response.headers.get("content-type", "video/mp4"))


def routes() -> list[BaseRoute]:
    result_routes: list[BaseRoute] = []
    for prefix in ("", "/sd"):
        result_routes += [Route(f"{prefix}/v2beta/image-to-video", submit, methods=["POST"]),
                          Route(f"{prefix}/v2beta/image-to-video/result/{{task_id}}", result, methods=["GET"])]
    return result_routes
