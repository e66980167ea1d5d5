"""midjourney-proxy channels: upstream ``{base}/mj/...`` with header ``mj-api-secret: <channel key>``.

Submits are sent by the midjourney API family (``api/midjourney.py``) through
:func:`call`; the task engine polls through :class:`MidjourneyTasks`, one
``POST /mj/task/list-by-condition {ids}`` per batch.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from polyrelay import kinds
from polyrelay.store.snapshot import ChannelRecord
from polyrelay.telemetry import tracing
from polyrelay.providers.base import RANK, SUBMITTED, Media, TaskAdaptor, TaskUpdate, TaskView, media_item

TYPE = "midjourney"
# Upstream task properties a caller must not see (our callbacks replace theirs; account internals).
_HIDDEN_PROPERTIES = frozenset({"notifyHook", "discordInstanceId", "discordChannelId", "nonce", "messageId",
                                "messageHash", "flags", "progressMessageId", "botType"})

# Fields of newer proxies' Task objects passed on as they are (video actions).
_PASSED_THROUGH = ("videoUrl", "videoUrls")


def url(channel: ChannelRecord, path: str, mode: str = "") -> str:
    """``path`` starts with ``/mj/``; channels with option ``mode_prefix`` get ``/mj-<mode>`` in front."""
    prefix = f"/mj-{mode}" if mode and channel.options.get("mode_prefix") else ""
    return f"{channel.base_url}{prefix}{path}"


async def call(
    session: aiohttp.ClientSession,
    channel: ChannelRecord,
    key: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    mode: str = "",
    timeout_s: float | None = None,
) -> tuple[int, Any]:
    """One upstream request; returns (HTTP status, parsed JSON or None). Raises on transport errors."""
    headers = {"mj-api-secret": key, "accept": "application/json"}
    data = None
    if body is not None:
        headers["content-type"] = "application/json"
        data = orjson.dumps(body)
    tracing.inject(headers)  # inside a submit's attempt only
    timeout = aiohttp.ClientTimeout(
        total=timeout_s or channel.timeout_s, sock_connect=channel.connect_timeout_s
    )
    async with session.request(method, url(channel, path, mode), headers=headers, data=data, timeout=timeout) as response:
        raw = await response.read()
        try:
            return response.status, orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return response.status, None


def _update(task: dict[str, Any]) -> TaskUpdate:
    status = task.get("status")
    if status not in RANK:
        status = SUBMITTED
    return TaskUpdate(
        status=status,
        progress=str(task.get("progress") or ""),
        result=task,
        fail_reason=str(task.get("failReason") or ""),
        start_time=task.get("startTime") or None,
        finish_time=task.get("finishTime") or None,
    )


class MidjourneyTasks(TaskAdaptor):
    family = "midjourney"
    channel_type = TYPE
    kinds = frozenset({kinds.MIDJOURNEY})
    batch_size = 100

    async def fetch(
        self, session: aiohttp.ClientSession, channel: ChannelRecord, key: str, upstream_ids: list[str]
    ) -> dict[str, TaskUpdate]:
        status, body = await call(
            session, channel, key, "POST", "/mj/task/list-by-condition", {"ids": upstream_ids},
            timeout_s=min(channel.timeout_s, 30.0),
        )
        if status != 200 or not isinstance(body, list):
            raise ValueError(f"list-by-condition answered HTTP {status}")
        return {str(t["id"]): _update(t) for t in body if isinstance(t, dict) and t.get("id") is not None}

    def render(self, task: TaskView, image_base: str | None = None) -> dict[str, Any]:
        """midjourney-proxy's Task object, with polyrelay's id and times.

        ``image_base`` (else the one stored at submit, ``properties.image_base``): when set,
        ``imageUrl`` points at polyrelay's ``{image_base}/mj/image/{id}`` instead of the upstream's
        CDN; "" keeps the upstream URL.
        """
        upstream, request = task.result or {}, task.request or {}
        properties = {k: v for k, v in (upstream.get("properties") or {}).items() if k not in _HIDDEN_PROPERTIES}
        if image_base is None:
            image_base = str((task.properties or {}).get("image_base") or "")
        image_url = upstream.get("imageUrl") or ""
        if image_url and image_base:
            image_url = f"{image_base}/mj/image/{task.id}"
        rendered = {
            "id": task.id,
            "action": upstream.get("action") or task.action,
            "customId": request.get("customId", ""),
            "botType": request.get("botType", ""),
            "prompt": upstream.get("prompt") or request.get("prompt", ""),
            "promptEn": upstream.get("promptEn", ""),
            "description": upstream.get("description", ""),
            "state": request.get("state", ""),
            "mode": task.mode,
            "submitTime": task.submit_time,
            "startTime": task.start_time,
            "finishTime": task.finish_time,
            "imageUrl": image_url,
            "status": task.status,
            "progress": "" if task.status == "FAILURE" else task.progress,
            "failReason": task.fail_reason,
            "buttons": upstream.get("buttons") or [],
            "maskBase64": "",
            "properties": properties,
        }
        for extra in _PASSED_THROUGH:  # video results and other plus/trueai fields, when the upstream has them
            if upstream.get(extra) is not None:
                rendered[extra] = upstream[extra]
        return rendered

    def prompt(self, task: TaskView) -> str:
        """The imagine's prompt; follow-ups (upscale, variation) submit none, the upstream names the parent's."""
        return str((task.request or {}).get("prompt") or (task.result or {}).get("prompt") or "")

    def media(self, task: TaskView) -> list[Media]:
        """The grid image (through ``/mj/image`` when forwarding is on) and a video action's clips."""
        rendered = self.render(task)
        image = rendered["imageUrl"]
        videos = [v.get("url") if isinstance(v, dict) else v for v in rendered.get("videoUrls") or []]
        videos = videos or [rendered.get("videoUrl")]  # older proxies: one URL
        return [*media_item("image", image), *(item for v in videos for item in media_item("video", v, image))]

    def buttons(self, task: TaskView) -> list[dict[str, str]]:
        return [{"customId": str(b["customId"]), "label": str(b.get("label") or ""), "emoji": str(b.get("emoji") or "")}
                for b in (task.result or {}).get("buttons") or [] if isinstance(b, dict) and b.get("customId")]
