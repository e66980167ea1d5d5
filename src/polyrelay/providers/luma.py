"""Luma relay channels (the Luma-API proxy protocol), ``Authorization: Bearer <channel key>``.

``POST {base}/luma/generations`` (and ``.../{id}/extend``) answer the generation (some
proxies: a list of them; the first is taken); the engine polls ``GET
{base}/luma/generations/{id}`` and maps ``state``: pending -> SUBMITTED, processing ->
IN_PROGRESS, completed -> SUCCESS, failed -> FAILURE. ``GET .../{id}/download_video_url``
answers ``{url}`` (a fresh signed link to the video without watermark) and ``POST
{base}/luma/generations/file_upload {url}`` uploads an image to Luma's storage.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

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

TYPE = "luma"
FAMILY = "luma"
_STATES = {"pending": SUBMITTED, "queued": SUBMITTED, "processing": IN_PROGRESS, "dreaming": IN_PROGRESS,
           "completed": SUCCESS, "failed": FAILURE}
_SHOWN = {SUBMITTED: "pending", IN_PROGRESS: "processing", SUCCESS: "completed", FAILURE: "failed",
          "CANCEL": "failed"}


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def generation(body: Any) -> dict[str, Any] | None:
    """The generation object in a Luma answer (an object, or a list whose first item it is)."""
    if isinstance(body, list):
        body = body[0] if body else None
    return body if isinstance(body, dict) and body.get("id") else None


async def submit(
    session: aiohttp.ClientSession, channel: ChannelRecord, key: str, path: str, body: dict[str, Any]
) -> tuple[int, Any]:
    return await request_json(session, channel, "POST", f"{channel.base_url}{path}", _headers(key), body)


async def fetch_download_url(
    session: aiohttp.ClientSession, channel: ChannelRecord, key: str, upstream_id: str
) -> tuple[int, Any]:
    return await request_json(session, channel, "GET",
                              f"{channel.base_url}/luma/generations/{quote(upstream_id)}/download_video_url",
                              _headers(key), timeout_s=poll_timeout(channel))


def stored_download_url(result: dict[str, Any]) -> str:
    """A finished generation's ``video.download_url`` (no watermark), else ``video.url``; "" when neither."""
    video = result.get("video")
    url = (video.get("download_url") or video.get("url")) if isinstance(video, dict) else None
    return url if isinstance(url, str) else ""


def update(item: dict[str, Any]) -> TaskUpdate:
    status = _STATES.get(str(item.get("state") or ""), SUBMITTED)
    progress = coarse_progress(status)
    reason = str(item.get("failure_reason") or "generation failed") if status == FAILURE else ""
    return TaskUpdate(status, progress, item, fail_reason=reason)


class LumaTasks(OneByOne):
    family = FAMILY
    channel_type = TYPE
    kinds = frozenset({kinds.LUMA})
    result_url_keys = frozenset({"url", "download_url"})  # video and thumbnail

    async def fetch_one(
        self, session: aiohttp.ClientSession, channel: ChannelRecord, key: str, upstream_id: str, **scope: Any
    ) -> TaskUpdate | None:
        status, body = await request_json(session, channel, "GET",
                                          f"{channel.base_url}/luma/generations/{quote(upstream_id)}",
                                          _headers(key), timeout_s=poll_timeout(channel))
        if status == 404:
            return None
        item = generation(body)
        if status != 200 or item is None:
            raise ValueError(f"luma generation query answered HTTP {status}")
        return update(item)

    def render(self, task: TaskView) -> dict[str, Any]:
        """Luma's generation object, with polyrelay's id and a state that agrees with the task's."""
        upstream = task.result or {}
        request = task.request or {}
        item = {
            "prompt": request.get("user_prompt", ""), "liked": None, "estimate_wait_seconds": None,
            "video": None, "thumbnail": None, **upstream,
            "id": task.id,
            "state": _SHOWN.get(task.status, "pending"),
            "created_at": upstream.get("created_at") or task.submit_time,
        }
        if task.status == FAILURE:
            item["failure_reason"] = task.fail_reason
        return item

    def prompt(self, task: TaskView) -> str:
        return str((task.request or {}).get("user_prompt") or "")

    def media(self, task: TaskView) -> list[Media]:
        upstream = task.result or {}
        video, thumbnail = upstream.get("video"), upstream.get("thumbnail")
        return media_item("video", video.get("url") if isinstance(video, dict) else None,
                          thumbnail.get("url") if isinstance(thumbnail, dict) else None)
