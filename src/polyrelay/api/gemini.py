"""The Gemini API family (``/v1`` and ``/v1beta``: ``models/{model}:{action}``), for callers using Google's SDK.

Actions: ``generateContent``, ``streamGenerateContent`` (SSE with ``alt=sse``, else one
JSON array), ``countTokens``, ``embedContent``, ``batchEmbedContents``. On a ``gemini``
channel the body goes untouched (the model lives in the URL, so mapping never touches
it); any other channel gets it through the Gemini dialects (``dialects.gemini``,
``dialects.gemini_embed``). Token counting is free: relayed to a Gemini channel when one
serves the model, else counted here. The google-genai SDK (3.x) defaults to ``/v1``.
Keys come from ``x-goog-api-key`` or ``?key=``, as Google's clients send them; every
error under ``/v1beta`` (unknown paths too) and of ``/v1/models/{model}:{action}`` is
Google's ``{"error":{"code","message","status"}}``.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay import kinds
from polyrelay.api.common import bearer_key, client_ip, json_body, new_call, read_body, relay_endpoint
from polyrelay.dialects.gemini import RPC_CODES, rpc_status
from polyrelay.dialects.gemini_request import count_tokens as local_count
from polyrelay.errors import RelayError
from polyrelay.providers.base import Call
from polyrelay.relay import counting
from polyrelay.relay.admission import caller
from polyrelay.relay.pipeline import Relay

FAMILY = "gemini"
_ACTIONS = frozenset({"generateContent", "streamGenerateContent", "countTokens", "embedContent",
                      "batchEmbedContents"})
_JSON = "application/json"
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _error_body(error: RelayError) -> dict[str, Any]:
    status = error.code if error.code in RPC_CODES else rpc_status(error.status)
    return {"error": {"code": error.status, "message": error.message, "status": status}}


def error_response(error: RelayError) -> Response:
    """Google's error object; an upstream's own google.rpc status (kept in ``code``) wins."""
    return Response(orjson.dumps(_error_body(error)), status_code=error.status, media_type=_JSON,
                    headers=error.headers)


def stream_error(error: RelayError) -> bytes:
    """The error object as a last SSE event, as Google's own streams end on a failure."""
    return b"data: " + orjson.dumps(_error_body(error)) + b"\r\n\r\n"


def key_of(request: Request) -> str | None:
    return request.headers.get("x-goog-api-key") or request.query_params.get("key") or bearer_key(request)


def _call(request: Request, body: bytes) -> Call:
    model, action = request.path_params["model"], request.path_params["action"]
    if action not in _ACTIONS:
        raise RelayError(404, f"Invalid URL ({request.method} {request.url.path}): models/{{model}} has no method "
                              f"{action!r}; expected one of {', '.join(sorted(_ACTIONS))}.", code="unknown_url")
    payload = json_body(body, "Invalid JSON payload received")
    stream = action == "streamGenerateContent"
    sse = stream and request.query_params.get("alt") == "sse"
    config: Any = payload.get("generationConfig") or payload.get("generation_config")
    limit = (config.get("maxOutputTokens") or config.get("max_output_tokens")) if isinstance(config, dict) else None
    call = new_call(
        request,
        FAMILY,
        f"gemini.{action}",
        request.url.path,
        model,
        body,
        content_type=_JSON,
        payload=payload,
        stream=stream,
        sse=sse,
        max_output_tokens=limit if isinstance(limit, int) and limit > 0 else None,
        # The JSON-array form has no event to end on: a broken one is cut (and so no longer parses).
        stream_error=stream_error if sse else None,
        free=action == "countTokens",
    )
    call.extra["action"] = action
    return call


_relayed = relay_endpoint(_call, error_response, key_of)


async def model_action(request: Request) -> Response:
    if request.path_params["action"] == "countTokens":
        return await _count_tokens(request)
    return await _relayed(request)


async def _count_tokens(request: Request) -> Response:
    """``totalTokens``, free: a Gemini channel's own count when one serves the model for this key, else a
    local estimate when a channel of another type serves it (``gemini_request.count_tokens``)."""
    try:
        relay: Relay = request.app.state.relay
        token = caller(relay.snapshot, key_of(request), client_ip(request))
        call = _call(request, await read_body(request))
        return await counting.count_tokens(relay, call, token, kinds.GEMINI, local_count)
    except RelayError as error:
        return error_response(error)


async def not_found(request: Request) -> Response:
    return error_response(RelayError(404, f"Invalid URL ({request.method} {request.url.path}).", code="unknown_url"))


def routes() -> list[BaseRoute]:
    # ``/v1/models/{model}:{action}`` must come before the OpenAI family's ``/v1/{rest:path}``; a POST to
    # ``/v1/models/{model}`` without an action still reaches OpenAI's 404.
    return [Route(f"/{version}/models/{{model}}:{{action}}", model_action, methods=["POST"])
            for version in ("v1", "v1beta")] + [Route("/v1beta/{rest:path}", not_found, methods=_ALL_METHODS)]
