"""A webhook sink that answers like the receivers it stands for (run it under ``FakeServer``, which
records every POST in ``requests``).

- ``/generic`` and ``/slack``: 200 ``ok``.
- ``/feishu``: a Feishu custom bot. With ``SECRET`` it checks ``timestamp`` (seconds, within an hour)
  and ``sign`` = base64(HMAC-SHA256 keyed by ``"{timestamp}\\n{secret}"`` over nothing); a body that is
  not ``{"msg_type": "text", "content": {"text": ...}}`` or a bad signature gets HTTP 200 with a
  non-zero ``code``, as Feishu answers.
- ``/dingtalk``: a DingTalk robot. ``timestamp`` (milliseconds) and ``sign`` in the query,
  base64(HMAC-SHA256 keyed by the secret over ``"{timestamp}\\n{secret}"``); refusals are HTTP 200
  with a non-zero ``errcode``.
Knob ``fail_with``: every POST answers this HTTP status (a receiver that is down).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from aiohttp import web

from tests.fakes.server import KNOBS

SECRET = "SEC-sink-secret-0123456789"


def _json(data: Any) -> web.Response:
    return web.json_response(data)


def _feishu_ok(body: dict[str, Any]) -> bool:
    if body.get("msg_type") != "text" or not isinstance(body.get("content", {}).get("text"), str):
        return False
    timestamp = str(body.get("timestamp", ""))
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 3600:
        return False
    expected = base64.b64encode(hmac.new(f"{timestamp}\n{SECRET}".encode(), b"", hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, str(body.get("sign", "")))


def _dingtalk_ok(request: web.Request, body: dict[str, Any]) -> bool:
    if body.get("msgtype") != "text" or not isinstance(body.get("text", {}).get("content"), str):
        return False
    timestamp = request.query.get("timestamp", "")
    if request.query.get("access_token") != "robot" or not timestamp.isdigit():
        return False
    if abs(time.time() * 1000 - int(timestamp)) > 3_600_000:
        return False
    digest = hmac.new(SECRET.encode(), f"{timestamp}\n{SECRET}".encode(), hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(digest).decode(), request.query.get("sign", ""))


async def _receive(request: web.Request) -> web.StreamResponse:
    if (status := request.app[KNOBS].get("fail_with")) is not None:
        return web.Response(status=status, text="down")
    body = await request.json()
    kind = request.match_info["kind"]
    if kind == "feishu":
        return _json({"code": 0, "msg": "success", "data": {}} if _feishu_ok(body)
                     else {"code": 19021, "msg": "sign match fail or timestamp is not within one hour", "data": {}})
    if kind == "dingtalk":
        return _json({"errcode": 0, "errmsg": "ok"} if _dingtalk_ok(request, body)
                     else {"errcode": 310000, "errmsg": "sign not match"})
    return web.Response(text="ok")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/{kind:generic|slack|feishu|dingtalk}", _receive)
    return app
