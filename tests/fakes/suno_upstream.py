"""A fake Suno relay upstream (Suno-API / new-api protocol), ``Authorization: Bearer SUNO_KEY``.

``POST /suno/submit/{music|lyrics|concat}`` -> ``{code:"success", message:"", data:"<id>"}``
(blank lyrics prompt -> ``{code:"prompt_empty"}`` HTTP 400); ``POST /suno/fetch {ids}`` advances
and answers TaskDtos: SUBMITTED, then QUEUED/IN_PROGRESS, then SUCCESS with two songs (music)
or a lyrics object; "FAIL" in a prompt ends FAILURE.

Knobs: those of ``task_clock`` (``echo_fail``: the TaskDto's ``fail_reason`` and the clips'
``error_message`` repeat the key); ``echo``: an HTTP status: every submit is refused with it,
``{code, message}`` repeating the key it was sent (``tests.fakes.echo``).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tests.fakes.echo import echoed
from tests.fakes.server import KNOBS
from tests.fakes.task_clock import JOBS, Job, base_app, new_job, poll, reason

SUNO_KEY = "suno-upstream-key"
_STATUS = {"queued": "QUEUED", "running": "IN_PROGRESS", "done": "SUCCESS", "failed": "FAILURE"}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _song(job: Job, n: int, failure: str) -> dict[str, Any]:
    status = {"queued": "queued", "running": "streaming", "done": "complete", "failed": "error"}[job.state]
    return {"id": f"{job.id}-clip{n}", "status": status, "title": job.body.get("title", ""),
            "audio_url": f"https://cdn1.suno.ai/{job.id}-{n}.mp3" if job.state != "queued" else "",
            "video_url": f"https://cdn1.suno.ai/{job.id}-{n}.mp4" if job.state == "done" else "",
            "image_url": "https://cdn2.suno.ai/image.jpeg", "image_large_url": "https://cdn2.suno.ai/large.jpeg",
            "is_video_pending": job.state != "done", "major_model_version": "v3", "model_name": "chirp-v3",
            "created_at": "2024-05-01T00:00:00Z",
            "metadata": {"tags": job.body.get("tags", ""), "prompt": job.body.get("prompt", ""), "type": "gen",
                         "duration": 120.5 if job.state == "done" else None,
                         "error_message": failure if job.state == "failed" else None}}


def _dto(job: Job, request: web.Request) -> dict[str, Any]:
    failure = reason(request, job, "audio generation failed")
    if job.kind == "LYRICS":
        data: Any = {"id": job.id, "status": "complete" if job.state == "done" else "running",
                     "title": "Song", "text": "[Verse]\nla la la" if job.state == "done" else ""}
    else:
        data = [_song(job, 1, failure), _song(job, 2, failure)]
    return {"task_id": job.id, "action": job.kind, "status": _STATUS[job.state] if job.polls else "SUBMITTED",
            "fail_reason": failure if job.state == "failed" else "",
            "submit_time": 1714521600, "start_time": 1714521601, "finish_time": 0,
            "progress": {"queued": "0%", "running": "50%", "done": "100%", "failed": ""}[job.state], "data": data}


def _authorized(request: web.Request) -> bool:
    return request.headers.get("Authorization") == f"Bearer {SUNO_KEY}"


async def submit(request: web.Request) -> web.Response:
    if (echo := request.app[KNOBS].get("echo")) is not None:
        return _json({"code": "invalid_key", "message": echoed(request), "data": None}, echo)
    if not _authorized(request):
        return _json({"code": "unauthorized", "message": "bad key", "data": None}, 401)
    action = request.match_info["action"].upper()
    body = orjson.loads(await request.read() or b"{}")
    if action == "LYRICS" and not str(body.get("prompt") or "").strip():
        return _json({"code": "prompt_empty", "message": "prompt is empty", "data": None}, 400)
    return _json({"code": "success", "message": "", "data": new_job(request.app, action, body, "suno").id})


async def fetch(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _json({"code": "unauthorized", "message": "bad key", "data": None}, 401)
    ids = orjson.loads(await request.read() or b"{}").get("ids") or []
    jobs = [job for i in ids if (job := poll(request, str(i))) is not None]
    return _json({"code": "success", "message": "", "data": [_dto(j, request) for j in jobs]})


def create_app() -> web.Application:
    app = base_app()
    app.router.add_post("/suno/submit/{action}", submit)
    app.router.add_post("/suno/fetch", fetch)
    return app


__all__ = ["JOBS", "SUNO_KEY", "create_app"]
