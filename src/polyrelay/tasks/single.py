"""Adaptor base for upstreams whose status query answers one task at a time (BFL, Luma, Kling, Stability).

``batch_size`` is 1, so the poller itself spreads the queries over the channel's
``channel_concurrency`` slots; the family only maps one upstream answer.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import aiohttp

from polyrelay.store.snapshot import ChannelRecord
from polyrelay.tasks.base import TaskAdaptor, TaskUpdate


class OneByOne(TaskAdaptor):
    batch_size = 1

    async def fetch(
        self, session: aiohttp.ClientSession, channel: ChannelRecord, key: str, upstream_ids: list[str],
        **scope: Any,
    ) -> dict[str, TaskUpdate]:
        updates: dict[str, TaskUpdate] = {}
        for upstream_id in upstream_ids:
            update = await self.fetch_one(session, channel, key, upstream_id, **scope)
            if update is not None:
                updates[upstream_id] = update
        return updates

    @abstractmethod
    async def fetch_one(
        self, session: aiohttp.ClientSession, channel: ChannelRecord, key: str, upstream_id: str, **scope: Any
    ) -> TaskUpdate | None:
        """The task's state now; None when the upstream does not know it (yet). Raise to retry later."""
