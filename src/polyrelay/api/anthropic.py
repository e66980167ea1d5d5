"""The Anthropic API family (``/v1/messages`` and ``/v1/messages/count_tokens``), for callers using Claude's SDK.

On an ``anthropic`` channel the body goes untouched except a mapped model name; the
caller's ``anthropic-version`` and ``anthropic-beta`` headers travel with it. Any other
channel that serves chat gets it through the Claude dialect (``dialects.claude``).
Token counting is free: relayed to an Anthropic channel when one serves the model, else
counted here. Keys come from ``x-api-key`` (or a Bearer header); every answer under
``/v1/messages`` that is not a success, unknown sub-paths and wrong methods included, is
Anthropic's ``{"type":"error","error":{"type","message"}}``, whose ``type`` the SDK classifies by.
"""

from __future__ import annotations


import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay import kinds
from polyrelay.api.common import bearer_key, client_ip, json_body, new_call, read_body, relay_endpoint
from polyrelay.dialects import claude
from polyrelay.errors import RelayError, bad_request
from polyrelay.providers.base import Call
from polyrelay.relay import counting
from polyrelay.relay.admission import caller
from polyrelay.relay.pipeline import Relay

FAMILY = "anthropic"
_PASSED_HEADERS = ("anthropic-version", "anthropic-beta")
_JSON = "application/json"
_OTHER_METHODS = ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"]


def error_response(error: RelayError) -> Response:
    """Anthropic's error object; an upstream's own error type (kept in ``code``) wins."""
    return Response(orjson.dumps(claude.error_body(error)), status_code=error.status, media_type=_JSON,
                    headers=error.headers)


def stream_error(error: RelayError) -> bytes:
    """Anthropic's ``error`` event, which its SDK raises mid-stream."""
    return b"event: error\ndata: " + orjson.dumps(claude.error_body(error)) + b"\n\n"


def key_of(request: Request) -> str | None:
    return request.headers.get("x-api-key") or bearer_key(request)


def _call(request: Request, body: bytes, endpoint: str = "messages") -> Call:
    payload = json_body(body, "The request body is not valid JSON")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model: Field required", param="model")
    stream = endpoint == "messages" and payload.get("stream") is True
    limit = payload.get("max_tokens")
    call = new_call(
        request,
        FAMILY,
        endpoint,
        request.url.path,
        model,
        body,
        content_type=_JSON,
        payload=payload,
        stream=stream,
        sse=stream,
        max_output_tokens=limit if isinstance(limit, int) and limit > 0 else None,
        stream_error=stream_error,
        free=endpoint == "messages.count_tokens",
    )
    for name in _PASSED_HEADERS:
        if value := request.headers.get(name):
            call.extra[name] = value
    return call


messages = relay_endpoint(_call, error_response, key_of)


def _estimate(call: Call) -> dict[str, int]:
    return {"input_tokens": claude.count_tokens(call.payload or {})}


async def count_tokens(request: Request) -> Response:
    """``input_tokens`` of a Messages request, free: an Anthropic channel's own count when one serves the
    model for this key, else a local estimate when a channel of another type does (see ``claude.count_tokens``)."""
    try:
        relay: Relay = request.app.state.relay
        token = caller(relay.snapshot, key_of(request), client_ip(request))
        call = _call(request, await read_body(request), "messages.count_tokens")
        return await counting.count_tokens(relay, call, token, kinds.CLAUDE, _estimate)
    except RelayError as error:
        return error_response(error)


async def not_found(request: Request) -> Response:
    return error_response(RelayError(404, f"Not found: {request.method} {request.url.path}", code="not_found_error"))


async def method_not_allowed(request: Request) -> Response:
    return error_response(RelayError(405, f"Method {request.method} is not allowed on {request.url.path}; use POST."))


def routes() -> list[BaseRoute]:
    # The POST routes first, then every other method on them, then anything else under /v1/messages/.
    return [Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
            Route("/v1/messages", method_not_allowed, methods=_OTHER_METHODS),
            Route("/v1/messages/count_tokens", method_not_allowed, methods=_OTHER_METHODS),
            Route("/v1/messages/{rest:path}", not_found, methods=["POST", *_OTHER_METHODS])]
