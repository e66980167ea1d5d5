"""A wire-accurate fake of midjourney-proxy (novicezk protocol, plus-style buttons).

Tasks advance only when polled through ``POST /mj/task/list-by-condition``:
poll 1 -> SUBMITTED "0%", polls 2..steps-1 -> IN_PROGRESS with progress, poll
``steps`` -> SUCCESS "100%" with ``imageUrl`` and buttons.

Knobs (``FakeServer.knobs``):
- ``steps`` (default 3): polls until SUCCESS.
- ``hold``: while true, polls report the current state without advancing it.
- ``ban``: every submit answers code 24 (banned prompt).
- ``list_fails``: list-by-condition answers HTTP 500.
- ``queue_full``: every submit answers code 23 (queue full); ``submit_status``: submits answer that HTTP status.
- ``submit_code``: ``(code, description)``; every submit answers it with HTTP 200 (e.g. 4, a validation error).
- ``no_buttons``: tasks succeed without buttons (the open-source proxy, which only knows ``/mj/submit/change``).
- ``image_host``: the host name put in ``imageUrl`` (default: the one the poll came to).
- ``echo``: an HTTP status; every submit answers code 4 with it, the description repeating the
  ``mj-api-secret`` it was sent (``tests.fakes.echo``).
- ``echo_fail``: tasks submitted while it is set end FAILURE, their ``failReason`` repeating the secret.
A prompt containing ``FAIL`` makes its task end FAILURE on its second poll.
``knobs["polls"]`` counts, per upstream id, how many polls saw it; ``knobs["image_gets"]`` the image downloads.
Result images are served by the fake itself at ``/attachments/<id>.png`` (PNG bytes, ``PNG``).
"""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.echo import echoed
from tests.fakes.server import KNOBS

SECRET = "mj-upstream-secret"
TASKS = web.AppKey("tasks", dict)
_ids = itertools.count(1_700_000_000_000_000)
# A valid 1x1 PNG, padded so the cache bound is easy to reason about in tests.
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4"
       b"\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7V\x89\xb9\x00\x00\x00\x00IEND\xaeB`\x82")


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
    if (echo := knobs.get("echo")) is not None:
        return _json({"code": 4, "description": echoed(request), "result": None, "properties": {}}, echo)
    if knobs.get("submit_status"):
        return _json({"error": "upstream trouble"}, knobs["submit_status"])
    if knobs.get("submit_code"):
        code, description = knobs["submit_code"]
        return _json({"code": code, "description": description, "result": None, "properties": {}})
    if knobs.get("queue_full"):
        return _json({"code": 23, "description": "队列已满，请稍后尝试", "result": None,
                      "properties": {"discordInstanceId": "1", "numberOfQueues": 10}})
    if knobs.get("ban"):
        return _json({"code": 24, "description": "可能包含敏感词", "result": None,
                      "properties": {"promptEn": body.get("prompt", ""), "bannedWord": "secretword"}})
    if kind in ("imagine", "shorten") and not str(body.get("prompt") or "").strip():
        return _json({"code": 4, "description": "prompt不能为空", "result": None, "properties": {}})
    tasks = request.app[TASKS]
    if kind == "video" and body.get("motion") not in (None, "low", "high"):
        return _json({"code": 4, "description": "motion参数错误", "result": None, "properties": {}})
    if kind in ("action", "modal", "change") or (kind == "video" and body.get("taskId")):
        parent = tasks.get(str(body.get("taskId")))
        if parent is None:
            return _json({"code": 3, "description": "关联任务不存在或已失效", "result": None, "properties": {}})
        if kind == "change":  # the open-source protocol: {taskId, action UPSCALE|VARIATION|REROLL, index}
            if body.get("action") not in ("UPSCALE", "VARIATION", "REROLL"):
                return _json({"code": 4, "description": "action参数错误", "result": None, "properties": {}})
            if parent["status"] != "SUCCESS":
                return _json({"code": 4, "description": "关联任务状态错误", "result": None, "properties": {}})
            action = body["action"]
        elif kind == "action":
            custom_id = str(body.get("customId", ""))
            action = next((a for fragment, a in (("upsample", "UPSCALE"), ("variation", "VARIATION"),
                                                  ("reroll", "REROLL"), ("video", "VIDEO")) if fragment in custom_id),
                          "ACTION")
        else:
            action = kind.upper()
        prompt = body.get("prompt") or parent["prompt"] if kind in ("modal", "video") else parent["prompt"]
        task = _new_task(request.app, action, prompt)
    else:
        action = {"swap": "SWAP_FACE"}.get(kind, kind.upper())
        task = _new_task(request.app, action, str(body.get("prompt") or ""))
    task["_echo"] = bool(knobs.get("echo_fail"))
    task["_fail"] = "FAIL" in task["prompt"] or task["_echo"]
    return _json({"code": 1, "description": "提交成功", "result": task["id"], "properties": {"discordInstanceId": "1"}})


def _advance(request: web.Request, task: dict[str, Any], base: str) -> None:
    knobs = request.app[KNOBS]
    polls = knobs.setdefault("polls", {})
    polls[task["id"]] = polls.get(task["id"], 0) + 1
    if knobs.get("hold") or task["status"] in ("SUCCESS", "FAILURE", "CANCEL"):
        return
    steps = knobs.get("steps", 3)
    count = task["_count"] = task.get("_count", 0) + 1
    if count == 1:
        task.update(status="SUBMITTED", progress="0%")
    elif task["_fail"]:
        reason = echoed(request) if task["_echo"] else "[Invalid parameter] the upstream refused"
        task.update(status="FAILURE", progress="", failReason=reason, finishTime=_now())
    elif count < steps:
        task.update(status="IN_PROGRESS", progress=f"{min(99, 100 * count // steps)}%", startTime=task["startTime"] or _now())
    else:
        hash_ = secrets.token_hex(16)
        if knobs.get("image_host"):
            base = base.replace("127.0.0.1", knobs["image_host"])
        with_buttons = task["action"] in ("IMAGINE", "VARIATION", "REROLL") and not knobs.get("no_buttons")
        task.update(status="SUCCESS", progress="100%", finishTime=_now(), startTime=task["startTime"] or _now(),
                    imageUrl=f"{base}/attachments/{task['id']}.png",
                    buttons=_buttons(hash_) if with_buttons else [],
                    _seed=str(secrets.randbelow(10**9)))
        if task["action"] == "VIDEO":
            task["videoUrls"] = [{"url": f"{base}/attachments/{task['id']}-{i}.mp4"} for i in range(4)]


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
    base = f"{request.scheme}://{request.host}"
    for task in found:
        _advance(request, task, base)
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


async def attachment(request: web.Request) -> web.Response:
    """The "CDN": every result image is the same small PNG, tagged with its task id at the end."""
    gets = request.app[KNOBS].setdefault("image_gets", [])
    gets.append(request.match_info["name"])
    return web.Response(body=PNG + request.match_info["name"].encode(), content_type="image/png")


def create_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[TASKS] = {}
    app.router.add_post("/mj/submit/{kind}", submit)
    app.router.add_post("/mj/insight-face/swap", submit)
    app.router.add_post("/mj/task/list-by-condition", list_by_condition)
    app.router.add_get("/mj/task/{id}/fetch", fetch)
    app.router.add_post("/mj/task/{id}/cancel", cancel)
    app.router.add_get("/mj/task/{id}/image-seed", image_seed)
    app.router.add_get("/attachments/{name}", attachment)
    return app
