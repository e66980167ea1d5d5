"""A wire-accurate fake of Recraft's API (external.api.recraft.ai), per its official OpenAPI spec.

``POST /v1/images/generations`` (JSON, ``Authorization: Bearer``) answers
``{created, data:[{image_id, url|b64_json}]}``; the image tools (multipart ``image``)
``/v1/images/{vectorize,removeBackground,crispUpscale,creativeUpscale}`` answer
``{created, image:{image_id, url}}`` (only the current tool names exist here);
``POST /v1/styles`` (multipart ``style`` + ``images``) answers ``{id, style, ...}``.
Unknown generation fields are refused (422), as a strict upstream would.

Knobs: ``echo``: an HTTP status; every request is refused with it, ``{code, message}`` repeating the
key it was sent (``tests.fakes.echo``).
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.forms import read_form
from tests.fakes.echo import echoed
from tests.fakes.server import KNOBS

KEYS = web.AppKey("keys", set)
FIELDS = {"prompt", "n", "style", "style_id", "substyle", "model", "response_format", "size", "negative_prompt",
          "controls", "text_layout", "random_seed", "artistic_level"}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _denied(request: web.Request) -> web.Response | None:
    if (echo := request.app[KNOBS].get("echo")) is not None:
        return _json({"code": "invalid_key", "message": echoed(request)}, echo)
    if request.headers.get("Authorization", "")[7:] not in request.app[KEYS]:
        return _json({"code": "not_authenticated", "message": "Not authenticated"}, 401)
    return None


def _image(response_format: str | None) -> dict[str, Any]:
    if response_format == "b64_json":
        return {"image_id": str(uuid.uuid4()), "b64_json": base64.b64encode(b"\x89PNG recraft").decode()}
    return {"image_id": str(uuid.uuid4()), "url": f"https://img.recraft.ai/{uuid.uuid4().hex}.webp"}


async def generations(request: web.Request) -> web.Response:
    if (denied := _denied(request)) is not None:
        return denied
    body = orjson.loads(await request.read())
    if unknown := set(body) - FIELDS:
        return _json({"code": "invalid_request", "message": f"unknown fields: {sorted(unknown)}"}, 422)
    if body.get("model", "recraftv3") not in ("recraftv3", "recraftv2"):
        return _json({"code": "invalid_model", "message": "unknown model"}, 400)
    n = int(body.get("n", 1))
    return _json({"created": int(time.time()), "data": [_image(body.get("response_format")) for _ in range(n)]})


async def tool(request: web.Request) -> web.Response:
    if (denied := _denied(request)) is not None:
        return denied
    form = await read_form(request)
    if form.get("image") is None:
        return _json({"code": "invalid_request", "message": "image is required"}, 400)
    return _json({"created": int(time.time()), "image": _image(form.text("response_format"))})


async def styles(request: web.Request) -> web.Response:
    if (denied := _denied(request)) is not None:
        return denied
    form = await read_form(request)
    if not form.text("style") or not form.all("images"):
        return _json({"code": "invalid_request", "message": "style and images are required"}, 400)
    return _json({"id": str(uuid.uuid4()), "style": form.text("style"), "creation_time": "2025-01-01T00:00:00Z",
                  "is_private": form.text("private") == "true"})


def create_app(keys: set[str]) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[KEYS] = keys
    app[KNOBS] = {}
    app.router.add_post("/v1/images/generations", generations)
    for name in ("vectorize", "removeBackground", "crispUpscale", "creativeUpscale"):
        app.router.add_post(f"/v1/images/{name}", tool)
    app.router.add_post("/v1/styles", styles)
    return app
