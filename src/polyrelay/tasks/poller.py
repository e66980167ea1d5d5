"""The poller: claim due tasks under a lease, ask their upstreams in batches, write the results.

One round: claim (one UPDATE) -> group by family, channel and key -> batch queries,
concurrently, at most ``channel_concurrency`` at once per channel -> apply everything
in one transaction -> refunds mirrored in memory -> callbacks queued. Young tasks are
polled every ``poll_interval_s``; older ones back off (x2 after 1 min, x4 after 5
min, x8 after 30 min); after ``timeout_s`` a task fails and is refunded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from polyrelay.background import stop_task
from polyrelay.scrub import scrub, scrub_json
from polyrelay.store.files import FileStore
from polyrelay.store.snapshot import ChannelRecord
from polyrelay.tasks import store
from polyrelay.providers.base import FAILURE, RANK, SUCCESS, TERMINAL, TaskUpdate, TaskView
from polyrelay.tasks.engine import TaskEngine

log = logging.getLogger("polyrelay.tasks")

_BACKOFF = ((60_000, 1), (300_000, 2), (1_800_000, 4))  # (age below ms, interval multiplier)


def next_poll_delay_ms(age_ms: int, interval_ms: int) -> int:
    for below, factor in _BACKOFF:
        if age_ms < below:
            return interval_ms * factor
    return interval_ms * 8


@dataclass(frozen=True, slots=True)
class PollerHealth:
    running: bool
    last_round_at: float | None  # epoch seconds when the last round ended, claimed something or not
    last_round_ms: float | None


class Poller:
    def __init__(self, engine: TaskEngine) -> None:
        self._engine = engine
        self._rounds = 0
        self._task: asyncio.Task[None] | None = None
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        self.last_round: dict[str, float] = {}  # timings of the last round that claimed something, ms
        self._last_round_at: float | None = None
        self._last_round_ms: float | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="polyrelay-task-poller")

    def health(self) -> PollerHealth:
        """For ``/api/system``: a loop that died or stalls shows as not running or an old last round."""
        running = self._task is not None and not self._task.done()
        return PollerHealth(running, self._last_round_at, self._last_round_ms)

    async def stop(self) -> None:
        """Stop between rounds' awaits, then hand our leases back so another process can go on at once."""
        await stop_task(self._task)
        engine = self._engine
        try:
            await engine.run_db(store.release, engine.db, engine.owner + ":")
        except Exception:
            log.exception("could not release task leases; they expire after %ss", engine.settings.lease_s)
        try:
            await engine.close_callbacks()
        except Exception:
            log.exception("could not hand back undelivered callbacks; they are recovered once stale")

    async def _run(self) -> None:
        tick = min(self._engine.settings.poll_interval_s / 2, 5.0)
        while True:
            started = time.perf_counter()
            try:
                await self.run_round()
                self._last_round_at, self._last_round_ms = time.time(), (time.perf_counter() - started) * 1000
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task poll round failed; retrying next tick")
            try:
                await self._engine.sync_callbacks()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("callback bookkeeping failed; retrying next tick")
            await asyncio.sleep(tick)

    async def run_round(self) -> int:
        """Advance every due task once; returns how many were claimed."""
        engine, settings = self._engine, self._engine.settings
        started = time.perf_counter()
        self._rounds += 1
        claim = f"{engine.owner}:{self._rounds}"
        now = store.now_ms()
        lease_ms = int(settings.lease_s * 1000)
        tasks = await engine.run_db(store.claim_due, engine.db, claim, now, lease_ms, settings.claim_batch)
        if not tasks:
            return 0
        claimed_at = time.perf_counter()
        groups: dict[tuple[str, int, int, str], list[TaskView]] = defaultdict(list)
        for task in tasks:
            adaptor = engine.adaptors.get(task.family)
            scope = adaptor.scope(task) if adaptor is not None else ""
            groups[(task.family, task.channel_id, int(task.properties.get("key_index", 0)), scope)].append(task)
        channels = {c.id: c for c in engine.spine.snapshot.channels}
        results = await asyncio.gather(
            *(self._poll_group(family, channels.get(cid), key_index, group, scope)
              for (family, cid, key_index, scope), group in groups.items())
        )
        updates = {upstream: update for result in results for upstream, update in result.items()}
        fetched_at = time.perf_counter()
        now = store.now_ms()
        interval_ms = int(settings.poll_interval_s * 1000)
        timeout_ms = int(settings.timeout_s * 1000)
        advances = []
        for task in tasks:
            update = updates.get((task.channel_id, task.upstream_id))
            if update is not None and RANK.get(update.status, 0) < RANK.get(task.status, 0):
                update = None  # upstream went backwards (a stale replica?): keep what we have
            age = now - task.submit_time
            if age > timeout_ms and (update is None or update.status not in TERMINAL):
                update = TaskUpdate(status=FAILURE, progress="", fail_reason=f"task timed out after {settings.timeout_s:g}s")
            advances.append(store.Advance(task, update, now + next_poll_delay_ms(age, interval_ms)))
        changed, settled = await engine.run_db(store.apply, engine.db, claim, advances, now)
        engine.settled(settled)
        engine.changed(changed)
        done = time.perf_counter()
        self.last_round = {"claim": (claimed_at - started) * 1000, "fetch": (fetched_at - claimed_at) * 1000,
                           "apply": (done - fetched_at) * 1000, "total": (done - started) * 1000}
        log.debug("task poll round: %d claimed, %d changed, %s", len(tasks), len(changed), self.last_round)
        return len(tasks)

    async def _poll_group(
        self, family: str, channel: ChannelRecord | None, key_index: int, tasks: list[TaskView], scope: str = ""
    ) -> dict[tuple[int, str], TaskUpdate]:
        engine = self._engine
        adaptor = engine.adaptors.get(family)
        if adaptor is None or channel is None or not channel.keys:
            return {}  # family unknown here or channel disabled: retried later, times out eventually
        key = channel.keys[key_index % len(channel.keys)]
        semaphore = self._semaphores.setdefault(
            channel.id, asyncio.Semaphore(engine.settings.channel_concurrency)
        )
        ids = [t.upstream_id for t in tasks if t.upstream_id]
        batches = [ids[i : i + adaptor.batch_size] for i in range(0, len(ids), adaptor.batch_size)]
        scoped = {"scope": scope} if scope else {}  # adaptors without scopes keep the plain signature

        async def one(batch: list[str]) -> dict[str, TaskUpdate]:
            async with semaphore:
                try:
                    return await adaptor.fetch(engine.session, channel, key, batch, **scoped)
                except Exception as exc:  # transport errors, timeouts, bad answers: retried next time
                    log.warning("polling %d %s tasks on channel %s failed: %s", len(batch), family, channel.name,
                                scrub(repr(exc), channel.keys))
                    return {}

        merged: dict[tuple[int, str], TaskUpdate] = {}
        for result in await asyncio.gather(*(one(b) for b in batches)):
            for upstream, update in result.items():  # what the upstream says is stored and shown: never our keys
                update.fail_reason = scrub(update.fail_reason, channel.keys)
                if update.result:
                    update.result = scrub_json(update.result, channel.keys, credentials=False)
                merged[(channel.id, upstream)] = update
        finished = [u for u in merged.values() if u.status == SUCCESS and u.result] if adaptor.result_url_keys else []
        if finished and (files := engine.spine.files) is not None:
            await asyncio.gather(*(self._rehost(files, adaptor.result_url_keys, channel, u) for u in finished))
        return merged

    async def _rehost(self, files: FileStore, keys: frozenset[str], channel: ChannelRecord, update: TaskUpdate) -> None:
        """A finished task's result URLs moved to polyrelay's file store before the result is stored."""
        try:
            update.result = await files.rehost_data(update.result, keys, channel, self._engine.session)
        except Exception:  # never lose the result over it: the provider's URL is kept
            log.exception("re-hosting the result of a %s task on channel %s failed", channel.type, channel.name)
