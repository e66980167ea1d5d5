"""A fake of Stability's image-to-video: multipart submit, result per submitting key.

``POST /v2beta/image-to-video`` (``Authorization: Bearer`` one of KEYS, multipart with a
PNG/JPEG ``image``) -> ``{id}``; ``GET /v2beta/image-to-video/result/{id}`` with the same
key (another key: 404, as results belong to the key) -> 202 ``{id, status:"in-progress"}``
until done, then the MP4 bytes (``accept: video/*``) or ``{video (base64), finish_reason,
seed}`` (``accept: application/json``). A ``seed`` of 13 makes the job fail: 400
``{id, name, errors}``. Knobs: those of ``task_clock`` (``echo_fail``: the failure's ``errors``
repeat the key) and ``echo``: an HTTP status: every submit is refused with it, ``{id, name, errors}``
repeating the key it was sent (``tests.fakes.echo``).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.forms import read_form
from tests.fakes.echo import echoed
from tests.fakes.server import KNOBS
from tests.fakes.task_clock import JOBS, base_app, new_job, poll, reason

KEYS = ("sk-stab-video-1", "sk-stab-video-2")
VIDEO = b"\x00\x00\x00\x20ftypisom" + b"fake mp4 " * 50


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _key(request: web.Request) -> str | None:
    key = request.headers.get("Authorization", "").removeprefix("Bearer ")
    return key if key in KEYS else None


async def submit(request: web.Request) -> web.Response:
    if (echo := request.app[KNOBS].get("echo")) is not None:
        return _json({"id": "e", "name": "invalid_key", "errors": [echoed(request)]}, echo)
    key = _key(request)
    if key is None:
        return _json({"id": "e", "name": "unauthorized", "errors": ["authentication failed"]}, 401)
    form = await read_form(request)
    image = form.get("image")
    if image is None or not image.data.startswith((b"\x89PNG", b"\xff\xd8")):
        return _json({"id": "e", "name": "bad_request", "errors": ["image: is required"]}, 400)
    job = new_job(request.app, "video", {"seed": form.text("seed")}, "svd", key)
    job.fail = job.fail or form.text("seed") == "13"
    return _json({"id": job.id})


async def result(request: web.Request) -> web.Response:
    job = request.app[JOBS].get(request.match_info["id"])
    if job is None or _key(request) != job.key:
        return _json({"id": "e", "name": "not_found", "errors": ["generation not found"]}, 404)
    state = poll(request, job.id).state  # type: ignore[union-attr]
    if state == "failed":
        return _json({"id": job.id, "name": "bad_request",
                      "errors": [reason(request, job, "the image could not be animated")]}, 400)
    if state != "done":
        return _json({"id": job.id, "status": "in-progress"}, 202)
    headers = {"finish-reason": "SUCCESS", "seed": "42"}
    if "application/json" in request.headers.get("accept", ""):
        return _json({"video": base64.b64encode(VIDEO).decode(), "finish_reason": "SUCCESS", "seed": 42})
    return web.Response(body=VIDEO, content_type="video/mp4", headers=headers)


def create_app() -> web.Application:
    app = base_app()
    app.router.add_post("/v2beta/image-to-video", submit)
    app.router.add_get("/v2beta/image-to-video/result/{id}", result)
    return app
