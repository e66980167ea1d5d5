"""Stability image-to-video on ``stability`` channels: a task whose result is bytes kept upstream.

Submit ``POST {base}/v2beta/image-to-video`` (the caller's multipart, byte for byte) answers
``{id}``. The engine polls ``GET {base}/v2beta/image-to-video/result/{id}`` with the
submitting key (results belong to it): 202 -> IN_PROGRESS, 200 -> SUCCESS (only the
headers are read; the video stays upstream for 24 h and is streamed to the caller on
request), other 4xx -> FAILURE with Stability's error kept; 401/403/429/5xx are retried.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from polyrelay import kinds
from polyrelay.providers.task_http import poll_timeout, request_json
from polyrelay.store.snapshot import ChannelRecord
from polyrelay.providers.base import FAILURE, IN_PROGRESS, SUCCESS, Media, OneByOne, TaskUpdate, TaskView, media_item

TYPE = "stability"
FAMILY = "stability"
MODEL = "stable-video-diffusion"
_RETRIED = frozenset({401, 403, 408, 429})
KEPT_HEADERS = ("finish-reason", "seed")


def headers(key: str, accept: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "accept": accept}


def result_url(channel: ChannelRecord, upstream_id: str) -> str:
    return f"{channel.base_url}/v2beta/image-to-video/result/{quote(upstream_id)}"


async def submit(
    session: aiohttp.ClientSession, channel: ChannelRecord, key: str, body: bytes, content_type: str
) -> tuple[int, Any]:
    return await request_json(session, channel, "POST", f"{channel.base_url}/v2beta/image-to-video",
                              {**headers(key, "application/json"), "content-type": content_type}, body)


class StabilityVideoTasks(OneByOne):
    family = FAMILY
    channel_type = TYPE
    kinds = frozenset({kinds.STABILITY_VIDEO})

    async def fetch_one(
        self, session: aiohttp.ClientSession, channel: ChannelRecord, key: str, upstream_id: str, **scope: Any
    ) -> TaskUpdate | None:
        timeout = aiohttp.ClientTimeout(total=poll_timeout(channel), sock_connect=channel.connect_timeout_s)
        async with session.get(result_url(channel, upstream_id), headers=headers(key, "video/*"),
                               timeout=timeout) as response:
            if response.status == 202:
                return TaskUpdate(IN_PROGRESS, "50%", {"status": "in-progress"})
            if response.status == 200:  # done: leave the bytes upstream (closing drops the connection)
                kept = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
                return TaskUpdate(SUCCESS, "100%", {"status": "complete", "headers": kept})
            if response.status in _RETRIED or response.status >= 500:
                raise ValueError(f"image-to-video result answered HTTP {response.status}")
            raw = await response.read()
        try:
            error = orjson.loads(raw)
        except orjson.JSONDecodeError:
            error = {"name": "upstream_error", "errors": [raw[:500].decode("utf-8", "replace")]}
        reason = "; ".join(map(str, error.get("errors") or [])) if isinstance(error, dict) else ""
        return TaskUpdate(FAILURE, "", {"status": "failed", "error_status": response.status, "error": error},
                          fail_reason=reason or f"HTTP {response.status}")

    def render(self, task: TaskView) -> dict[str, Any]:
        """What polyrelay says about the job (Stability has no status object beyond 202 ``{id, status}``)."""
        shown = {SUCCESS: "complete", FAILURE: "failed", "CANCEL": "failed"}.get(task.status, "in-progress")
        body: dict[str, Any] = {"id": task.id, "status": shown}
        if task.status == FAILURE:
            body["errors"] = [task.fail_reason]
        return body

    def media(self, task: TaskView) -> list[Media]:
        """The video stays upstream, readable only with the submitting key: the console streams it through
        ``GET /api/tasks/{id}/video`` (same origin, session cookie), so the URL is relative."""
        return media_item("video", f"/api/tasks/{task.id}/video") if task.status == SUCCESS else []
