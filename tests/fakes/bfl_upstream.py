"""A wire-accurate fake of Black Forest Labs' API (api.bfl.ai).

``POST /v1/{model}`` (``x-key`` header, JSON) answers ``{id, polling_url}``;
``GET /v1/get_result?id=`` answers ``{id, status, result}`` with status Pending on
the first poll and Ready (``result.sample``, ``result.prompt``) on the second. A
prompt containing "moderate-me" ends Content Moderated, "fail-me" ends Error.
``GET /samples/{id}.png`` serves the result image.

Knobs: ``failing_tasks``: how many of the next accepted tasks end Error (whatever the prompt);
``hold``: while true, every task stays Pending; ``echo``: an HTTP status: every submit is refused with
it, ``{detail}`` repeating the key it was sent (``tests.fakes.echo``); ``echo_fail``: tasks accepted
while it is set end Error with ``details`` repeating the key their poll was sent.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.echo import echoed
from tests.fakes.server import KNOBS

KEYS = web.AppKey("keys", set)
TASKS = web.AppKey("tasks", dict)
SAMPLE_PNG = b"\x89PNG\r\n\x1a\n" + b"flux sample" * 10
MODELS = ("flux-pro-1.1", "flux-pro", "flux-dev", "flux-pro-1.1-ultra", "flux-kontext-pro")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _denied(request: web.Request) -> web.Response | None:
    if request.headers.get("x-key") not in request.app[KEYS]:
        return _json({"detail": "Not authenticated - Invalid Authentication"}, 403)
    return None


async def submit(request: web.Request) -> web.Response:
    if (echo := request.app[KNOBS].get("echo")) is not None:
        return _json({"detail": echoed(request)}, echo)
    if (denied := _denied(request)) is not None:
        return denied
    model = request.match_info["model"]
    if model not in MODELS:
        return _json({"detail": "Not Found"}, 404)
    body = orjson.loads(await request.read())
    if not isinstance(body.get("prompt"), str):
        return _json({"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error"}]}, 422)
    task_id = str(uuid.uuid4())
    knobs = request.app[KNOBS]
    failing = knobs.get("failing_tasks", 0)
    knobs["failing_tasks"] = max(failing - 1, 0)
    echo_fail = bool(knobs.get("echo_fail"))
    request.app[TASKS][task_id] = {"body": body, "polls": 0, "fails": failing > 0 or echo_fail, "echo": echo_fail}
    base = f"{request.scheme}://{request.host}"
    return _json({"id": task_id, "polling_url": f"{base}/v1/get_result?id={task_id}"})


async def get_result(request: web.Request) -> web.Response:
    if (denied := _denied(request)) is not None:
        return denied
    task_id = request.query.get("id", "")
    task = request.app[TASKS].get(task_id)
    if task is None:
        return _json({"id": task_id, "status": "Task not found", "result": None})
    task["polls"] += 1
    prompt = task["body"]["prompt"]
    if task["polls"] < 2 or request.app[KNOBS].get("hold"):
        return _json({"id": task_id, "status": "Pending", "result": None, "progress": 0.5})
    if "moderate-me" in prompt:
        return _json({"id": task_id, "status": "Content Moderated", "result": None})
    if "fail-me" in prompt or task["fails"]:
        details = {"details": {"error": echoed(request)}} if task["echo"] else {}
        return _json({"id": task_id, "status": "Error", "result": None, **details})
    base = f"{request.scheme}://{request.host}"
    result = {"sample": f"{base}/samples/{task_id}.png", "prompt": prompt, "seed": 42,
              "start_time": 1.0, "end_time": 2.0, "duration": 1.0}
    return _json({"id": task_id, "status": "Ready", "result": result})


async def sample(request: web.Request) -> web.Response:
    return web.Response(body=SAMPLE_PNG, content_type="image/png")


def create_app(keys: set[str]) -> web.Application:
    app = web.Application()
    app[KEYS] = keys
    app[KNOBS] = {}
    app[TASKS] = {}
    app.router.add_post("/v1/{model}", submit)
    app.router.add_get("/v1/get_result", get_result)
    app.router.add_get("/samples/{name}", sample)
    return app
