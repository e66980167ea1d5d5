"""Model listings in the caller's dialect: OpenAI's, Anthropic's and Google's SDKs all ask ``GET …/models``.

``/v1/models`` is shared by the three SDKs, told apart by how they authenticate
(``api.dialect``); ``/v1beta/models`` is Google's alone. Each dialect lists the models its calls can reach (natively or bridged) that the
caller's key may use, in its own shape and pagination, and refuses in its own error shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from polyrelay import kinds
from polyrelay.api import anthropic, dialect, gemini
from polyrelay.api.common import bearer_key
from polyrelay.errors import RelayError, bad_request
from polyrelay.relay.auth import authenticate
from polyrelay.relay.pipeline import Relay
from polyrelay.relay import routing

_STARTED = int(time.time())
_STARTED_ISO = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_STARTED))
_GEMINI_ACTIONS = {kinds.GEMINI: ["generateContent", "streamGenerateContent", "countTokens"],
                   kinds.GEMINI_EMBED: ["embedContent", "batchEmbedContents"]}


def _visible(request: Request, key: str | None, of_kinds: tuple[str, ...] | None) -> list[str]:
    """The models ``key`` may use; with ``of_kinds``, only those some channel serves for one of them."""
    relay: Relay = request.app.state.relay
    token = authenticate(relay.snapshot, key)
    names = [name for name in relay.snapshot.model_names() if token.models is None or name in token.models]
    if of_kinds is None:
        return names
    return [name for name in names if any(routing.routes(relay.snapshot, kind, name) for kind in of_kinds)]


def _not_found(model: str) -> RelayError:
    return RelayError(404, f"The model '{model}' does not exist or you do not have access to it.",
                      code="model_not_found", param="model")


def _limit(value: str | None, default: int, maximum: int, name: str) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= maximum:
        raise bad_request(f"{name} must be an integer from 1 to {maximum}.", param=name)
    return int(value)


# --- OpenAI -------------------------------------------------------------------

def _openai_model(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": _STARTED, "owned_by": "polyrelay"}


def _openai_list(request: Request) -> Response:
    data = [_openai_model(name) for name in _visible(request, bearer_key(request), None)]
    return JSONResponse({"object": "list", "data": data})


def _openai_get(request: Request, model: str) -> Response:
    if model not in _visible(request, bearer_key(request), None):
        raise _not_found(model)
    return JSONResponse(_openai_model(model))


# --- Anthropic ----------------------------------------------------------------

def _anthropic_model(model: str) -> dict[str, Any]:
    return {"type": "model", "id": model, "display_name": model, "created_at": _STARTED_ISO}


def _anthropic_list(request: Request) -> Response:
    """Anthropic's cursor pages: ``limit`` (1-1000, default 20), ``after_id`` or ``before_id``."""
    names = _visible(request, anthropic.key_of(request), (kinds.CLAUDE,))
    query = request.query_params
    limit = _limit(query.get("limit"), 20, 1000, "limit")
    if (before := query.get("before_id")) is not None:
        end = names.index(before) if before in names else 0
        start = max(0, end - limit)
        more = start > 0
    else:
        after = query.get("after_id")
        start = names.index(after) + 1 if after in names else (len(names) if after is not None else 0)
        end = min(len(names), start + limit)
        more = end < len(names)
    page = names[start:end]
    return JSONResponse({"data": [_anthropic_model(name) for name in page], "has_more": more,
                         "first_id": page[0] if page else None, "last_id": page[-1] if page else None})


def _anthropic_get(request: Request, model: str) -> Response:
    if model not in _visible(request, anthropic.key_of(request), (kinds.CLAUDE,)):
        raise _not_found(model)
    return JSONResponse(_anthropic_model(model))


# --- Gemini -------------------------------------------------------------------

def _gemini_model(request: Request, model: str) -> dict[str, Any]:
    relay: Relay = request.app.state.relay
    actions = [action for kind, names in _GEMINI_ACTIONS.items() if routing.routes(relay.snapshot, kind, model)
               for action in names]
    return {"name": f"models/{model}", "baseModelId": model, "version": "polyrelay", "displayName": model,
            "description": "", "supportedGenerationMethods": actions}


def _gemini_list(request: Request) -> Response:
    """Google's pages: ``pageSize`` (1-1000, default 50) and the ``nextPageToken`` it returned."""
    names = _visible(request, gemini.key_of(request), tuple(_GEMINI_ACTIONS))
    query = request.query_params
    size = _limit(query.get("pageSize"), 50, 1000, "pageSize")
    token = query.get("pageToken") or "0"
    if not token.isdigit():
        raise bad_request("pageToken is not one this server issued.", param="pageToken")
    start = int(token)
    body: dict[str, Any] = {"models": [_gemini_model(request, name) for name in names[start:start + size]]}
    if start + size < len(names):
        body["nextPageToken"] = str(start + size)
    return JSONResponse(body)


def _gemini_get(request: Request, model: str) -> Response:
    model = model.removeprefix("models/")
    if model not in _visible(request, gemini.key_of(request), tuple(_GEMINI_ACTIONS)):
        raise RelayError(404, f"models/{model} is not found for API version {request.url.path.split('/')[1]}, "
                              "or is not supported for this caller.", code="NOT_FOUND")
    return JSONResponse(_gemini_model(request, model))


# --- dispatch -----------------------------------------------------------------

_BY_DIALECT: dict[str, tuple[Callable[[Request], Response], Callable[[Request, str], Response]]] = {
    dialect.OPENAI: (_openai_list, _openai_get),
    dialect.ANTHROPIC: (_anthropic_list, _anthropic_get),
    dialect.GEMINI: (_gemini_list, _gemini_get),
}


async def list_models(request: Request) -> Response:
    try:
        return _BY_DIALECT[dialect.of(request)][0](request)
    except RelayError as error:
        return dialect.error_response(request, error)


async def retrieve_model(request: Request) -> Response:
    try:
        return _BY_DIALECT[dialect.of(request)][1](request, request.path_params["model"])
    except RelayError as error:
        return dialect.error_response(request, error)


def routes() -> list[BaseRoute]:
    get = ["GET"]
    return [Route(f"/{version}/models", list_models, methods=get) for version in ("v1", "v1beta")] + [
        Route(f"/{version}/models/{{model:path}}", retrieve_model, methods=get) for version in ("v1", "v1beta")]
