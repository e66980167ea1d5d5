"""A wire-accurate fake of Stability AI's REST API (api.stability.ai), per its official spec.

v2beta ``POST /v2beta/stable-image/generate/{ultra,core,sd3}`` (multipart,
``authorization: Bearer``): ``accept: image/*`` answers raw bytes with
``finish-reason`` and ``seed`` headers, ``accept: application/json`` answers
``{image, finish_reason, seed}``; errors ``{id, name, errors}``. A prompt containing
"forbidden" is refused 403 ``content_moderation``. v1 ``POST
/v1/generation/{engine_id}/text-to-image`` (JSON) answers ``{artifacts:[...]}`` or
``image/png``; errors ``{id, name, message}``.

Knobs: ``refusals``: a list of ``(status, name, message)``; each v2beta request takes the first
one and is answered with that error instead. ``echo``: an HTTP status; every request is refused with
it, the error repeating the key it was sent (``tests.fakes.echo``).
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.forms import read_form
from tests.fakes.echo import echoed
from tests.fakes.server import KNOBS

KEYS = web.AppKey("keys", set)
IMAGE = b"\x89PNG\r\n\x1a\n" + b"stability image" * 20
V1_ENGINES = ("stable-diffusion-xl-1024-v1-0", "stable-diffusion-v1-6")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _v2_error(status: int, name: str, message: str) -> web.Response:
    return _json({"id": uuid.uuid4().hex, "name": name, "errors": [message]}, status)


def _authorized(request: web.Request) -> bool:
    return request.headers.get("Authorization", "")[7:] in request.app[KEYS]


async def generate(request: web.Request) -> web.Response:
    if (echo := request.app[KNOBS].get("echo")) is not None:
        return _v2_error(echo, "invalid_key", echoed(request))
    if not _authorized(request):
        return _v2_error(401, "unauthorized", "authorization: invalid or missing API key")
    if refusals := request.app[KNOBS].get("refusals"):
        return _v2_error(*refusals.pop(0))
    form = await read_form(request)
    prompt = form.text("prompt")
    if not prompt:
        return _v2_error(400, "bad_request", "prompt: is required")
    if "forbidden" in prompt:
        return _v2_error(403, "content_moderation", "Your request was flagged by our content moderation system")
    model = form.text("model")
    if request.match_info["endpoint"] == "sd3" and model not in (None, "sd3-large", "sd3-medium", "sd3.5-large"):
        return _v2_error(400, "bad_request", f"model: unknown value {model}")
    seed = form.text("seed") or "1234"
    accept = request.headers.get("accept", "image/*")
    if accept == "application/json":
        return _json({"image": base64.b64encode(IMAGE).decode(), "finish_reason": "SUCCESS", "seed": int(seed)})
    if not accept.startswith("image/"):
        return _v2_error(400, "bad_request", "accept: must be image/* or application/json")
    return web.Response(body=IMAGE, content_type="image/png", headers={"finish-reason": "SUCCESS", "seed": seed})


async def text_to_image(request: web.Request) -> web.Response:
    if (echo := request.app[KNOBS].get("echo")) is not None:
        return _json({"id": uuid.uuid4().hex, "name": "invalid_key", "message": echoed(request)}, echo)
    if not _authorized(request):
        return _json({"id": uuid.uuid4().hex, "name": "unauthorized", "message": "missing authorization"}, 401)
    if request.match_info["engine_id"] not in V1_ENGINES:
        return _json({"id": uuid.uuid4().hex, "name": "not_found", "message": "engine not found"}, 404)
    body = orjson.loads(await request.read())
    samples = int(body.get("samples", 1))
    if request.headers.get("accept") == "image/png":
        return web.Response(body=IMAGE, content_type="image/png", headers={"Finish-Reason": "SUCCESS", "Seed": "77"})
    artifacts = [{"base64": base64.b64encode(IMAGE).decode(), "seed": 77 + i, "finishReason": "SUCCESS"}
                 for i in range(samples)]
    return _json({"artifacts": artifacts})


def create_app(keys: set[str]) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[KEYS] = keys
    app[KNOBS] = {}
    app.router.add_post("/v2beta/stable-image/generate/{endpoint}", generate)
    app.router.add_post("/v1/generation/{engine_id}/text-to-image", text_to_image)
    return app
