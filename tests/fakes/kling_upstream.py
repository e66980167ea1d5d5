"""A fake of Kling's official API with its JWT check (HS256, ``iss`` = access key, ``exp``/``nbf``).

``POST /v1/videos/{text2video|image2video}``, ``POST /v1/images/generations`` answer
``{code:0, message:"SUCCEED", request_id, data:{task_id, task_status:"submitted", ...}}``;
``GET`` the same path ``/{task_id}`` advances the task (a task is found only under the
path that created it): submitted -> processing -> succeed with ``task_result``; "FAIL"
in the prompt -> failed. A bad token answers HTTP 401 ``{code:1000}``.

Knobs: those of ``task_clock`` (``echo_fail``: ``task_status_msg`` repeats the JWT of the query and its
access key) and ``echo``: an HTTP status: every request is refused with it, ``{code, message}`` repeating
the JWT it was sent and the access key inside it (``tests.fakes.echo``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.echo import credential, echoed
from tests.fakes.server import KNOBS
from tests.fakes.task_clock import JOBS, Job, base_app, new_job, poll

ACCESS_KEY, SECRET_KEY = "kling-access", "kling-secret"
CHANNEL_KEY = f"{ACCESS_KEY}|{SECRET_KEY}"
_STATUS = {"queued": "submitted", "running": "processing", "done": "succeed", "failed": "failed"}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def valid_token(authorization: str) -> bool:
    scheme, _, token = authorization.partition(" ")
    try:
        header, claims, signature = token.split(".")
        expected = hmac.new(SECRET_KEY.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
        payload = orjson.loads(_unb64(claims))
        now = time.time()
        return (scheme == "Bearer" and orjson.loads(_unb64(header)).get("alg") == "HS256"
                and hmac.compare_digest(_unb64(signature), expected) and payload["iss"] == ACCESS_KEY
                and payload["nbf"] <= now < payload["exp"] <= now + 1800 + 5)
    except (ValueError, KeyError, orjson.JSONDecodeError):
        return False


def _issuer(request: web.Request) -> str:
    """The access key a request's JWT names (Kling's errors mention it), "" if it names none."""
    try:
        return str(orjson.loads(_unb64(credential(request).split(".")[1]))["iss"])
    except (IndexError, ValueError, KeyError, orjson.JSONDecodeError):
        return ""


def _echoed(request: web.Request) -> str:
    return echoed(request, f"access key {_issuer(request)}")


def _data(job: Job, request: web.Request) -> dict[str, Any]:
    failure = _echoed(request) if job.extra.get("echo") else "prompt rejected"
    data: dict[str, Any] = {"task_id": job.id, "task_status": _STATUS[job.state] if job.polls else "submitted",
                            "task_status_msg": failure if job.state == "failed" else "",
                            "created_at": 1722769557708, "updated_at": 1722769557708}
    if job.state == "done":
        if job.kind == "images/generations":
            data["task_result"] = {"images": [{"index": i, "url": f"https://cdn.klingai.com/{job.id}-{i}.png"}
                                              for i in range(int(job.body.get("n") or 1))]}
        else:
            data["task_result"] = {"videos": [{"id": f"{job.id}-v", "url": f"https://cdn.klingai.com/{job.id}.mp4",
                                               "duration": str(job.body.get("duration") or "5")}]}
    return data


async def create(request: web.Request) -> web.Response:
    if (echo := request.app[KNOBS].get("echo")) is not None:
        return _json({"code": 1002, "message": _echoed(request), "request_id": "r"}, echo)
    if not valid_token(request.headers.get("Authorization", "")):
        return _json({"code": 1000, "message": "Authentication failed", "request_id": "r"}, 401)
    kind = request.path.removeprefix("/v1/")
    body = orjson.loads(await request.read() or b"{}")
    if kind == "videos/text2video" and not body.get("prompt"):
        return _json({"code": 1201, "message": "prompt is required", "request_id": "r"}, 400)
    return _json({"code": 0, "message": "SUCCEED", "request_id": "r",
                  "data": _data(new_job(request.app, kind, body, "kling"), request)})


async def query(request: web.Request) -> web.Response:
    if not valid_token(request.headers.get("Authorization", "")):
        return _json({"code": 1000, "message": "Authentication failed", "request_id": "r"}, 401)
    kind = request.path.removeprefix("/v1/").rsplit("/", 1)[0]
    job = request.app[JOBS].get(request.match_info["id"])
    if job is None or job.kind != kind:
        return _json({"code": 1203, "message": "task not found", "request_id": "r"}, 404)
    poll(request, job.id)
    return _json({"code": 0, "message": "SUCCEED", "request_id": "r", "data": _data(job, request)})


def create_app() -> web.Application:
    app = base_app()
    for path in ("videos/text2video", "videos/image2video", "images/generations"):
        app.router.add_post(f"/v1/{path}", create)
        app.router.add_get(f"/v1/{path}/{{id}}", query)
    return app
