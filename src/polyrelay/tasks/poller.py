"""The poller: claim due tasks under a lease, ask their upstreams in batches, write the results.

One round: claim up to ``claim_batch`` due tasks (one UPDATE ... RETURNING) -> group by family,
channel and key -> batch queries, concurrently, at most ``channel_concurrency`` at once per
channel -> apply everything in one transaction -> refunds mirrored in memory -> callbacks
queued. Each tick a node runs rounds back to back while claims come back full, at most
``claim_parallel`` at once, so it never holds more than ``claim_batch * claim_parallel`` leases
and several nodes share the due tasks chunk by chunk. A round's leases are renewed every
``lease_s / 3`` while it works, so ``lease_s`` can be short: a crashed node's tasks are claimed
again about ``lease_s`` after its last renewal (docs/tasks.md). Young tasks are polled every
``poll_interval_s``; older ones back off (x2 after 1 min, x4 after 5 min, x8 after 30 min);
after ``timeout_s`` a task fails and is refunded.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson

from polyrelay.background import stop_task
from polyrelay.scrub import scrub, scrub_json
from polyrelay.store.files import FileStore
from polyrelay.store.snapshot import ChannelRecord
from polyrelay.tasks import batch, store
from polyrelay.providers.base import FAILURE, RANK, SUCCESS, TERMINAL, TaskUpdate, TaskView
from polyrelay.tasks.engine import TaskEngine

log = logging.getLogger("polyrelay.tasks")

_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')
_BACKOFF = ((60_000, 1), (300_000, 2), (1_800_000, 4))  # (age below ms, interval multiplier)


def next_poll_delay_ms(age_ms: int, interval_ms: int) -> int:
    for below, factor in _BACKOFF:
        if age_ms < below:
            return interval_ms * factor
    return interval_ms * 8


def _scrub_result(result: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``scrub_json(result, keys, credentials=False)``, skipped when no key occurs in the result's JSON.

    A string holding a key holds it verbatim in the JSON text too, unless the key has a character
    JSON escapes; one search of one string is far cheaper than walking every string of the result.
    """
    if any(_JSON_ESCAPED.search(key) for key in keys):
        return scrub_json(result, keys, credentials=False)
    try:
        text = orjson.dumps(result).decode()
    except (TypeError, orjson.JSONEncodeError):  # not plain JSON (a big int): walk it
        return scrub_json(result, keys, credentials=False)
    if scrub(text, keys, credentials=False) == text:
        return result
    return scrub_json(result, keys, credentials=False)


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
        self._held: dict[str, list[str]] = {}  # claim -> task ids, of the rounds at work now
        self._renewer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="polyrelay-task-poller")
        self._renewer = asyncio.create_task(self._renew(), name="polyrelay-task-leases")

    def health(self) -> PollerHealth:
        """For ``/api/system``: a loop that died or stalls shows as not running or an old last round."""
        running = self._task is not None and not self._task.done()
        return PollerHealth(running, self._last_round_at, self._last_round_ms)

    async def stop(self) -> None:
        """Stop between rounds' awaits, then hand our leases back so another process can go on at once."""
        await stop_task(self._task)
        await stop_task(self._renewer)
        engine = self._engine
        try:
            await engine.run_db(store.release, engine.db, engine.owner + ":")
        except Exception:
            log.exception("could not release task leases; they expire after %ss", engine.settings.lease_s)
        try:
            await engine.close_callbacks()
        except Exception:
            log.exception("could not hand back undelivered callbacks; they are recovered once stale")

    def tick_s(self) -> float:
        """The pause between a node's ticks (each tick drains what is due); jittered by +-50 %."""
        return min(self._engine.settings.poll_interval_s / 2, 5.0)

    async def _run(self) -> None:
        tick = self.tick_s()
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
            # Jitter keeps nodes' ticks from locking into one phase, where the first always drains the most.
            await asyncio.sleep(tick * random.uniform(0.5, 1.5))

    async def _renew(self) -> None:
        """Keep the leases of rounds at work (a slow upstream, a long re-host) from running out."""
        engine = self._engine
        every = engine.settings.lease_s / 3
        while True:
            await asyncio.sleep(every)
            if not self._held:
                continue
            try:
                await engine.run_db(store.renew, engine.db, dict(self._held), store.now_ms(),
                                    int(engine.settings.lease_s * 1000))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("renewing task leases failed; retrying in %ss", every)

    async def run_round(self) -> int:
        """Advance every due task once, ``claim_batch`` at a time; returns how many were claimed.

        Rounds run back to back while claims come back full, up to ``claim_parallel`` at once,
        and stop starting new ones after a tick, so callbacks' bookkeeping still runs.
        """
        settings = self._engine.settings
        deadline = time.monotonic() + self.tick_s()
        claimed = await self._round()
        if claimed < settings.claim_batch:
            return claimed

        async def worker() -> int:
            total = 0
            while time.monotonic() < deadline:
                count = await self._round()
                total += count
                if count < settings.claim_batch:
                    break
            return total

        results = await asyncio.gather(*(worker() for _ in range(settings.claim_parallel)), return_exceptions=True)
        for result in results:  # every worker has stopped by now: none is left running unwatched
            if isinstance(result, BaseException):
                raise result
        return claimed + sum(r for r in results if isinstance(r, int))

    async def _round(self) -> int:
        """Claim up to ``claim_batch`` due tasks, poll them, write the results; how many were claimed."""
        engine, settings = self._engine, self._engine.settings
        started = time.perf_counter()
        self._rounds += 1
        claim = f"{engine.owner}:{self._rounds}"
        now = store.now_ms()
        lease_ms = int(settings.lease_s * 1000)
        tasks = await engine.run_db(store.claim_due, engine.db, claim, now, lease_ms, settings.claim_batch)
        if not tasks:
            return 0
        self._held[claim] = [task.id for task in tasks]
        try:
            return await self._advance(claim, tasks, started)
        finally:
            self._held.pop(claim, None)

    async def _advance(self, claim: str, tasks: list[TaskView], started: float) -> int:
        engine, settings = self._engine, self._engine.settings
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
        changed, settled = await engine.run_db(batch.apply, engine.db, claim, advances, now)
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
                    update.result = _scrub_result(update.result, channel.keys)
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
