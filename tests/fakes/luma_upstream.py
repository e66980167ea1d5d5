"""A fake Luma-API proxy, ``Authorization: Bearer LUMA_KEY``.

``POST /luma/generations`` answers a one-item list holding the generation (state
pending); ``POST /luma/generations/{id}/extend`` (only of a completed generation, else
400 ``{detail}``) answers the new generation; ``GET /luma/generations/{id}`` advances
it: pending -> processing -> completed with ``video`` / ``artifact``; "FAIL" -> failed.
``GET /luma/generations/{id}/download_video_url`` answers ``{url}`` for a completed one (else
400 ``{detail}``); ``POST /luma/generations/file_upload {url}`` answers the uploaded image
(``{id, presigned_url, public_url}``; a URL with "FAIL" in it: 400 ``{detail}``). Media URLs
start with the knob ``cdn`` (default Luma's CDN); ``GET /cdn/{name}`` serves an MP4, so
``knobs["cdn"] = fake.url + "/cdn"`` makes results downloadable (re-hosting). Also the knobs of
``task_clock`` (``echo_fail``: ``failure_reason`` repeats the key) and ``echo``: an HTTP status: every
request is refused with it, ``{detail}`` repeating the key it was sent (``tests.fakes.echo``).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import KNOBS
from tests.fakes.echo import echoed
from tests.fakes.task_clock import JOBS, Job, base_app, new_job, poll, reason

LUMA_KEY = "luma-upstream-key"
CDN = "https://storage.cdn-luma.com"
VIDEO = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64
_STATE = {"queued": "pending", "running": "processing", "done": "completed", "failed": "failed"}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _cdn(request: web.Request) -> str:
    return str(request.app[KNOBS].get("cdn", CDN))


def _generation(job: Job, request: web.Request) -> dict[str, Any]:
    cdn = _cdn(request)
    done = job.state == "done"
    video = {"url": f"{cdn}/{job.id}.mp4", "width": 1360, "height": 752,
             "thumbnail": None, "download_url": f"{cdn}/{job.id}-dl.mp4"} if done else None
    item = {"id": job.id, "prompt": job.body.get("user_prompt", ""), "state": _STATE[job.state],
            "created_at": "2024-06-01T00:00:00.000Z", "video": video, "liked": None,
            "estimate_wait_seconds": None if done else 60,
            "thumbnail": {"url": f"{cdn}/{job.id}.jpg"} if done else None}
    if job.state == "failed":
        item["failure_reason"] = reason(request, job, "The prompt was rejected")
    return item


def _denied(request: web.Request) -> web.Response | None:
    if (echo := request.app[KNOBS].get("echo")) is not None:
        return _json({"detail": echoed(request)}, echo)
    if request.headers.get("Authorization") != f"Bearer {LUMA_KEY}":
        return _json({"detail": "Invalid token"}, 401)
    return None


async def generate(request: web.Request) -> web.Response:
    if (denied := _denied(request)) is not None:
        return denied
    body = orjson.loads(await request.read() or b"{}")
    return _json([_generation(new_job(request.app, "GENERATE", body, "luma"), request)])


async def extend(request: web.Request) -> web.Response:
    if (denied := _denied(request)) is not None:
        return denied
    parent = request.app[JOBS].get(request.match_info["id"])
    if parent is None or parent.state != "done":
        return _json({"detail": {"reason": "generation is not completed", "code": "invalid_state"}}, 400)
    body = orjson.loads(await request.read() or b"{}")
    return _json(_generation(new_job(request.app, "EXTEND", body, "luma"), request))


async def get(request: web.Request) -> web.Response:
    if (denied := _denied(request)) is not None:
        return denied
    job = poll(request, request.match_info["id"])
    return _json(_generation(job, request)) if job is not None else _json({"detail": "Not found"}, 404)


async def download_video_url(request: web.Request) -> web.Response:
    if (denied := _denied(request)) is not None:
        return denied
    job = request.app[JOBS].get(request.match_info["id"])
    if job is None:
        return _json({"detail": "Not found"}, 404)
    if job.state != "done":
        return _json({"detail": {"reason": "generation is not completed", "code": "invalid_state"}}, 400)
    return _json({"url": f"{_cdn(request)}/{job.id}-raw.mp4"})


async def file_upload(request: web.Request) -> web.Response:
    if (denied := _denied(request)) is not None:
        return denied
    url = orjson.loads(await request.read() or b"{}").get("url")
    if not url or "FAIL" in url:
        return _json({"detail": f"could not read the image at {url!r}"}, 400)
    upload_id = f"upload-{uuid.uuid4().hex[:8]}"
    return _json({"id": upload_id, "presigned_url": f"https://r2.example/{upload_id}?sig=x",
                  "public_url": f"{CDN}/app_data/photon/uploads/{upload_id}.jpg"})


async def cdn(request: web.Request) -> web.Response:
    return web.Response(body=VIDEO, content_type="video/mp4")


def create_app() -> web.Application:
    app = base_app()
    app.router.add_post("/luma/generations", generate)
    app.router.add_post("/luma/generations/file_upload", file_upload)
    app.router.add_post("/luma/generations/{id}/extend", extend)
    app.router.add_get("/luma/generations/{id}/download_video_url", download_video_url)
    app.router.add_get("/luma/generations/{id}", get)
    app.router.add_get("/cdn/{name}", cdn)
    return app
