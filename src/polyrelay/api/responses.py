"""The OpenAI Responses API (``/v1/responses``): create, and the calls about a stored response.

``POST /v1/responses`` is routed by model like any OpenAI call: native on OpenAI channels,
bridged through chat elsewhere (``dialects.responses``). Retrieve, delete, cancel and
input items name no model: they go to the caller's channels that speak Responses
natively, the next one on 404 (``relay.stored``). Errors are OpenAI's error object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay import kinds
from polyrelay.api import common
from polyrelay.api.common import client_ip, json_body, new_call
from polyrelay.api.openai import FAMILY, error_response, stream_error
from polyrelay.errors import RelayError, bad_request
from polyrelay.providers.base import Call
from polyrelay.providers.openai_responses import METHOD
from polyrelay.relay.admission import caller
from polyrelay.relay.pipeline import Relay

_PATH = "/v1/responses"


def _create(request: Request, body: bytes) -> Call:
    payload = json_body(body, "We could not parse the JSON body of your request")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("You must provide a model parameter.", param="model")
    call = new_call(request, FAMILY, "responses", _PATH, model, body, content_type="application/json")
    call.payload = payload
    call.stream = call.sse = payload.get("stream") is True
    call.stream_error = stream_error
    limit = payload.get("max_output_tokens")
    call.max_output_tokens = limit if isinstance(limit, int) and limit > 0 else None
    return call


def _stored(method: str, action: str, suffix: str = "") -> Callable[[Request], Awaitable[Response]]:
    """An endpoint about the stored response named in the path, relayed as it came (query included)."""

    async def endpoint(request: Request) -> Response:
        try:
            relay: Relay = request.app.state.relay
            token = caller(relay.snapshot, common.bearer_key(request), client_ip(request))
            if request.query_params.get("stream") == "true":
                raise bad_request("Streaming a stored response again is not supported by this gateway.",
                                  param="stream")
            response_id = request.path_params["response_id"]
            path = f"{_PATH}/{quote(response_id, safe='')}{suffix}"
            if request.url.query:
                path += "?" + request.url.query
            await common.read_body(request)  # cancel has no body; anything sent is not forwarded
            call = new_call(request, FAMILY, f"responses.{action}", path, "", b"", kind=kinds.RESPONSES)
            call.extra[METHOD] = method
            return await relay.handle_stored(call, token, f"the response '{response_id}'")
        except RelayError as error:
            return error_response(error)

    return endpoint


def routes() -> list[BaseRoute]:
    """Before OpenAI's catch-all ``/v1/{rest:path}``."""
    return [
        Route(_PATH, common.relay_endpoint(_create, error_response), methods=["POST"]),
        Route(_PATH + "/{response_id}", _stored("GET", "retrieve"), methods=["GET"]),
        Route(_PATH + "/{response_id}", _stored("DELETE", "delete"), methods=["DELETE"]),
        Route(_PATH + "/{response_id}/input_items", _stored("GET", "input_items", "/input_items"), methods=["GET"]),
        Route(_PATH + "/{response_id}/cancel", _stored("POST", "cancel", "/cancel"), methods=["POST"]),
    ]
