"""Self-healing channels: probes bring auto-disabled and cooling channels back once their upstream answers.

Every ``interval_s`` each process probes (``relay.probes.check``, never charged, no usage row) the
channels that health accounting took out of rotation (``disabled_reason`` starting with
``routing.AUTO_DISABLED``; one an administrator disabled is never probed) and those cooling down
in its own snapshot. After ``successes_to_enable`` successes in a row an auto-disabled channel is
enabled again; a cooling one leaves its cooldown early. A failure resets the streak.

Several nodes: each probes on its own (a probe is one tiny call per interval), and the re-enable is
an ``UPDATE ... WHERE enabled = false AND disabled_reason LIKE 'auto-disabled%'``, so only the first
node's write changes the row and writes the "enabled" event; an administrator's disable in the
meantime wins too. The trail (``channel_events``) notes probe results when they change, and a
failure that persists once an hour, so it does not grow with every probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import aiohttp
from pydantic import BaseModel, Field
from sqlalchemy import Engine, and_, insert, or_, select, update
from sqlalchemy.orm import Session

from polyrelay.background import every, stop_task
from polyrelay.relay.probes import CheckResult, check, check_model, record_of
from polyrelay.relay.routing import AUTO_DISABLED
from polyrelay.store import changes, models
from polyrelay.store.db import bump_records_version
from polyrelay.store.snapshot import ChannelRecord, Snapshot
from polyrelay.store.writer import BatchWriter

log = logging.getLogger("polyrelay")

FAILURE_EVENT_EVERY_S = 3600.0  # a probe failure that persists is noted in the trail this often


class ProbeSettings(BaseModel):
    """Probes of channels out of rotation (see docs/operations.md, "Self-healing channels")."""

    enabled: bool = True
    interval_s: float = Field(default=60.0, gt=0, le=86_400, description="Seconds between probe rounds.")
    successes_to_enable: int = Field(default=3, ge=1, le=1000,
                                     description="Probes in a row that must succeed before a channel rejoins.")
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="Longest wait for one probe's answer.")


class Holder(Protocol):
    snapshot: Snapshot


@dataclass(slots=True)
class _Due:
    channel: ChannelRecord
    model: str
    disabled: bool  # else cooling in this process


@dataclass(slots=True)
class _Memory:
    """What this process remembers of one channel's probes."""

    streak: int = 0
    last_ok: bool | None = None
    failure_noted_at: float = 0.0


class Healer:
    def __init__(self, holder: Holder, engine: Engine, executor: Executor, http: aiohttp.ClientSession,
                 writer: BatchWriter, catch_up: Callable[[], Awaitable[None]], settings: ProbeSettings) -> None:
        self._holder, self._engine, self._executor, self._http = holder, engine, executor, http
        self._writer, self._catch_up, self._settings = writer, catch_up, settings
        self._memory: dict[int, _Memory] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def settings(self) -> ProbeSettings:
        return self._settings

    def start(self) -> None:
        if self._settings.enabled:
            self._task = every(self._settings.interval_s, self.probe_round, "channel probes", wait_first=True)

    async def stop(self) -> None:
        await stop_task(self._task)

    async def probe_round(self) -> None:
        """Probe every channel due, record what the probes said, and let recovered channels back in."""
        loop = asyncio.get_running_loop()
        cooling = {c.id: c for c in self._holder.snapshot.channels if c.cooldown_until > time.monotonic()}
        due = await loop.run_in_executor(self._executor, self._due, cooling)
        self._memory = {d.channel.id: self._memory.get(d.channel.id, _Memory()) for d in due}
        if not due:
            return
        results = await asyncio.gather(*(check(self._http, d.channel, d.model, self._settings.timeout_s) for d in due))
        events: list[dict[str, Any]] = []
        enable: list[int] = []
        for item, result in zip(due, results):
            events.extend(self._note(item, result))
            if self._memory[item.channel.id].streak >= self._settings.successes_to_enable:
                if item.disabled:
                    enable.append(item.channel.id)
                else:
                    self._end_cooldown(item.channel, events)
        enabled = await loop.run_in_executor(self._executor, self._save, due, results, events, enable)
        for channel_id in enabled:
            self._memory.pop(channel_id, None)
        if enabled:
            log.warning("channels re-enabled after %d successful probes: %s", self._settings.successes_to_enable,
                        ", ".join(str(i) for i in enabled))
            await self._catch_up()

    def _note(self, item: _Due, result: CheckResult) -> list[dict[str, Any]]:
        """Advance the channel's streak; the trail rows this probe deserves (changes, hourly failures)."""
        memory = self._memory[item.channel.id]
        now = time.monotonic()
        changed = memory.last_ok is not result.ok
        memory.last_ok = result.ok
        if result.ok:
            memory.streak += 1
            return [_event(item.channel.id, "probe_succeeded", "the upstream answers again")] if changed else []
        memory.streak = 0
        if changed or now - memory.failure_noted_at >= FAILURE_EVENT_EVERY_S:
            memory.failure_noted_at = now
            return [_event(item.channel.id, "probe_failed", result.result)]
        return []

    def _end_cooldown(self, channel: ChannelRecord, events: list[dict[str, Any]]) -> None:
        """On the loop, like routing's health accounting: this process tries the channel in order again."""
        channel.failures, channel.cooldown_until = 0, 0.0
        self._writer.record_channel(channel.id, failure_count=0, cooldown_until=None, last_error="")
        self._memory.pop(channel.id, None)
        events.append(_event(channel.id, "recovered",
                             f"cooldown ended early: {self._settings.successes_to_enable} probes in a row succeeded"))

    def _due(self, cooling: dict[int, ChannelRecord]) -> list[_Due]:
        """On the DB thread: auto-disabled channels, and the cooling ones still enabled."""
        auto = and_(models.Channel.enabled.is_(False), models.Channel.disabled_reason.startswith(AUTO_DISABLED))
        cool = and_(models.Channel.enabled.is_(True), models.Channel.id.in_(list(cooling)))
        with Session(self._engine) as session:
            rows = session.scalars(select(models.Channel).where(or_(auto, cool)).order_by(models.Channel.id)).all()
            return [_Due(cooling.get(row.id) or record_of(row), check_model(row), not row.enabled)
                    for row in rows if row.keys]

    def _save(self, due: list[_Due], results: list[CheckResult], events: list[dict[str, Any]],
              enable: list[int]) -> list[int]:
        """On the DB thread, one transaction: last probe on each channel, the trail, the re-enables that
        still apply (returned); a re-enable names the channels in the change log so every node sees it."""
        now = datetime.now(timezone.utc)
        enabled: list[int] = []
        with Session(self._engine) as session, session.begin():
            for item, result in zip(due, results):
                session.execute(update(models.Channel).where(models.Channel.id == item.channel.id).values(
                    tested_at=now, test_latency_ms=result.latency_ms, test_result=result.result[:2000]))
            for channel_id in enable:
                done = session.execute(
                    update(models.Channel)
                    .where(models.Channel.id == channel_id, models.Channel.enabled.is_(False),
                           models.Channel.disabled_reason.startswith(AUTO_DISABLED))
                    .values(enabled=True, disabled_reason="", failure_count=0, cooldown_until=None, last_error="",
                            updated_at=now))
                if done.rowcount:  # type: ignore[attr-defined]
                    enabled.append(channel_id)
                    events.append(_event(channel_id, "enabled",
                                         f"{self._settings.successes_to_enable} probes in a row succeeded"))
            if events:
                session.execute(insert(models.ChannelEvent), events)
            if enabled:
                bump_records_version(session, changes.CHANNELS)
        return enabled


def _event(channel_id: int, kind: str, reason: str) -> dict[str, Any]:
    return {"channel_id": channel_id, "created_at": datetime.now(timezone.utc), "kind": kind,
            "reason": reason[:512], "actor": "probe"}
