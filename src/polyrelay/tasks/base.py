"""What the engine needs from a task family: batch status queries and the caller's Task JSON.

The engine's status vocabulary is midjourney-proxy's (the richest); other families map
theirs onto it (e.g. Suno QUEUED -> SUBMITTED, Kling succeed -> SUCCESS).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, TypedDict

import aiohttp

from polyrelay.store.snapshot import ChannelRecord

NOT_START = "NOT_START"
SUBMITTED = "SUBMITTED"
MODAL = "MODAL"
IN_PROGRESS = "IN_PROGRESS"
FAILURE = "FAILURE"
SUCCESS = "SUCCESS"
CANCEL = "CANCEL"
TERMINAL = frozenset({FAILURE, SUCCESS, CANCEL})
# Callbacks and stored state never move backwards along this order.
RANK = {NOT_START: 0, SUBMITTED: 1, MODAL: 2, IN_PROGRESS: 3, FAILURE: 4, SUCCESS: 4, CANCEL: 4}


def coarse_progress(status: str) -> str:
    """A progress string for upstreams that report only a state, never a percentage."""
    return {SUCCESS: "100%", FAILURE: "", IN_PROGRESS: "50%"}.get(status, "0%")


class Media(TypedDict):
    """One result a gallery shows: ``kind`` is "image", "video" or "audio"; URLs a browser can load."""

    kind: str
    url: str
    thumbnail: str | None


def media_item(kind: str, url: Any, thumbnail: Any = None) -> list[Media]:
    """``[item]`` when ``url`` is a non-empty string, else ``[]``: upstream results are loosely typed."""
    if not isinstance(url, str) or not url:
        return []
    return [Media(kind=kind, url=url, thumbnail=thumbnail if isinstance(thumbnail, str) and thumbnail else None)]


@dataclass(slots=True)
class TaskView:
    """A task row as plain data, safe to pass between the DB thread and the event loop."""

    id: str
    token_id: int | None
    token_name: str
    family: str
    action: str
    model: str
    mode: str
    parent_id: str | None
    channel_id: int
    upstream_id: str
    status: str
    progress: str
    request: dict[str, Any]
    result: dict[str, Any]
    fail_reason: str
    cost_micros: int
    settlement: str
    submit_time: int
    start_time: int | None
    finish_time: int | None
    next_poll_at: int | None
    poll_count: int
    notify_hook: str
    properties: dict[str, Any] = field(default_factory=dict)
    notify_due_at: int | None = None  # set while a callback is undelivered (tasks/callbacks.py)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


@dataclass(slots=True)
class TaskUpdate:
    """What the upstream says about one task now."""

    status: str
    progress: str = ""
    result: dict[str, Any] | None = None  # the upstream's task object, kept for rendering
    fail_reason: str = ""
    start_time: int | None = None
    finish_time: int | None = None


class TaskAdaptor(ABC):
    """One task family's upstream protocol, as far as the engine needs it."""

    family: str
    batch_size: int = 100  # most upstream ids per status query
    # JSON keys of a finished task's ``result`` whose URLs ``files.rehost`` may replace by polyrelay's own.
    result_url_keys: frozenset[str] = frozenset()

    @abstractmethod
    async def fetch(
        self, session: aiohttp.ClientSession, channel: ChannelRecord, key: str, upstream_ids: list[str]
    ) -> dict[str, TaskUpdate]:
        """Current state of ``upstream_ids``; ids the upstream does not know are left out.

        Raise (aiohttp.ClientError, asyncio.TimeoutError, ValueError) when the upstream
        cannot answer: the engine retries later.
        """

    @abstractmethod
    def render(self, task: TaskView) -> dict[str, Any]:
        """The caller-facing task object (fetch replies and notifyHook bodies)."""

    def scope(self, task: TaskView) -> str:
        """Tasks polled in one ``fetch`` share this value; an upstream whose status query differs by task
        kind (Kling: ``/v1/videos/text2video/{id}`` vs ``/v1/images/generations/{id}``) returns the kind,
        and its ``fetch`` then receives it as the keyword argument ``scope``. Default: one scope."""
        return ""

    def prompt(self, task: TaskView) -> str:
        """The prompt the caller submitted, "" if none (the console shows it next to the results)."""
        prompt = (task.request or {}).get("prompt")
        return prompt if isinstance(prompt, str) else ""

    def media(self, task: TaskView) -> list[Media]:
        """The task's results for the console's gallery; families with viewable results override this."""
        return []

    def buttons(self, task: TaskView) -> list[dict[str, str]]:
        """Follow-up actions offered on the result (``customId``, ``label``, ``emoji``); only Midjourney has them."""
        return []
