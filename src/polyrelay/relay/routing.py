"""Channel selection and channel health: priority, weight, cooldown, key rotation.

Selection order for one request: priority groups from highest to lowest; inside a
group, a weighted random order without replacement. Channels cooling down after
repeated failures go last, so they are only tried when everything else failed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from polyrelay.providers.base import Target
from polyrelay.relay.bridge import serves
from polyrelay.store.snapshot import ChannelRecord, Snapshot
from polyrelay.store.writer import BatchWriter

_random = random.Random()

# How ``disabled_reason`` starts when health accounting took a channel out of rotation: only such
# channels are probed back (relay.healing); one an administrator disabled stays off.
AUTO_DISABLED = "auto-disabled"


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    cooldown_after_failures: int
    cooldown_s: float
    disable_after_failures: int  # 0: never
    key_rest_s: float


def _weighted_order(channels: list[ChannelRecord]) -> list[ChannelRecord]:
    if len(channels) == 1:
        return channels
    # Efraimidis-Spirakis: sort by u^(1/w); one pass gives a weighted order without replacement.
    # Weight 0 means "only when the others failed".
    return sorted(
        channels,
        key=lambda c: _random.random() ** (1.0 / c.weight) if c.weight > 0 else -1.0,
        reverse=True,
    )


def by_priority(channels: Iterable[ChannelRecord]) -> list[list[ChannelRecord]]:
    """``channels`` grouped by priority, highest first, in their given order inside a group."""
    groups: dict[int, list[ChannelRecord]] = {}
    for channel in channels:
        groups.setdefault(channel.priority, []).append(channel)
    return [groups[p] for p in sorted(groups, reverse=True)]


def routes(snapshot: Snapshot, kind: str, model: str) -> list[list[ChannelRecord]]:
    """Channels whose type serves ``kind`` (natively or through a dialect bridge) and that serve ``model``, by priority, highest first (memoised)."""
    key = (kind, model)
    groups = snapshot.route_cache.get(key)
    if groups is None:
        groups = by_priority(c for c in snapshot.channels if serves(c.type, kind) and c.serves(model))
        if len(snapshot.route_cache) < 10_000:  # bound memory against callers inventing names
            snapshot.route_cache[key] = groups
    return groups


def candidates(groups: list[list[ChannelRecord]]) -> Iterator[ChannelRecord]:
    """The channels of ``groups`` (see ``routes``) in the order to try them, each again while it has
    another usable key; channels cooling down after failures come last."""
    now = time.monotonic()
    cooling: list[ChannelRecord] = []
    for group in groups:
        for channel in _weighted_order(group):
            if channel.cooldown_until > now:
                cooling.append(channel)
            else:
                yield from _with_each_key(channel)
    for channel in cooling:
        yield from _with_each_key(channel)


def _resting_keys(channel: ChannelRecord) -> set[int]:
    now = time.monotonic()
    return {index for index, until in channel.key_rested_until.items() if until > now}


def _with_each_key(channel: ChannelRecord) -> Iterator[ChannelRecord]:
    """Offer a channel again while the last attempt rested a refused key and another key is usable.

    One revoked or rate-limited key must not fail a request that the channel's other keys can serve.
    """
    for _ in range(len(channel.keys)):
        resting = _resting_keys(channel)
        yield channel
        now_resting = _resting_keys(channel)
        if len(now_resting) <= len(resting) or len(now_resting) >= len(channel.keys):
            return


def pick_key(channel: ChannelRecord) -> int:
    """Round-robin over the channel's keys, skipping rested ones while any other is usable."""
    now = time.monotonic()
    count = len(channel.keys)
    for step in range(count):
        index = (channel.key_cursor + step) % count
        if channel.key_rested_until.get(index, 0.0) <= now:
            channel.key_cursor = index + 1
            return index
    # Every key is resting: use the one whose rest ends first.
    index = min(range(count), key=lambda i: channel.key_rested_until.get(i, 0.0))
    channel.key_cursor = index + 1
    return index


def target_for(channel: ChannelRecord, model: str) -> Target:
    index = pick_key(channel)
    return Target(channel=channel, key_index=index, key=channel.keys[index], upstream_model=channel.upstream_model(model))


class Health:
    """Records attempt outcomes on channels and persists the notable ones."""

    def __init__(self, policy: HealthPolicy, writer: BatchWriter) -> None:
        self._policy = policy
        self._writer = writer

    def succeeded(self, channel: ChannelRecord) -> None:
        if channel.failures:
            channel.failures = 0
            channel.cooldown_until = 0.0
            self._writer.record_channel(channel.id, failure_count=0, cooldown_until=None, last_error="")

    def failed(self, target: Target, error: str, *, rest_key: bool) -> None:
        channel = target.channel
        channel.failures += 1
        policy = self._policy
        if rest_key and policy.key_rest_s:
            channel.key_rested_until[target.key_index] = time.monotonic() + policy.key_rest_s
        columns: dict[str, object] = {"failure_count": channel.failures, "last_error": error[:2000]}
        if channel.failures >= policy.cooldown_after_failures and policy.cooldown_s:
            now = time.monotonic()
            if channel.cooldown_until <= now:  # the trail notes entering a cooldown, not each extension
                self._writer.record_channel_event(channel.id, "cooled", f"{channel.failures} consecutive failures: "
                                                  f"{error[:400]}")
            channel.cooldown_until = now + policy.cooldown_s
            columns["cooldown_until"] = _wall_clock(policy.cooldown_s)
        if policy.disable_after_failures and channel.failures >= policy.disable_after_failures:
            columns["enabled"] = False
            columns["disabled_reason"] = reason = (f"{AUTO_DISABLED} after {channel.failures} consecutive failures: "
                                                   f"{error[:400]}")
            if channel.failures == policy.disable_after_failures:  # once, though calls in flight may fail on
                self._writer.record_channel_event(channel.id, "disabled", reason)
        self._writer.record_channel(channel.id, **columns)


def _wall_clock(seconds_from_now: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds_from_now)
