"""The Recraft family (``/recraft/v1/...``): Recraft's own bodies and answers, OpenAI-style errors.

Recraft's error shape is not documented, so polyrelay answers in the OpenAI envelope
it resembles, carrying the upstream's status and message. Model names for routing
and prices: the generation ``model`` (default ``recraftv3``, the same name the
DALL·E-format alias uses), ``recraft-styles``, and ``recraft-<tool>`` with the tool's
current name (``recraft-crispUpscale`` also for the older ``clarityUpscale``).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from polyrelay import kinds
from polyrelay.api import uploads
from polyrelay.api.common import form_parts, new_call, relay_endpoint
from polyrelay.api.openai import error_response
from polyrelay.errors import bad_request
from polyrelay.providers.base import Call

FAMILY = "recraft"
PREFIX = "recraft-"
DEFAULT_MODEL = "recraftv3"
IMAGE_LIMIT = 10_000_000  # 10 MB per image ...
MAX_PIXELS = 16 * 1024 * 1024  # ... and 16 MP
STYLE_LIMIT = 5_000_000  # style references: 5 MB together
STYLE_IMAGES = 5
# Older tool names answer as the current ones; upstream only gets current names.
TOOLS = {
    "vectorize": "vectorize",
    "removeBackground": "removeBackground",
    "crispUpscale": "crispUpscale",
    "clarityUpscale": "crispUpscale",
    "creativeUpscale": "creativeUpscale",
    "generativeUpscale": "creativeUpscale",
}


def generations(request: Request, body: bytes) -> Call:
    payload = uploads.json_object(body, "body")
    if not isinstance(payload.get("prompt"), str) or not payload["prompt"]:
        raise bad_request("You must provide a prompt.", param="prompt")
    model = payload.get("model") or DEFAULT_MODEL
    if not isinstance(model, str):
        raise bad_request("'model' must be a string.", param="model")
    call = new_call(request, FAMILY, "images.generations", "/v1/images/generations", model, body)
    call.payload, call.content_type = payload, "application/json"
    call.images = uploads.count(payload.get("n"), "n")
    return call


def styles(request: Request, body: bytes) -> Call:
    parts = form_parts(request)
    if not uploads.text(body, parts, "style"):
        raise bad_request("The multipart field 'style' is required.", param="style")
    images = [p for p in parts if p.name in ("images", "files", "file")]  # "files": the older name
    if not images:
        raise bad_request("The multipart field 'images' is required.", param="images")
    if len(images) > STYLE_IMAGES:
        raise bad_request(f"At most {STYLE_IMAGES} style images are accepted.", param="images")
    model = PREFIX + "styles"
    limit = uploads.upload_limit(request, kinds.RECRAFT, model, STYLE_LIMIT)
    if sum(p.end - p.start for p in images) > limit:
        raise uploads.too_large("images", limit)
    for part in images:
        uploads.check_image(body, part, limit)
    call = new_call(request, FAMILY, "styles", "/v1/styles", model, body)
    call.parts, call.images = parts, 0
    return call


def tool(name: str) -> Callable[[Request, bytes], Call]:
    current = TOOLS[name]

    def parse(request: Request, body: bytes) -> Call:
        parts = form_parts(request)
        image = uploads.require(parts, "image")
        model = PREFIX + current
        uploads.check_image(body, image, uploads.upload_limit(request, kinds.RECRAFT, model, IMAGE_LIMIT), MAX_PIXELS)
        call = new_call(request, FAMILY, f"images.{current}", f"/v1/images/{current}", model, body)
        call.parts, call.images = parts, 1
        return call

    return parse


def routes() -> list[BaseRoute]:
    post = ["POST"]
    return [
        Route("/recraft/v1/styles", relay_endpoint(styles, error_response), methods=post),
        Route("/recraft/v1/images/generations", relay_endpoint(generations, error_response), methods=post),
        *(Route(f"/recraft/v1/images/{name}", relay_endpoint(tool(name), error_response), methods=post)
          for name in TOOLS),
    ]
