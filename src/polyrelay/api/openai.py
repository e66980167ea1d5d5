"""The OpenAI API family (``/v1/*``): its paths, its error object, and where each call keeps its model.

Requests are parsed only as far as routing and billing need; the body itself is
handed to the relay untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay import multipart
from polyrelay.api import common
from polyrelay.api.common import form_parts, json_body, new_call
from polyrelay.errors import RelayError, bad_request
from polyrelay.providers.chat_in import max_output_tokens
from polyrelay.providers.base import Call

FAMILY = "openai"
MAX_IMAGES = 10  # OpenAI's bound on 'n'; also bounds the concurrent jobs of one-image-per-request upstreams

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def _error_body(error: RelayError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": error.type or _ERROR_TYPES.get(error.status, "api_error"),
            "param": error.param,
            "code": error.code,
        }
    }


def error_response(error: RelayError) -> Response:
    """OpenAI's error object; the SDK picks its exception class from the status."""
    return Response(orjson.dumps(_error_body(error)), status_code=error.status, media_type="application/json",
                    headers=error.headers)


def stream_error(error: RelayError) -> bytes:
    """An error event ending a stream: the ``openai`` SDK raises it as ``APIError`` instead of returning a cut answer."""
    return b"data: " + orjson.dumps(_error_body(error)) + b"\n\n"


def _model(value: Any, default: str | None) -> str:
    if value is None and default is not None:
        return default
    if not isinstance(value, str) or not value:
        raise bad_request("You must provide a model parameter.", param="model")
    return value


def json_call(endpoint: str, default_model: str | None = None) -> Callable[[Request, bytes], Call]:
    def parse(request: Request, body: bytes) -> Call:
        payload = json_body(body, "We could not parse the JSON body of your request")
        call = new_call(request, FAMILY, endpoint, request.url.path, _model(payload.get("model"), default_model), body)
        call.payload = payload
        call.content_type = "application/json"
        if endpoint in ("chat.completions", "completions"):
            call.stream = call.sse = payload.get("stream") is True
            call.stream_error = stream_error
            options = payload.get("stream_options")
            call.include_usage = isinstance(options, dict) and options.get("include_usage") is True
            call.max_output_tokens = max_output_tokens(payload)
        elif endpoint == "images.generations":
            call.images = _count(payload.get("n"), "n", MAX_IMAGES)
        elif endpoint == "audio.speech":
            text = payload.get("input")
            if not isinstance(text, str):
                raise bad_request("You must provide the text to speak as 'input'.", param="input")
            call.characters = len(text)
            call.stream = True  # audio bytes flow through as they are produced
        elif endpoint == "moderations":
            _check_moderation_input(payload.get("input"))
        elif endpoint == "rerank":
            _check_rerank(payload)
        return call

    return parse


def _check_moderation_input(value: Any) -> None:
    """OpenAI's three input forms; the parts themselves are the upstream's to judge."""
    if value is None:
        raise bad_request("Missing required parameter: 'input'.", param="input")
    if isinstance(value, str):
        return
    if isinstance(value, list) and value and (
        all(isinstance(item, str) for item in value) or all(isinstance(item, dict) for item in value)
    ):
        return
    raise bad_request("'input' must be a string, an array of strings or an array of text and image_url objects.",
                      param="input")


def _check_rerank(payload: dict[str, Any]) -> None:
    """Jina's rerank request, checked here so every rerank upstream refuses it alike (and none is paid for it)."""
    query = payload.get("query")
    if query is None:
        raise bad_request("Missing required parameter: 'query'.", param="query")
    if not isinstance(query, str) or not query:
        raise bad_request("'query' must be a non-empty string.", param="query")
    documents = payload.get("documents")
    if not isinstance(documents, list) or not documents:
        raise bad_request("'documents' must be a non-empty array of strings or {\"text\": ...} objects.",
                          param="documents")
    for index, document in enumerate(documents):
        if not isinstance(document, str) and not (isinstance(document, dict) and isinstance(document.get("text"), str)):
            raise bad_request(f"'documents[{index}]' must be a string or an object with a string 'text'.",
                              param=f"documents[{index}]")
    top_n = payload.get("top_n")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise bad_request("'top_n' must be a positive integer.", param="top_n")
    if not isinstance(payload.get("return_documents", True), bool):
        raise bad_request("'return_documents' must be a boolean.", param="return_documents")


def multipart_call(endpoint: str, default_model: str) -> Callable[[Request, bytes], Call]:
    def parse(request: Request, body: bytes) -> Call:
        parts = form_parts(request)
        model_part = multipart.find(parts, "model")
        model = model_part.value(body).decode("utf-8", "replace").strip() if model_part else None
        call = new_call(request, FAMILY, endpoint, request.url.path, _model(model, default_model), body)
        call.parts = parts
        if endpoint.startswith("images."):
            n = multipart.find(parts, "n")
            call.images = _count(n.value(body).decode() if n else None, "n", MAX_IMAGES)
        else:
            response_format = multipart.find(parts, "response_format")
            call.extra["response_format"] = response_format.value(body).decode().strip() if response_format else "json"
        return call

    return parse


def _count(value: Any, param: str, maximum: int) -> int:
    if value is None:
        return 1
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise bad_request(f"'{param}' must be an integer.", param=param) from None
    if not 1 <= count <= maximum:
        raise bad_request(f"'{param}' must be between 1 and {maximum}.", param=param)
    return count


def relay_endpoint(parse: Callable[[Request, bytes], Call]) -> Callable[[Request], Awaitable[Response]]:
    """The shared read → parse → relay wrapper, with OpenAI's error object."""
    return common.relay_endpoint(parse, error_response)


def routes() -> list[BaseRoute]:
    post = ["POST"]
    return [
        Route("/v1/chat/completions", relay_endpoint(json_call("chat.completions")), methods=post),
        Route("/v1/completions", relay_endpoint(json_call("completions")), methods=post),
        Route("/v1/embeddings", relay_endpoint(json_call("embeddings")), methods=post),
        Route("/v1/images/generations", relay_endpoint(json_call("images.generations", "dall-e-2")), methods=post),
        Route("/v1/images/edits", relay_endpoint(multipart_call("images.edits", "dall-e-2")), methods=post),
        Route("/v1/images/variations", relay_endpoint(multipart_call("images.variations", "dall-e-2")), methods=post),
        Route("/v1/audio/speech", relay_endpoint(json_call("audio.speech")), methods=post),
        Route("/v1/audio/transcriptions", relay_endpoint(multipart_call("audio.transcriptions", "whisper-1")),
              methods=post),
        Route("/v1/audio/translations", relay_endpoint(multipart_call("audio.translations", "whisper-1")),
              methods=post),
        Route("/v1/moderations", relay_endpoint(json_call("moderations", "omni-moderation-latest")), methods=post),
        Route("/v1/rerank", relay_endpoint(json_call("rerank")), methods=post),
    ]
