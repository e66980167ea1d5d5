"""A wire-accurate fake of midjourney-proxy (novicezk protocol, plus-style buttons).

Tasks advance only when polled through ``POST /mj/task/list-by-condition``:
poll 1 -> SUBMITTED "0%", polls 2..steps-1 -> IN_PROGRESS with progress, poll
``steps`` -> SUCCESS "100%" with ``imageUrl`` and buttons.

Knobs (``FakeServer.knobs``):
- ``steps`` (default 3): polls until SUCCESS.
- ``hold``: while true, polls report the current state without advancing it.
- ``ban``: every submit answers code 24 (banned prompt).
- ``list_fails``: list-by-condition answers HTTP 500.
A prompt containing ``FAIL`` makes its task end FAILURE on its second poll.
``knobs["polls"]`` counts, per upstream id, how many polls saw it.
"""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import KNOBS

SECRET = "mj-upstream-secret"
TASKS = web.AppKey("tasks", dict)
_ids = itertools.count(1_700_000_000_000_000)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _now() -> int:
    return int(time.time() * 1000)


def _buttons(hash_: str) -> list[dict[str, Any]]:
    buttons = [{"customId": f"MJ::JOB::upsample::{i}::{hash_}", "emoji": "", "label": f"U{i}", "type": 2, "style": 2}
               for i in range(1, 5)]
    buttons.append({"customId": f"MJ::JOB::reroll::0::{hash_}::SOLO", "emoji": "🔄", "label": "", "type": 2,
                    "style": 2})
    buttons += [{"customId": f"MJ::JOB::variation::{i}::{hash_}", "emoji": "", "label": f"V{i}", "type": 2,
                 "style": 2} for i in range(1, 5)]
    return buttons


def _authorized(request: web.Request) -> bool:
    return request.headers.get("mj-api-secret") == SECRET


def _new_task(app: web.Application, action: str, prompt: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    task_id = str(next(_ids))
    task = {
        "id": task_id, "action": action, "prompt": prompt, "promptEn": prompt, "description": f"/{action.lower()}",
        "state": "", "submitTime": _now(), "startTime": None, "finishTime": None, "imageUrl": None,
        "status": "NOT_START", "progress": "0%", "failReason": None, "buttons": [],
        "properties": {"notifyHook": "http://should-not-leak", "discordInstanceId": "1", "finalPrompt": prompt},
        **(extra or {}),
    }
    app[TASKS][task_id] = task
    return task


async def submit(request: web.Request) -> web.Response:
    if not _authorized(request):
        return web.Response(status=401)
    body = orjson.loads(await request.read() or b"{}")
    knobs = request.app[KNOBS]
    kind = request.match_info.get("kind", "swap")
    if knobs.get("ban"):
        return _json({"code": 24, "description": "可能包含敏感词", "result": None,
                      "properties": {"promptEn": body.get("prompt", ""), "bannedWord": "secretword"}})
    if kind in ("imagine", "shorten") and not str(body.get("prompt") or "").strip():
        return _json({"code": 4, "description": "prompt不能为空", "result": None, "properties": {}})
    tasks = request.app[TASKS]
    if kind in ("action", "modal"):
        parent = tasks.get(str(body.get("taskId")))
        if parent is None:
            return _json({"code": 3, "description": "关联任务不存在或已失效", "result": None, "properties": {}})
        action = "UPSCALE" if "upsample" in str(body.get("customId", "")) else kind.upper()
        task = _new_task(request.app, action, parent["prompt"] if kind == "action" else body.get("prompt") or parent["prompt"])
    else:
        action = {"swap": "SWAP_FACE"}.get(kind, kind.upper())
        task = _new_task(request.app, action, str(body.get("prompt") or ""))
    task["_fail"] = "FAIL" in task["prompt"]
    return _json({"code": 1, "description": "提交成功", "result": task["id"], "properties": {"discordInstanceId": "1"}})


def _advance(app: web.Application, task: dict[str, Any]) -> None:
    knobs = app[KNOBS]
    polls = knobs.setdefault("polls", {})
    polls[task["id"]] = polls.get(task["id"], 0) + 1
    if knobs.get("hold") or task["status"] in ("SUCCESS", "FAILURE", "CANCEL"):
        return
    steps = knobs.get("steps", 3)
    count = task["_count"] = task.get("_count", 0) + 1
    if count == 1:
        task.update(status="SUBMITTED", progress="0%")
    elif task["_fail"]:
        task.update(status="FAILURE", progress="", failReason="[Invalid parameter] the upstream refused", finishTime=_now())
    elif count < steps:
        task.update(status="IN_PROGRESS", progress=f"{min(99, 100 * count // steps)}%", startTime=task["startTime"] or _now())
    else:
        hash_ = secrets.token_hex(16)
        task.update(status="SUCCESS", progress="100%", finishTime=_now(), startTime=task["startTime"] or _now(),
                    imageUrl=f"https://cdn.example.com/attachments/{task['id']}.png",
                    buttons=_buttons(hash_) if task["action"] in ("IMAGINE", "VARIATION", "REROLL") else [],
                    _seed=str(secrets.randbelow(10**9)))


def _public(task: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in task.items() if not k.startswith("_")}


async def list_by_condition(request: web.Request) -> web.Response:
    if not _authorized(request):
        return web.Response(status=401)
    if request.app[KNOBS].get("list_fails"):
        return _json({"error": "boom"}, 500)
    body = orjson.loads(await request.read() or b"{}")
    tasks = request.app[TASKS]
    found = [tasks[str(i)] for i in body.get("ids") or [] if str(i) in tasks]
    for task in found:
        _advance(request.app, task)
    return _json([_public(t) for t in found])


async def fetch(request: web.Request) -> web.Response:
    task = request.app[TASKS].get(request.match_info["id"])
    return _json(_public(task)) if task else web.Response(status=404)


async def cancel(request: web.Request) -> web.Response:
    task = request.app[TASKS].get(request.match_info["id"])
    if task is None:
        return _json({"code": 3, "description": "任务不存在"}, 404)
    task.update(status="CANCEL", progress="", finishTime=_now())
    return _json({"code": 1, "description": "成功"})


async def image_seed(request: web.Request) -> web.Response:
    task = request.app[TASKS].get(request.match_info["id"])
    if task is None:
        return _json({"code": 3, "description": "任务不存在"}, 404)
    if "_seed" not in task:
        return _json({"code": 4, "description": "任务未完成", "result": None})
    return _json({"code": 1, "description": "成功", "result": task["_seed"]})


def create_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[TASKS] = {}
    app.router.add_post("/mj/submit/{kind}", submit)
    app.router.add_post("/mj/insight-face/swap", submit)
    app.router.add_post("/mj/task/list-by-condition", list_by_condition)
    app.router.add_get("/mj/task/{id}/fetch", fetch)
    app.router.add_post("/mj/task/{id}/cancel", cancel)
    app.router.add_get("/mj/task/{id}/image-seed", image_seed)
    return app
