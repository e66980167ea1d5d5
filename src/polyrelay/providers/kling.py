"""Kling's official API: ``{base}/v1/videos/{text2video|image2video}``, ``{base}/v1/images/generations``.

Auth is a JWT (HS256; ``iss`` = access key, ``exp`` = now+1800, ``nbf`` = now-5) signed
with the secret key; the channel key is ``accessKey|secretKey``. HS256 is hand-rolled
with ``hmac`` (a dozen lines) rather than adding PyJWT to every install for one
signature. Replies are ``{code (0 ok), message, request_id, data:{task_id, task_status,
task_status_msg, task_result, created_at, updated_at}}``; the status query path depends
on the task kind, which is the engine ``scope`` of a task.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import aiohttp
import orjson

from polyrelay import kinds
from polyrelay.providers.task_http import poll_timeout, request_json
from polyrelay.store.snapshot import ChannelRecord
from polyrelay.providers.base import (
    FAILURE,
    IN_PROGRESS,
    SUBMITTED,
    SUCCESS,
    Media,
    OneByOne,
    TaskUpdate,
    TaskView,
    coarse_progress,
    media_item,
)
from polyrelay.scrub import scrub

TYPE = "kling"
FAMILY = "kling"
# Task action -> its path under /v1 (submit: POST there; query: GET there/{task_id}).
PATHS = {"TEXT2VIDEO": "videos/text2video", "IMAGE2VIDEO": "videos/image2video", "IMAGE": "images/generations"}
_STATUSES = {"submitted": SUBMITTED, "processing": IN_PROGRESS, "succeed": SUCCESS, "failed": FAILURE}
SHOWN = {SUBMITTED: "submitted", IN_PROGRESS: "processing", SUCCESS: "succeed", FAILURE: "failed",
         "CANCEL": "failed", "NOT_START": "submitted", "MODAL": "processing"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_token(channel_key: str, now: float | None = None) -> str:
    """The bearer token Kling wants, signed from ``accessKey|secretKey``."""
    access, _, secret = channel_key.partition("|")
    if not access or not secret:
        raise ValueError("a kling channel key must be 'accessKey|secretKey'")
    issued = int(now if now is not None else time.time())
    header = _b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    claims = _b64(orjson.dumps({"iss": access, "exp": issued + 1800, "nbf": issued - 5}))
    signature = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64(signature)}"


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt_token(key)}"}


async def submit(
    session: aiohttp.ClientSession, channel: ChannelRecord, key: str, action: str, body: dict[str, Any]
) -> tuple[int, Any]:
    return await request_json(session, channel, "POST", f"{channel.base_url}/v1/{PATHS[action]}", _headers(key), body)


def _update(data: dict[str, Any], keys: tuple[str, ...]) -> TaskUpdate:
    # Kling's message may repeat the JWT the query carried; hidden here, because the poller keeps bearer
    # values in stored results (they may be signed result URLs) and this one is ours.
    data = {**data, "task_status_msg": scrub(str(data.get("task_status_msg") or ""), keys)}
    status = _STATUSES.get(str(data.get("task_status") or ""), SUBMITTED)
    progress = coarse_progress(status)
    return TaskUpdate(status, progress, data, fail_reason=str(data.get("task_status_msg") or "") if status == FAILURE else "")


class KlingTasks(OneByOne):
    family = FAMILY
    channel_type = TYPE
    kinds = frozenset({kinds.KLING})
    result_url_keys = frozenset({"url"})  # task_result.images[].url, task_result.videos[].url

    def scope(self, task: TaskView) -> str:
        return PATHS.get(task.action, PATHS["TEXT2VIDEO"])

    async def fetch_one(
        self, session: aiohttp.ClientSession, channel: ChannelRecord, key: str, upstream_id: str, **scope: Any
    ) -> TaskUpdate | None:
        path = scope.get("scope") or PATHS["TEXT2VIDEO"]
        status, body = await request_json(session, channel, "GET", f"{channel.base_url}/v1/{path}/{upstream_id}",
                                          _headers(key), timeout_s=poll_timeout(channel))
        data = body.get("data") if isinstance(body, dict) else None
        if status == 404:
            return None
        if status != 200 or not isinstance(data, dict) or body.get("code") != 0:
            raise ValueError(f"kling task query answered HTTP {status}")
        return _update(data, channel.keys)

    def render(self, task: TaskView) -> dict[str, Any]:
        """Kling's task object (the ``data`` of a query reply and the callback body), with polyrelay's id."""
        upstream = task.result or {}
        request = task.request or {}
        return {
            "task_id": task.id,
            "task_status": SHOWN.get(task.status, "submitted"),
            "task_status_msg": task.fail_reason or upstream.get("task_status_msg") or "",
            "task_info": {"external_task_id": request.get("external_task_id")} if request.get("external_task_id")
            else upstream.get("task_info") or {},
            "task_result": upstream.get("task_result") or {},
            "created_at": task.submit_time,
            "updated_at": task.finish_time or task.start_time or task.submit_time,
        }

    def media(self, task: TaskView) -> list[Media]:
        """``task_result.videos[].url`` and ``task_result.images[].url``."""
        result = (task.result or {}).get("task_result")
        if not isinstance(result, dict):
            return []
        return [item for kind, key in (("video", "videos"), ("image", "images"))
                for entry in result.get(key) or [] if isinstance(entry, dict)
                for item in media_item(kind, entry.get("url"))]
