"""The failover loop and routing by capability, on in-memory channels."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from polyrelay import kinds
from polyrelay.errors import RelayError
from polyrelay.patterns import ModelPatterns
from polyrelay.providers.base import Target
from polyrelay.relay import failover
from polyrelay.relay.routing import Health, HealthPolicy, routes
from polyrelay.store.snapshot import ChannelRecord, Snapshot


class _Writer:
    def __init__(self) -> None:
        self.channels: list[dict[str, Any]] = []
        self.events: list[tuple[int, str]] = []

    def record_channel(self, channel_id: int, **columns: Any) -> None:
        self.channels.append({"id": channel_id, **columns})

    def record_channel_event(self, channel_id: int, kind: str, reason: str, actor: str = "auto") -> None:
        self.events.append((channel_id, kind))


def _channel(id: int, type: str, models: list[str] | None = None, priority: int = 0, keys: int = 1) -> ChannelRecord:
    return ChannelRecord(id=id, name=f"{type}-{id}", type=type, base_url="http://127.0.0.1:9", keys=tuple(
        f"k{i}" for i in range(keys)), models=ModelPatterns(models or []), model_mapping={}, priority=priority,
        weight=1, timeout_s=5, connect_timeout_s=1, options={})


def _snapshot(*channels: ChannelRecord) -> Snapshot:
    return Snapshot(version=1, tokens_by_hash={}, channels=list(channels), prices={}, price_patterns=[])


def _health(cooldown_after: int = 1, writer: _Writer | None = None) -> Health:
    return Health(HealthPolicy(cooldown_after_failures=cooldown_after, cooldown_s=60, disable_after_failures=0,
                               key_rest_s=30), writer or _Writer())  # type: ignore[arg-type]


def test_a_channel_without_models_serves_only_the_kinds_of_its_type() -> None:
    openai, mj, ideogram = _channel(1, "openai", ["gpt-4o-mini"]), _channel(2, "midjourney"), _channel(3, "ideogram")
    snapshot = _snapshot(openai, mj, ideogram)
    assert routes(snapshot, kinds.CHAT, "gpt-4o-mini") == [[openai]]
    assert routes(snapshot, kinds.CHAT, "nope") == []
    assert routes(snapshot, kinds.MIDJOURNEY, "mj_imagine") == [[mj]]
    assert routes(snapshot, kinds.IDEOGRAM, "V_2") == [[ideogram]]
    assert routes(snapshot, kinds.CLAUDE, "gpt-4o-mini") == [[openai]]  # Claude Messages through the chat bridge
    assert routes(snapshot, kinds.CLAUDE_COUNT, "gpt-4o-mini") == []  # ... but no upstream counts Claude tokens


def test_routes_group_by_priority_highest_first() -> None:
    low, high = _channel(1, "openai", priority=0), _channel(2, "azure", priority=5)
    assert routes(_snapshot(low, high), kinds.EMBEDDINGS, "e") == [[high], [low]]


def _targets(*channels: ChannelRecord) -> list[Target]:
    return [Target(c, 0, c.keys[0], "m") for c in channels]


async def test_the_loop_moves_past_failing_channels_and_records_their_health() -> None:
    bad, good = _channel(1, "suno"), _channel(2, "suno")
    writer = _Writer()
    health = _health(writer=writer)

    async def attempt(target: Target) -> str:
        if target.channel is bad:
            raise failover.status_failed(503)
        return "ok"

    tried = await failover.first_answer("m", _targets(bad, good), attempt, health)
    assert (tried.answer, tried.target.channel, tried.attempts) == ("ok", good, 2)
    assert bad.failures == 1 and bad.cooldown_until > 0  # a task channel cools down like a chat channel
    assert writer.events == [(1, "cooled")]  # the health trail notes it
    assert good.failures == 0


async def test_a_refused_key_is_rested_and_the_answer_when_all_refuse_is_a_502() -> None:
    only = _channel(1, "openai")

    async def attempt(target: Target) -> str:
        raise failover.status_failed(401)

    with pytest.raises(RelayError) as error:
        await failover.first_answer("gpt", _targets(only), attempt, _health())
    assert error.value.status == 502 and error.value.code == "upstream_auth_failed" and "'gpt'" in error.value.message
    assert 0 in only.key_rested_until


async def test_the_requests_own_error_stops_the_loop_and_leaves_the_channel_healthy() -> None:
    first, second = _channel(1, "openai"), _channel(2, "openai")
    first.failures = 2
    calls: list[ChannelRecord] = []

    async def attempt(target: Target) -> str:
        calls.append(target.channel)
        raise RelayError(400, "bad prompt")

    with pytest.raises(RelayError, match="bad prompt"):
        await failover.first_answer("m", _targets(first, second), attempt, _health())
    assert calls == [first] and first.failures == 0


async def test_transport_errors_fail_over_with_502_and_504() -> None:
    assert failover.transport_failed(aiohttp.ClientConnectionError()).error.status == 502
    assert failover.transport_failed(asyncio.TimeoutError()).error.status == 504


async def test_a_busy_answer_is_the_fallback_when_every_channel_is_busy() -> None:
    a, b = _channel(1, "midjourney"), _channel(2, "midjourney")

    async def attempt(target: Target) -> dict[str, int]:
        raise failover.ChannelFailed(RelayError(503, "busy"), fallback={"code": 23})

    tried = await failover.first_answer("mj_imagine", _targets(a, b), attempt, _health())
    assert tried.answer == {"code": 23} and tried.attempts == 2


async def test_no_channel_at_all_is_a_503_naming_the_model() -> None:
    async def attempt(target: Target) -> str:
        raise AssertionError("never called")

    with pytest.raises(RelayError) as error:
        await failover.first_answer("mj_imagine", [], attempt, _health())
    assert error.value.status == 503 and "'mj_imagine'" in error.value.message
