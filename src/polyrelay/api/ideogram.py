"""The Ideogram API family (``/ideogram/...``): Ideogram's own paths, bodies and ``{"error": ...}``.

Model names for routing and prices: ``ideogram-<model>`` for generate and remix (the
``image_request.model``, default ``V_2``: ``ideogram-V_2``, ``ideogram-V_2_TURBO``...),
``ideogram-V_3-<rendering_speed>`` for every v3 endpoint (default speed ``DEFAULT``),
``ideogram-upscale`` and ``ideogram-describe``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay import kinds
from polyrelay.api import uploads
from polyrelay.api.common import form_parts, new_call, relay_endpoint
from polyrelay.errors import RelayError, bad_request
from polyrelay.providers.base import Call

FAMILY = "ideogram"
PREFIX = "ideogram-"
IMAGE_LIMIT = 10_000_000  # "max 10 MB" in Ideogram's spec, per file (v3: all style references together)
DEFAULT_MODEL = "V_2"
SPEEDS = frozenset({"FLASH", "TURBO", "BALANCED", "DEFAULT", "QUALITY"})
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_]{1,32}$")
# v3 endpoint -> the file parts and text fields it cannot do without.
V3_REQUIRED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "generate": ((), ("prompt",)),
    "remix": (("image",), ("prompt",)),
    "edit": (("image", "mask"), ("prompt",)),
    "reframe": (("image",), ("resolution",)),
    "replace-background": (("image",), ("prompt",)),
}
_V3_FILES = ("image", "mask", "style_reference_images")


def error_response(error: RelayError) -> Response:
    """Ideogram's error shape; an Ideogram upstream's own error body goes out verbatim."""
    relayed = error.relayed(FAMILY)
    body = relayed if relayed is not None else orjson.dumps({"error": error.message})
    media_type = error.raw_content_type if relayed is not None else "application/json"
    return Response(body, status_code=error.status, media_type=media_type, headers=error.headers)


def _v1_model(image_request: dict[str, Any]) -> str:
    model = image_request.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not _MODEL_NAME.match(model):
        raise bad_request("'image_request.model' must be an Ideogram model name such as V_2.", param="model")
    return PREFIX + model.upper()


def _require_prompt(image_request: dict[str, Any]) -> None:
    if not isinstance(image_request.get("prompt"), str) or not image_request["prompt"]:
        raise bad_request("'image_request.prompt' is required.", param="prompt")


def generate(request: Request, body: bytes) -> Call:
    payload = uploads.json_object(body, "body")
    image_request = payload.get("image_request")
    if not isinstance(image_request, dict):
        raise bad_request("The field 'image_request' is required and must be an object.", param="image_request")
    _require_prompt(image_request)
    call = new_call(request, FAMILY, "generate", "/generate", _v1_model(image_request), body)
    call.payload, call.content_type = payload, "application/json"
    call.extra["image_request"] = image_request
    call.images = uploads.count(image_request.get("num_images"), "num_images")
    return call


def v1_upload(endpoint: str) -> Callable[[Request, bytes], Call]:
    """remix, upscale, describe: multipart with ``image_file`` (and ``image_request`` for remix/upscale)."""

    def parse(request: Request, body: bytes) -> Call:
        parts = form_parts(request)
        image_request: dict[str, Any] | None = None
        if endpoint == "describe":
            model = PREFIX + "describe"
        else:
            raw = uploads.require(parts, "image_request").value(body)
            image_request = uploads.json_object(raw, "image_request")
            if endpoint == "remix":
                _require_prompt(image_request)
                model = _v1_model(image_request)
            else:
                model = PREFIX + "upscale"
        image = uploads.require(parts, "image_file")
        uploads.check_image(body, image, uploads.upload_limit(request, kinds.IDEOGRAM, model, IMAGE_LIMIT))
        call = new_call(request, FAMILY, endpoint, "/" + endpoint, model, body)
        call.parts = parts
        if image_request is not None:
            call.extra["image_request"] = image_request
            call.images = uploads.count(image_request.get("num_images"), "num_images")
        else:
            call.images = 0
        return call

    return parse


def _v3_model(speed: Any) -> str:
    speed = speed or "DEFAULT"
    if not isinstance(speed, str) or speed.upper() not in SPEEDS:
        raise bad_request(f"'rendering_speed' must be one of {', '.join(sorted(SPEEDS))}.", param="rendering_speed")
    return f"{PREFIX}V_3-{speed.upper()}"


def v3(endpoint: str) -> Callable[[Request, bytes], Call]:
    files, fields = V3_REQUIRED[endpoint]
    path = f"/v1/ideogram-v3/{endpoint}"

    def parse(request: Request, body: bytes) -> Call:
        if not uploads.is_multipart(request):
            if files:
                raise bad_request(f"/{endpoint} takes a multipart/form-data body with the image.")
            payload = uploads.json_object(body, "body")
            for name in fields:
                if not payload.get(name):
                    raise bad_request(f"The field '{name}' is required.", param=name)
            call = new_call(request, FAMILY, f"v3.{endpoint}", path, _v3_model(payload.get("rendering_speed")),
                            body)
            call.payload, call.content_type = payload, "application/json"
            call.images = uploads.count(payload.get("num_images"), "num_images")
            return call
        parts = form_parts(request)
        for name in files:
            uploads.require(parts, name)
        for name in fields:
            if not uploads.text(body, parts, name):
                raise bad_request(f"The multipart field '{name}' is required.", param=name)
        model = _v3_model(uploads.text(body, parts, "rendering_speed"))
        limit = uploads.upload_limit(request, kinds.IDEOGRAM, model, IMAGE_LIMIT)
        for part in (p for p in parts if p.name in _V3_FILES):
            uploads.check_image(body, part, limit)
        references = sum(p.end - p.start for p in parts if p.name == "style_reference_images")
        if references > limit:
            raise uploads.too_large("style_reference_images", limit)
        call = new_call(request, FAMILY, f"v3.{endpoint}", path, model, body)
        call.parts = parts
        call.images = uploads.count(uploads.text(body, parts, "num_images"), "num_images")
        return call

    return parse


def routes() -> list[BaseRoute]:
    post = ["POST"]
    parsers: dict[str, Callable[[Request, bytes], Call]] = {
        "generate": generate,
        **{name: v1_upload(name) for name in ("remix", "upscale", "describe")},
    }
    result: list[BaseRoute] = []
    for prefix in ("/ideogram/v1", "/ideogram"):
        for name, parse in parsers.items():
            result.append(Route(f"{prefix}/{name}", relay_endpoint(parse, error_response), methods=post))
        for name in V3_REQUIRED:
            result.append(Route(f"{prefix}/ideogram-v3/{name}", relay_endpoint(v3(name), error_response),
                                methods=post))
    return result
