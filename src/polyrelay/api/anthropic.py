"""The Anthropic API family (``POST /v1/messages``), for callers using Claude's SDK.

The body goes to an ``anthropic`` channel untouched except a mapped model name; the
caller's ``anthropic-version`` and ``anthropic-beta`` headers travel with it. Keys
come from ``x-api-key`` (or a Bearer header); errors are Anthropic's
``{"type":"error","error":{"type","message"}}``, whose ``type`` the SDK classifies by.
"""

from __future__ import annotations

from typing import Any


import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay.api.common import bearer_key, json_body, new_call, relay_endpoint
from polyrelay.errors import RelayError, bad_request
from polyrelay.providers.base import Call

FAMILY = "anthropic"
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_PASSED_HEADERS = ("anthropic-version", "anthropic-beta")


def _error_body(error: RelayError) -> dict[str, Any]:
    known = set(_TYPES.values()) | {"api_error"}
    kind = error.code if error.code in known else _TYPES.get(error.status, "api_error" if error.status >= 500
                                                              else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def error_response(error: RelayError) -> Response:
    """Anthropic's error object; an upstream's own error type (kept in ``code``) wins."""
    return Response(orjson.dumps(_error_body(error)), status_code=error.status, media_type="application/json",
                    headers=error.headers)


def stream_error(error: RelayError) -> bytes:
    """Anthropic's ``error`` event, which its SDK raises mid-stream."""
    return b"event: error\ndata: " + orjson.dumps(_error_body(error)) + b"\n\n"


def _key(request: Request) -> str | None:
    return request.headers.get("x-api-key") or bearer_key(request)


def _call(request: Request, body: bytes) -> Call:
    payload = json_body(body, "The request body is not valid JSON")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model: Field required", param="model")
    stream = payload.get("stream") is True
    limit = payload.get("max_tokens")
    call = new_call(
        request,
        FAMILY,
        "messages",
        request.url.path,
        model,
        body,
        content_type="application/json",
        payload=payload,
        stream=stream,
        sse=stream,
        max_output_tokens=limit if isinstance(limit, int) and limit > 0 else None,
        stream_error=stream_error,
    )
    for name in _PASSED_HEADERS:
        if value := request.headers.get(name):
            call.extra[name] = value
    return call


messages = relay_endpoint(_call, error_response, _key)


def routes() -> list[BaseRoute]:
    return [Route("/v1/messages", messages, methods=["POST"])]
