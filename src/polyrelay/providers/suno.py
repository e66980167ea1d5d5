"""Suno relay channels (the Suno-API / new-api protocol), ``Authorization: Bearer <channel key>``.

Submit ``POST {base}/suno/submit/{music|lyrics|concat}`` answers ``{code:"success", data:"<id>"}``;
the engine polls ``POST {base}/suno/fetch {ids}`` (one request per 100 tasks), whose
TaskDto statuses map: NOT_START/SUBMITTED/QUEUED -> SUBMITTED, IN_PROGRESS, SUCCESS,
FAILURE (anything else: SUBMITTED, polled again).
"""

from __future__ import annotations

from typing import Any

import aiohttp

from polyrelay import kinds
from polyrelay.providers.task_http import poll_timeout, request_json
from polyrelay.store.snapshot import ChannelRecord
from polyrelay.providers.base import (
    FAILURE, IN_PROGRESS, SUBMITTED, SUCCESS, Media, TaskAdaptor, TaskUpdate, TaskView, media_item,
)
from polyrelay.providers.dto import task_dto

TYPE = "suno"
FAMILY = "suno"
_STATUSES = {"NOT_START": SUBMITTED, "SUBMITTED": SUBMITTED, "QUEUED": SUBMITTED, "IN_PROGRESS": IN_PROGRESS,
             "SUCCESS": SUCCESS, "FAILURE": FAILURE}


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def submit(
    session: aiohttp.ClientSession, channel: ChannelRecord, key: str, action: str, body: dict[str, Any]
) -> tuple[int, Any]:
    return await request_json(session, channel, "POST", f"{channel.base_url}/suno/submit/{action.lower()}",
                              _headers(key), body)


def _update(dto: dict[str, Any]) -> TaskUpdate:
    status = _STATUSES.get(str(dto.get("status") or "").upper(), SUBMITTED)
    progress = "100%" if status == SUCCESS else "" if status == FAILURE else str(dto.get("progress") or "0%")
    return TaskUpdate(status, progress, dto, fail_reason=str(dto.get("fail_reason") or ""))


class SunoTasks(TaskAdaptor):
    family = FAMILY
    channel_type = TYPE
    kinds = frozenset({kinds.SUNO})
    result_url_keys = frozenset({"audio_url", "video_url", "image_url", "image_large_url"})
    batch_size = 100

    async def fetch(
        self, session: aiohttp.ClientSession, channel: ChannelRecord, key: str, upstream_ids: list[str]
    ) -> dict[str, TaskUpdate]:
        status, body = await request_json(session, channel, "POST", f"{channel.base_url}/suno/fetch",
                                          _headers(key), {"ids": upstream_ids}, poll_timeout(channel))
        items = body.get("data") if isinstance(body, dict) else None
        if status != 200 or not isinstance(items, list):
            raise ValueError(f"suno fetch answered HTTP {status}")
        return {str(d["task_id"]): _update(d) for d in items if isinstance(d, dict) and d.get("task_id")}

    def render(self, task: TaskView) -> dict[str, Any]:
        """new-api's TaskDto, with polyrelay's id and times (Unix seconds)."""
        upstream = task.result or {}
        queued = task.status == SUBMITTED and str(upstream.get("status", "")).upper() == "QUEUED"
        return task_dto(task, upstream.get("data"), "QUEUED" if queued else None)

    def prompt(self, task: TaskView) -> str:
        """Description mode's ``gpt_description_prompt``, else custom mode's ``prompt`` (the lyrics)."""
        request = task.request or {}
        return str(request.get("gpt_description_prompt") or request.get("prompt") or "")

    def media(self, task: TaskView) -> list[Media]:
        """Each clip's audio with its cover image (lyrics tasks have no clips)."""
        clips = (task.result or {}).get("data")
        if not isinstance(clips, list):
            return []
        return [item for clip in clips if isinstance(clip, dict)
                for item in media_item("audio", clip.get("audio_url"), clip.get("image_url"))]
