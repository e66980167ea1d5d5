"""BFL as a task family (``/flux/v1/...``): the same upstream protocol as the DALL·E alias in ``flux``.

Submit ``POST {base}/v1/{model}`` answers ``{id, polling_url}``; the engine polls
``GET {base}/v1/get_result?id=`` one id at a time and maps BFL's statuses: Pending
(and Queued/Processing) -> IN_PROGRESS, Ready -> SUCCESS, the moderation verdicts and
Error -> FAILURE; "Task not found" is left for a later poll (it times out eventually).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

from polyrelay import kinds
from polyrelay.providers.flux import MODERATED, WAITING, bfl_headers
from polyrelay.providers.task_http import poll_timeout, request_json
from polyrelay.store.snapshot import ChannelRecord
from polyrelay.providers.base import FAILURE, IN_PROGRESS, SUCCESS, Media, OneByOne, TaskUpdate, TaskView, media_item

TYPE = "flux"
FAMILY = "flux"


async def submit(
    session: aiohttp.ClientSession, channel: ChannelRecord, key: str, model: str, body: dict[str, Any]
) -> tuple[int, Any]:
    return await request_json(session, channel, "POST", f"{channel.base_url}/v1/{quote(model, safe='.-_')}",
                              bfl_headers(key), body)


def _update(data: dict[str, Any]) -> TaskUpdate | None:
    state = data.get("status")
    progress = data.get("progress")
    percent = f"{round(float(progress) * 100)}%" if isinstance(progress, (int, float)) else ""
    if state == "Ready":
        return TaskUpdate(SUCCESS, "100%", data)
    if state in WAITING:
        return TaskUpdate(IN_PROGRESS, percent or "0%", data)
    if state in MODERATED or state == "Error":
        return TaskUpdate(FAILURE, "", data, fail_reason=str(state))
    return None  # "Task not found" or something new: ask again later


class FluxTasks(OneByOne):
    family = FAMILY
    channel_type = TYPE
    kinds = frozenset({kinds.FLUX})
    result_url_keys = frozenset({"sample"})  # get_result's result.sample

    async def fetch_one(
        self, session: aiohttp.ClientSession, channel: ChannelRecord, key: str, upstream_id: str, **scope: Any
    ) -> TaskUpdate | None:
        status, data = await request_json(session, channel, "GET",
                                          f"{channel.base_url}/v1/get_result?id={quote(upstream_id)}",
                                          bfl_headers(key), timeout_s=poll_timeout(channel))
        if status == 404:
            return None
        if status != 200 or not isinstance(data, dict):
            raise ValueError(f"get_result answered HTTP {status}")
        return _update(data)

    def render(self, task: TaskView) -> dict[str, Any]:
        """BFL's get_result object, with polyrelay's id; the status never contradicts the task's."""
        upstream = task.result or {}
        shown = upstream.get("status")
        if task.status == SUCCESS:
            shown = "Ready"
        elif task.status == FAILURE:
            shown = shown if shown in MODERATED or shown == "Error" else "Error"  # e.g. timed out
        elif shown not in WAITING:
            shown = "Pending"
        return {
            "id": task.id,
            "status": shown,
            "result": upstream.get("result") if task.status == SUCCESS else None,
            "progress": upstream.get("progress"),
            "details": {"error": task.fail_reason} if task.status == FAILURE else None,
        }

    def media(self, task: TaskView) -> list[Media]:
        result = self.render(task)["result"]
        return media_item("image", result.get("sample")) if isinstance(result, dict) else []
