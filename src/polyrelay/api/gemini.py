"""The Gemini API family (``/v1beta/models/{model}:generateContent|streamGenerateContent``).

For callers using Google's SDK: the body goes to a ``gemini`` channel untouched (the
model lives in the URL, so mapping never touches the body). Keys come from
``x-goog-api-key`` or ``?key=``, as Google's clients send them; errors are Google's
``{"error":{"code","message","status"}}``.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay.api.common import bearer_key, json_body, new_call, relay_endpoint
from polyrelay.errors import RelayError
from polyrelay.providers.base import Call

FAMILY = "gemini"
_ACTIONS = ("generateContent", "streamGenerateContent")
_RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _error_body(error: RelayError) -> dict[str, Any]:
    status = error.code if error.code in _RPC_STATUS.values() else None
    status = status or _RPC_STATUS.get(error.status, "INTERNAL" if error.status >= 500 else "FAILED_PRECONDITION")
    return {"error": {"code": error.status, "message": error.message, "status": status}}


def error_response(error: RelayError) -> Response:
    """Google's error object; an upstream's own google.rpc status (kept in ``code``) wins."""
    return Response(orjson.dumps(_error_body(error)), status_code=error.status, media_type="application/json",
                    headers=error.headers)


def stream_error(error: RelayError) -> bytes:
    """The error object as a last SSE event, as Google's own streams end on a failure."""
    return b"data: " + orjson.dumps(_error_body(error)) + b"\r\n\r\n"


def _key(request: Request) -> str | None:
    return request.headers.get("x-goog-api-key") or request.query_params.get("key") or bearer_key(request)


def _call(request: Request, body: bytes) -> Call:
    model, sep, action = request.path_params["target"].rpartition(":")
    if not sep or not model or action not in _ACTIONS:
        raise RelayError(404, f"Invalid URL ({request.method} {request.url.path}): expected "
                              "models/{model}:generateContent or :streamGenerateContent.", code="unknown_url")
    payload = json_body(body, "Invalid JSON payload received")
    stream = action == "streamGenerateContent"
    config: Any = payload.get("generationConfig")
    limit = config.get("maxOutputTokens") if isinstance(config, dict) else None
    call = new_call(
        request,
        FAMILY,
        f"gemini.{action}",
        request.url.path,
        model,
        body,
        content_type="application/json",
        payload=payload,
        stream=stream,
        sse=stream and request.query_params.get("alt") == "sse",
        max_output_tokens=limit if isinstance(limit, int) and limit > 0 else None,
        stream_error=stream_error if stream and request.query_params.get("alt") == "sse" else None,
    )
    call.extra["action"] = action
    return call


generate = relay_endpoint(_call, error_response, _key)


def routes() -> list[BaseRoute]:
    return [Route("/v1beta/models/{target}", generate, methods=["POST"])]
