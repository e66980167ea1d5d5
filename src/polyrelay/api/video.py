"""new-api's unified video API on the task engine: ``POST /v1/video/generations``, ``GET /v1/video/generations/{id}``.

The request is new-api's TaskSubmitReq: ``model``*, ``prompt``, ``image`` (or ``images[0]``),
``mode``, ``size``, ``duration`` (or ``seconds``) and ``metadata`` (the family's own fields,
which win). The type of the first channel serving ``model`` picks the family: ``kling`` runs
Kling's image2video when there is an image, else text2video, billed as on ``/kling/v1``;
``luma`` runs a Luma generation billed under ``model``. Tasks are the families' own, so their
native queries read them too. Submit answers new-api's OpenAI video object ``{id, task_id,
object:"video", model, status, progress, created_at}``; the query ``{code:"success", message:"",
data: TaskDto}`` with ``platform`` and ``result_url``. Own tasks only: anything else is 404,
as on ``/v1/tasks``. Errors in OpenAI's shape (this is ``/v1``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay import kinds
from polyrelay.api import kling as kling_api
from polyrelay.api import luma as luma_api
from polyrelay.api.openai import error_response
from polyrelay.api.task_api import TaskCall, endpoint, json_response, not_found
from polyrelay.errors import RelayError, bad_request
from polyrelay.relay import routing
from polyrelay.providers.base import CANCEL, FAILURE, IN_PROGRESS, MODAL, SUCCESS, TaskView
from polyrelay.providers.dto import seconds, task_dto

# new-api maps these sizes onto Kling's aspect ratios; other sizes leave the family's default.
_ASPECT_RATIOS = {"1024x1024": "1:1", "512x512": "1:1", "1280x720": "16:9", "1920x1080": "16:9",
                  "720x1280": "9:16", "1080x1920": "9:16"}
_VIDEO_STATUS = {IN_PROGRESS: "in_progress", MODAL: "in_progress", SUCCESS: "completed", FAILURE: "failed",
                 CANCEL: "failed"}  # anything else: "queued"

video_endpoint = endpoint("", error_response)


def _duration(payload: dict[str, Any]) -> str | None:
    """``duration`` or ``seconds`` as Kling's string ("5"); new-api sends either, as a number or a string."""
    value = payload.get("duration") or payload.get("seconds")
    if isinstance(value, (int, float)) and float(value).is_integer():
        return str(int(value))
    return str(value) if value else None


def _fields(payload: dict[str, Any], mapped: dict[str, Any]) -> dict[str, Any]:
    """The family's request: the mapped fields that were given, then ``metadata`` over them."""
    metadata = payload.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise bad_request("metadata must be a JSON object.", param="metadata")
    return {**{k: v for k, v in mapped.items() if v not in (None, "")}, **metadata}


async def _kling(call: TaskCall, model: str, payload: dict[str, Any], image: Any) -> TaskView:
    fields = _fields(payload, {"model_name": model, "prompt": payload.get("prompt"), "image": image,
                               "mode": payload.get("mode"), "duration": _duration(payload),
                               "aspect_ratio": _ASPECT_RATIOS.get(str(payload.get("size")))})
    return await kling_api.submit_task(call, "IMAGE2VIDEO" if fields.get("image") else "TEXT2VIDEO", fields)


async def _luma(call: TaskCall, model: str, payload: dict[str, Any], image: Any) -> TaskView:
    fields = _fields(payload, {"user_prompt": payload.get("prompt"), "image_url": image,
                               "aspect_ratio": _ASPECT_RATIOS.get(str(payload.get("size")))})
    return await luma_api.submit_generation(call, fields, model=model)


# Kind -> its submit; for both the task family has the same name.
_FAMILIES: dict[str, Callable[[TaskCall, str, dict[str, Any], Any], Awaitable[TaskView]]] = {
    kinds.KLING: _kling, kinds.LUMA: _luma,
}


def _progress(task: TaskView) -> int:
    try:
        return int(task.progress.rstrip("%") or 0)
    except ValueError:
        return 0


@video_endpoint
async def create(call: TaskCall) -> Response:
    payload = await call.payload()
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model is required.", param="model")
    images = payload.get("images")
    image = payload.get("image") or (images[0] if isinstance(images, list) and images else None)
    if not image and not str(payload.get("prompt") or "").strip():
        raise bad_request("prompt is required (or an image to animate).", param="prompt")
    snapshot = call.engine.spine.snapshot
    served = [(groups[0][0].priority, kind) for kind in _FAMILIES if (groups := routing.routes(snapshot, kind, model))]
    family = max(served, key=lambda item: item[0])[1] if served else None  # the best-placed channel's kind
    if family is None:
        raise RelayError(404, f"No video channel serves the model '{model}'.", code="model_not_found", param="model")
    task = await _FAMILIES[family](call, model, payload, image)
    return json_response({"id": task.id, "task_id": task.id, "object": "video", "model": model,
                          "status": _VIDEO_STATUS.get(task.status, "queued"), "progress": _progress(task),
                          "created_at": seconds(task.submit_time)})


@video_endpoint
async def fetch(call: TaskCall) -> Response:
    task_id = call.request.path_params["task_id"]
    task = await call.engine.get(task_id)
    if task is None or task.token_id != call.token.id or task.family not in _FAMILIES:
        raise not_found(task_id)
    adaptor = call.engine.adaptors[task.family]
    media = adaptor.media(task)
    data = task_dto(task, adaptor.render(task), FAILURE if task.status == CANCEL else None)
    data.update(platform=task.family, result_url=media[0]["url"] if media else "")
    return json_response({"code": "success", "message": "", "data": data})


def routes() -> list[BaseRoute]:
    return [Route("/v1/video/generations", create, methods=["POST"]),
            Route("/v1/video/generations/{task_id}", fetch, methods=["GET"])]
