"""The Stability AI family: v2beta stable-image and v1 SDXL/SD1.6 paths, bare and under ``/sd``.

Errors keep Stability's shapes: ``{id, name, errors:[...]}`` on v2beta, ``{id, name,
message}`` on v1; an upstream Stability error body is relayed verbatim. Model names
for routing and prices: ``stable-image-ultra``, ``stable-image-core``, the sd3 form's
``model`` (default ``sd3.5-large``), and the v1 ``engine_id``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay import kinds, multipart
from polyrelay.api import uploads
from polyrelay.api.common import form_parts, new_call, relay_endpoint
from polyrelay.errors import RelayError, bad_request
from polyrelay.providers.base import Call

FAMILY = "stability"
REQUEST_LIMIT = 10 * 1024 * 1024  # "max request 10 MiB" (v2beta); the whole body, files included
SD3_DEFAULT_MODEL = "sd3.5-large"
V2BETA_MODELS = {"ultra": "stable-image-ultra", "core": "stable-image-core"}


def _render(error: RelayError, v1: bool) -> Response:
    relayed = error.relayed(FAMILY)
    if relayed is not None:
        return Response(relayed, status_code=error.status, media_type=error.raw_content_type, headers=error.headers)
    body: dict[str, object] = {"id": uuid.uuid4().hex, "name": error.code or error.type}
    body.update({"message": error.message} if v1 else {"errors": [error.message]})
    return Response(orjson.dumps(body), status_code=error.status, media_type="application/json",
                    headers=error.headers)


def v2beta_error(error: RelayError) -> Response:
    return _render(error, v1=False)


def v1_error(error: RelayError) -> Response:
    return _render(error, v1=True)


def _accept(request: Request, default: str) -> str:
    """Stability takes only ``image/...`` or ``application/json``; HTTP clients' ``*/*`` means its default."""
    accept = request.headers.get("accept", "").strip()
    if accept.startswith("image/"):
        return accept
    return "application/json" if "application/json" in accept else default


def v2beta(endpoint: str) -> Callable[[Request, bytes], Call]:
    def parse(request: Request, body: bytes) -> Call:
        parts = form_parts(request)
        if not uploads.text(body, parts, "prompt"):
            raise bad_request("The multipart field 'prompt' is required.", param="prompt")
        model = V2BETA_MODELS.get(endpoint) or uploads.text(body, parts, "model") or SD3_DEFAULT_MODEL
        limit = uploads.upload_limit(request, kinds.STABILITY, model, REQUEST_LIMIT)
        if len(body) > limit:
            raise uploads.too_large("body", limit)
        image = multipart.find(parts, "image")
        if endpoint == "sd3" and uploads.text(body, parts, "mode") == "image-to-image" and image is None:
            raise bad_request("The multipart field 'image' is required for mode image-to-image.", param="image")
        if image is not None:
            uploads.check_image(body, image, limit)
        call = new_call(request, FAMILY, f"v2beta.{endpoint}", f"/v2beta/stable-image/generate/{endpoint}",
                        model, body)
        call.parts = parts
        call.extra["accept"] = _accept(request, "image/*")
        return call

    return parse


def text_to_image(request: Request, body: bytes) -> Call:
    payload = uploads.json_object(body, "body")
    prompts = payload.get("text_prompts")
    if not isinstance(prompts, list) or not prompts:
        raise bad_request("'text_prompts' is required and must be a non-empty list.", param="text_prompts")
    engine = request.path_params["engine_id"]
    call = new_call(request, FAMILY, "v1.text-to-image", f"/v1/generation/{engine}/text-to-image", engine,
                    body)
    call.payload, call.content_type = payload, "application/json"
    call.images = uploads.count(payload.get("samples"), "samples")
    call.extra["accept"] = _accept(request, "application/json")
    return call


def routes() -> list[BaseRoute]:
    post = ["POST"]
    result: list[BaseRoute] = []
    for prefix in ("/sd", ""):
        for name in ("ultra", "core", "sd3"):
            result.append(Route(f"{prefix}/v2beta/stable-image/generate/{name}",
                                relay_endpoint(v2beta(name), v2beta_error), methods=post))
        result.append(Route(f"{prefix}/v1/generation/{{engine_id}}/text-to-image",
                            relay_endpoint(text_to_image, v1_error), methods=post))
    return result
