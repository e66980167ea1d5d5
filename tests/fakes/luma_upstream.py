"""A fake Luma-API proxy, ``Authorization: Bearer LUMA_KEY``.

``POST /luma/generations`` answers a one-item list holding the generation (state
pending); ``POST /luma/generations/{id}/extend`` (only of a completed generation, else
400 ``{detail}``) answers the new generation; ``GET /luma/generations/{id}`` advances
it: pending -> processing -> completed with ``video`` / ``artifact``; "FAIL" -> failed.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tests.fakes.task_clock import JOBS, Job, base_app, new_job, poll

LUMA_KEY = "luma-upstream-key"
_STATE = {"queued": "pending", "running": "processing", "done": "completed", "failed": "failed"}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _generation(job: Job) -> dict[str, Any]:
    done = job.state == "done"
    video = {"url": f"https://storage.cdn-luma.com/{job.id}.mp4", "width": 1360, "height": 752,
             "thumbnail": None, "download_url": f"https://storage.cdn-luma.com/{job.id}-dl.mp4"} if done else None
    item = {"id": job.id, "prompt": job.body.get("user_prompt", ""), "state": _STATE[job.state],
            "created_at": "2024-06-01T00:00:00.000Z", "video": video, "liked": None,
            "estimate_wait_seconds": None if done else 60,
            "thumbnail": {"url": f"https://storage.cdn-luma.com/{job.id}.jpg"} if done else None}
    if job.state == "failed":
        item["failure_reason"] = "The prompt was rejected"
    return item


def _denied(request: web.Request) -> web.Response | None:
    if request.headers.get("Authorization") != f"Bearer {LUMA_KEY}":
        return _json({"detail": "Invalid token"}, 401)
    return None


async def generate(request: web.Request) -> web.Response:
    if (denied := _denied(request)) is not None:
        return denied
    body = orjson.loads(await request.read() or b"{}")
    return _json([_generation(new_job(request.app, "GENERATE", body, "luma"))])


async def extend(request: web.Request) -> web.Response:
    if (denied := _denied(request)) is not None:
        return denied
    parent = request.app[JOBS].get(request.match_info["id"])
    if parent is None or parent.state != "done":
        return _json({"detail": {"reason": "generation is not completed", "code": "invalid_state"}}, 400)
    body = orjson.loads(await request.read() or b"{}")
    return _json(_generation(new_job(request.app, "EXTEND", body, "luma")))


async def get(request: web.Request) -> web.Response:
    if (denied := _denied(request)) is not None:
        return denied
    job = poll(request, request.match_info["id"])
    return _json(_generation(job)) if job is not None else _json({"detail": "Not found"}, 404)


def create_app() -> web.Application:
    app = base_app()
    app.router.add_post("/luma/generations", generate)
    app.router.add_post("/luma/generations/{id}/extend", extend)
    app.router.add_get("/luma/generations/{id}", get)
    return app
