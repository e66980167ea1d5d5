"""A wire-accurate fake of Ideogram's API (api.ideogram.ai), per its official OpenAPI spec.

v1: ``POST /generate`` (JSON ``{"image_request": ...}``), ``/remix`` and ``/upscale``
(multipart ``image_file`` + ``image_request`` JSON), ``/describe`` (multipart
``image_file``); v3: ``POST /v1/ideogram-v3/{generate,remix,edit,reframe,replace-background}``.
Auth: ``Api-Key`` header (401 on generate/edit, 403 on remix/upscale, as the spec says).
A prompt containing "unsafe" fails the safety check (422).

Knobs: ``answer``: ``(status, body)`` returned instead of a result (429 in-flight, 402...);
``image_host``: a host name for this server (e.g. ``localhost``) under which result URLs point at
images it serves itself, ``GET /api/images/ephemeral/{name}`` (``image_bytes(name)``), instead of
ideogram.ai URLs no test can fetch. Like Ideogram's own, that host is not the API's.
``echo``: an HTTP status; every request is refused with it, ``{"error": ...}`` repeating the key it
was sent (``tests.fakes.echo``).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.forms import read_form
from tests.fakes.echo import echoed
from tests.fakes.server import KNOBS

KEYS = web.AppKey("keys", set)
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _denied(request: web.Request, status: int) -> web.Response | None:
    if (echo := request.app[KNOBS].get("echo")) is not None:
        return _json({"error": echoed(request)}, echo)
    if request.headers.get("Api-Key") not in request.app[KEYS]:
        return _json({"error": "Unauthorized"}, status)
    if (answer := request.app[KNOBS].get("answer")) is not None:
        return _json(answer[1], answer[0])
    return None


def image_bytes(name: str) -> bytes:
    """The PNG served at ``/api/images/ephemeral/{name}``: different for every result."""
    return b"\x89PNG\r\n\x1a\n" + f"ideogram result {name}".encode() * 8


def _image_url(request: web.Request) -> str:
    name = f"{uuid.uuid4().hex}.png"
    host = request.app[KNOBS].get("image_host")
    if host is None:
        return f"https://ideogram.ai/api/images/ephemeral/{name}"
    return f"http://{host}:{request.url.port}/api/images/ephemeral/{name}"


async def ephemeral_image(request: web.Request) -> web.Response:
    return web.Response(body=image_bytes(request.match_info["name"]), content_type="image/png")


def _result(request: web.Request, prompt: str, count: int, seed: int | None, style_type: str | None) -> web.Response:
    if "unsafe" in prompt:
        return _json({"error": "Prompt provided failed safety check. Please modify the prompt and try again."}, 422)
    data = [
        {
            "prompt": f"{prompt} (magic)",
            "resolution": "1024x1024",
            "is_image_safe": True,
            "seed": seed if seed is not None else 12345,
            "url": _image_url(request),
            "style_type": style_type or "GENERAL",
        }
        for _ in range(count)
    ]
    return _json({"created": datetime.now(timezone.utc).isoformat(), "data": data})


def _image_request(raw: str | None) -> dict[str, Any] | web.Response:
    if raw is None:
        return _json({"error": "image_request is required"}, 400)
    try:
        return json.loads(raw)
    except ValueError:
        return _json({"error": "image_request is not valid JSON"}, 400)


def _bad_image(field: Any) -> web.Response | None:
    if field is None or field.filename is None:
        return _json({"error": "image_file is required"}, 400)
    if not field.data.startswith(IMAGE_MAGIC):
        return _json({"error": "Unsupported image format"}, 400)
    return None


async def generate(request: web.Request) -> web.Response:
    if (denied := _denied(request, 401)) is not None:
        return denied
    image_request = orjson.loads(await request.read()).get("image_request")
    if not isinstance(image_request, dict) or "prompt" not in image_request:
        return _json({"error": "image_request.prompt is required"}, 400)
    return _result(request, image_request["prompt"], int(image_request.get("num_images", 1)), image_request.get("seed"),
                   image_request.get("style_type"))


async def remix_or_upscale(request: web.Request) -> web.Response:
    if (denied := _denied(request, 403)) is not None:
        return denied
    form = await read_form(request)
    image_request = _image_request(form.text("image_request"))
    if isinstance(image_request, web.Response):
        return image_request
    if (bad := _bad_image(form.get("image_file"))) is not None:
        return bad
    return _result(request, image_request.get("prompt", "upscaled"), int(image_request.get("num_images", 1)),
                   image_request.get("seed"), image_request.get("style_type"))


async def describe(request: web.Request) -> web.Response:
    if (denied := _denied(request, 403)) is not None:
        return denied
    form = await read_form(request)
    if (bad := _bad_image(form.get("image_file"))) is not None:
        return bad
    return _json({"descriptions": [{"text": "A serene tropical beach at sunset."}]})


async def v3(request: web.Request) -> web.Response:
    if (denied := _denied(request, 401)) is not None:
        return denied
    if request.content_type == "application/json":
        fields: dict[str, Any] = orjson.loads(await request.read())
    else:
        form = await read_form(request)
        fields = {f.name: f.text for f in form.fields if f.filename is None}
        for name in ("image", "mask"):
            if (field := form.get(name)) is not None and not field.data.startswith(IMAGE_MAGIC):
                return _json({"error": f"{name} is not an image"}, 400)
    endpoint = request.match_info["endpoint"]
    if endpoint != "reframe" and not fields.get("prompt"):
        return _json({"error": "prompt is required"}, 400)
    return _result(request, fields.get("prompt", "reframed"), int(fields.get("num_images", 1)), None,
                   fields.get("style_type"))


def create_app(keys: set[str]) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[KEYS] = keys
    app[KNOBS] = {}
    app.router.add_post("/generate", generate)
    app.router.add_post("/remix", remix_or_upscale)
    app.router.add_post("/upscale", remix_or_upscale)
    app.router.add_post("/describe", describe)
    app.router.add_post("/v1/ideogram-v3/{endpoint}", v3)
    app.router.add_get("/api/images/ephemeral/{name}", ephemeral_image)
    return app
