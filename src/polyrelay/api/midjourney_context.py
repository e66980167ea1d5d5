"""The Midjourney family's plumbing: its protocol codes and error reply, the per-request context and the endpoint wrapper."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.common import client_ip, read_body
from polyrelay.errors import RelayError
from polyrelay.providers.base import TaskView
from polyrelay.relay.admission import caller
from polyrelay.store.snapshot import TokenRecord
from polyrelay.tasks.engine import TaskEngine


FAMILY = "midjourney"
OK, NOT_FOUND, VALIDATION, FAILURE, EXISTED, IN_QUEUE, QUEUE_FULL = 1, 3, 4, 9, 21, 22, 23


MODES = {"mj-fast": "fast", "mj-relax": "relax", "mj-turbo": "turbo", "fast": "fast", "relax": "relax",
          "turbo": "turbo"}


# Billable model name per action, as in new-api.
ACTION_MODELS = {
    "IMAGINE": "mj_imagine", "UPSCALE": "mj_upscale", "VARIATION": "mj_variation", "REROLL": "mj_reroll",
    "DESCRIBE": "mj_describe", "BLEND": "mj_blend", "ZOOM": "mj_zoom", "PAN": "mj_pan", "SHORTEN": "mj_shorten",
    "SWAP_FACE": "swap_face", "CUSTOM_ZOOM": "mj_custom_zoom", "INPAINT": "mj_inpaint",
    "LOW_VARIATION": "mj_low_variation", "HIGH_VARIATION": "mj_high_variation", "MODAL": "mj_modal",
    "VIDEO": "mj_video", "ACTION": "mj_action",
}
# customId fragment -> action, most specific first (new-api's mapping).
_CUSTOM_ID_ACTIONS = (
    ("low_variation", "LOW_VARIATION"), ("high_variation", "HIGH_VARIATION"), ("variation", "VARIATION"),
    ("upsample", "UPSCALE"), ("reroll", "REROLL"), ("CustomZoom", "CUSTOM_ZOOM"), ("Outpaint", "ZOOM"),
    ("Inpaint", "INPAINT"), ("pan_", "PAN"),
)


class MjError(Exception):
    def __init__(self, status: int, code: int, description: str, properties: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.status, self.code, self.description, self.properties = status, code, description, properties
        self.headers = headers or {}


def mj_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def mj_error(error: MjError) -> Response:
    body: dict[str, Any] = {"code": error.code, "description": error.description, "result": None}
    if error.properties is not None:
        body["properties"] = error.properties
    return mj_json(body, error.status, error.headers)


def from_relay(error: RelayError) -> MjError:
    code = NOT_FOUND if error.status == 404 else VALIDATION if error.status < 500 else FAILURE
    return MjError(error.status, code, error.message, headers=error.headers)


def caller_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, key = authorization.partition(" ")
        return key.strip() if scheme.lower() == "bearer" else authorization.strip()
    return request.headers.get("mj-api-secret")


def action_for_custom_id(custom_id: str) -> str:
    for fragment, action in _CUSTOM_ID_ACTIONS:
        if fragment in custom_id:
            return action
    return "ACTION"


def invalid(description: str) -> MjError:
    return MjError(400, VALIDATION, description)


class MjContext:
    """One caller request: who it is, which speed mode, the engine."""

    def __init__(self, request: Request) -> None:
        mode = request.path_params.get("mode")
        if mode is not None and mode not in MODES:
            raise MjError(404, NOT_FOUND, f"Invalid URL ({request.method} {request.url.path}).")
        self.request = request
        self.mode = MODES.get(mode or "mj-fast", "fast")
        self.tasks: TaskEngine = request.app.state.tasks
        self.token: TokenRecord = caller(self.tasks.spine.snapshot, caller_key(request), client_ip(request))

    async def payload(self) -> dict[str, Any]:
        body = await read_body(self.request)
        try:
            payload = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise invalid(f"The request body is not valid JSON: {exc}.") from None
        if not isinstance(payload, dict):
            raise invalid("The request body must be a JSON object.")
        return payload

    async def own_task(self, task_id: Any) -> TaskView:
        """The caller's own task, else code 3 (a foreign task looks exactly like a missing one)."""
        task = await self.tasks.get(str(task_id)) if task_id else None
        if task is None or task.family != FAMILY or task.token_id != self.token.id:
            raise MjError(404, NOT_FOUND, f"Task {task_id} does not exist.")
        return task


def endpoint(handler: Callable[[MjContext], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        try:
            return await handler(MjContext(request))
        except RelayError as error:
            relayed = error.relayed(FAMILY)
            if relayed is not None:  # the upstream's own refusal, already in this dialect
                return Response(relayed, status_code=error.raw_status or error.status, media_type="application/json")
            return mj_error(from_relay(error))
        except MjError as error:
            return mj_error(error)

    return run
