"""The watch loop: every ``interval_s``, evaluate the conditions and hand what changed to the outbox.

Nothing here runs on the hot path: balances come from the in-memory snapshot, the writer's state from
its properties, the rest from three small queries on the report threads. Conditions that last (an
error rate, a low balance, a backlog, a writer that cannot commit) alert when they start, again every
``repeat_s`` while they last, and once more when they end; events (a channel leaving or rejoining
rotation, a write kept aside) alert once. A check that fails (the database down) is logged and
leaves its conditions as they were, so it never sends a false all-clear.

Each node runs its own loop. Conditions of the whole cluster (channels, error rate, backlog, balances)
are checked by one node at a time, the holder of the ``alerts`` job lease (store/leases.py), so they
are told once however many nodes there are; each node tells its own writer's troubles. Every alert
told is recorded (``alert_log``); a low balance also goes to the user's verified address.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from sqlalchemy import Engine

from polyrelay.alerts import checks, log as alert_log, messages
from polyrelay.alerts.messages import Alert
from polyrelay.alerts.outbox import Outbox
from polyrelay.alerts.settings import AlertSettings
from polyrelay.background import every, stop_task
from polyrelay.store import leases
from polyrelay.store.snapshot import Snapshot
from polyrelay.store.writer import BatchWriter

log = logging.getLogger("polyrelay.alerts")

T = TypeVar("T")
_States = dict[str, Alert]  # condition key -> its alert, for the conditions that hold now
LEASE = "alerts"  # the job lease of the cluster-wide checks
_CLUSTER_CHECKS = ("error_rate", "balance", "channel_balance", "tasks")


class Tracker:
    """Which conditions are open, and when each was last told."""

    def __init__(self, repeat_s: float) -> None:
        self._repeat_s = repeat_s
        self._open: dict[str, dict[str, tuple[Alert, float]]] = {}  # check -> key -> (latest alert, told at)

    def update(self, check: str, states: _States | None, at: datetime, now: float) -> list[Alert]:
        """What to tell about one check's conditions, given those that hold at ``now`` (monotonic s)."""
        if states is None:  # the check could not tell: nothing starts or ends
            return []
        opened = self._open.setdefault(check, {})
        due: list[Alert] = []
        for key, alert in states.items():
            told = opened[key][1] if key in opened else None
            if told is None:
                due.append(alert)
                told = now
            elif self._repeat_s and now - told >= self._repeat_s:
                due.append(alert.again(at))
                told = now
            opened[key] = (alert, told)
        for key in opened.keys() - states.keys():
            due.append(opened.pop(key)[0].resolved(at))
        return due

    def forget(self, check: str) -> None:
        """Another node tells this check's conditions now: should this node take over, it starts afresh."""
        self._open.pop(check, None)


class Watch:
    def __init__(self, settings: AlertSettings, outbox: Outbox, engine: Engine, executor: ThreadPoolExecutor,
                 snapshot: Callable[[], Snapshot], writer: BatchWriter, node: str) -> None:
        self._settings = settings
        self._node = node
        # Renewed every round; a round can wait out a few timeouts. A holder gone quiet this long is replaced.
        self._lease_s = 3 * settings.interval_s + 2 * settings.timeout_s
        self._outbox = outbox
        self._engine = engine
        self._executor = executor
        self._snapshot = snapshot
        self._writer = writer
        self._tracker = Tracker(settings.repeat_s)
        self._channels: dict[int, checks.ChannelState] | None = None  # the last read, to diff against
        self._kept_aside = writer.kept_aside
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = every(self._settings.interval_s, self.round, "alert round", logger=log)

    async def stop(self) -> None:
        await stop_task(self._task)
        await self._read("the alerts lease", leases.release, LEASE, self._node)

    async def round(self) -> None:
        at = datetime.now(timezone.utc)
        track = self._tracker.update
        alerts = self._writes_kept_aside(at) + track("writer", self._writer_waiting(at), at, time.monotonic())
        leading = await self._read("the alerts lease", leases.claim, LEASE, self._node, self._lease_s)
        if leading:
            alerts += await self._channel_changes(at)
            alerts += track("error_rate", await self._error_rate(at), at, time.monotonic())
            alerts += track("balance", self._balances(at), at, time.monotonic())
            alerts += track("channel_balance", self._channel_balances(at), at, time.monotonic())
            alerts += track("tasks", await self._backlog(at), at, time.monotonic())
        elif leading is not None:  # another node holds the lease (None: the database could not say)
            self._channels = None
            for check in _CLUSTER_CHECKS:
                self._tracker.forget(check)
        if alerts:
            emailed = await self._tell_users(alerts)
            self._outbox.put(alerts)
            await self._read("the alert log", alert_log.record, self._node, alerts, emailed)
        await self._outbox.send()

    async def _tell_users(self, alerts: list[Alert]) -> set[int]:
        """Mail each newly low balance to its user's verified address (once, not the reminders); who was mailed."""
        low = {a.user_id: a for a in alerts if a.kind == "balance_low" and not a.repeat and a.user_id is not None}
        if not low or not self._outbox.mails_users:
            return set()
        addresses = await self._read("users' addresses", checks.verified_emails, list(low)) or {}
        for user_id, address in addresses.items():
            self._outbox.tell_user(messages.to_user(low[user_id]), address)
        return set(addresses)

    async def _read(self, what: str, fn: Callable[..., T], *args: Any) -> T | None:
        try:
            future: Awaitable[T] = asyncio.get_running_loop().run_in_executor(self._executor, fn, self._engine, *args)
            return await future
        except Exception as error:
            log.warning("alerts could not read %s: %s", what, error)
            return None

    async def _channel_changes(self, at: datetime) -> list[Alert]:
        now = await self._read("channels", checks.channel_states)
        if now is None:
            return []
        before, self._channels = self._channels, now
        alerts: list[Alert] = []
        for channel_id, was in (before or {}).items():
            state = now.get(channel_id)
            if state is None or state.enabled == was.enabled:
                continue
            if state.enabled:
                alerts.append(Alert("channel_enabled", "info", f"Channel {state.name} is back in rotation",
                                    {"channel": state.name}, at))
            else:
                alerts.append(Alert("channel_disabled", "warning", f"Channel {state.name} was disabled",
                                    {"channel": state.name, "reason": state.reason or "(none given)"}, at))
        return alerts

    async def _error_rate(self, at: datetime) -> _States | None:
        settings = self._settings
        if settings.error_rate is None:
            return {}
        counts = await self._read("usage logs", checks.error_counts, at - timedelta(seconds=settings.error_window_s))
        if counts is None:
            return None
        total, errors = counts
        if total < settings.error_min_requests or errors / total <= settings.error_rate:
            return {}
        return {"error_rate": Alert(
            "error_rate", "critical", f"{errors / total:.0%} of requests failed in the last {settings.error_window_s:g} s",
            {"requests": total, "errors": errors, "threshold": f"{settings.error_rate:.0%}"}, at)}

    def _balances(self, at: datetime) -> _States:
        below_usd = self._settings.balance_below_usd
        if below_usd is None:
            return {}
        below = round(below_usd * 1_000_000)
        return {
            f"user:{user.id}": Alert("balance_low", "warning", f"User {user.name}'s balance is below {below_usd:g} USD",
                                     {"user": user.name, "balance_usd": f"{user.balance_micros / 1_000_000:.6f}",
                                      "threshold_usd": f"{below_usd:g}"}, at, user.id)
            for user in self._snapshot().users.values()
            if user.enabled and not user.unlimited and user.balance_micros < below
        }

    def _channel_balances(self, at: datetime) -> _States | None:
        """Enabled channels whose upstream balance is below the threshold, from the latest channel read."""
        below_usd = self._settings.channel_balance_below_usd
        if below_usd is None:
            return {}
        if self._channels is None:  # no channel read has succeeded yet: no verdict
            return None
        below = round(below_usd * 1_000_000)
        return {
            f"channel:{channel_id}": Alert(
                "channel_balance_low", "warning", f"Channel {state.name}'s upstream balance is below {below_usd:g} USD",
                {"channel": state.name, "balance_usd": f"{state.balance_micros / 1_000_000:.6f}"}, at)
            for channel_id, state in self._channels.items()
            if state.enabled and state.balance_micros is not None and state.balance_micros < below
        }

    async def _backlog(self, at: datetime) -> _States | None:
        settings = self._settings
        if settings.task_backlog_count is None:
            return {}
        cutoff_ms = int(at.timestamp() * 1000 - settings.task_backlog_after_s * 1000)
        late = await self._read("tasks", checks.late_tasks, cutoff_ms, max(settings.task_backlog_count + 1, 10_000))
        if late is None:
            return None
        if late <= settings.task_backlog_count:
            return {}
        return {"backlog": Alert("task_backlog", "warning",
                                 f"{late} tasks unfinished after {settings.task_backlog_after_s:g} s",
                                 {"late_tasks": late, "threshold": settings.task_backlog_count}, at)}

    def _writer_waiting(self, at: datetime) -> _States:
        if not self._writer.waiting:
            return {}
        return {"waiting": Alert("writer_failing", "critical", "The database does not take usage writes",
                                 {"rows_waiting": self._writer.queued()}, at)}

    def _writes_kept_aside(self, at: datetime) -> list[Alert]:
        kept, self._kept_aside = self._writer.kept_aside - self._kept_aside, self._writer.kept_aside
        if not kept:
            return []
        return [Alert("writer_dead_letters", "critical", f"{kept} usage writes refused by the database",
                      {"kept_aside": kept, "see": "GET /api/system, dead_letters"}, at)]
