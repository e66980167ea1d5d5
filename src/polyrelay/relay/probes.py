"""One cheap call that shows whether a channel answers: the admin channel test and the health probes.

A channel that serves chat gets a one-token chat through its own adaptor with its first key; a
type only task families use gets a GET of its base URL (task upstreams have no free call that
proves a key works, so this only shows the host answers). Nothing is charged, no usage row is
written. The answer never contains a channel key, only its hint.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
import orjson

from polyrelay import kinds
from polyrelay.keys import key_hint
from polyrelay.patterns import ModelPatterns, is_wildcard
from polyrelay.providers.base import Call, Services, Target, new_request_id
from polyrelay.providers.registry import adaptor_for, kinds_of
from polyrelay.store import models
from polyrelay.store.snapshot import ChannelRecord

_TEST_PROMPT = [{"role": "user", "content": "Say OK."}]


@dataclass(frozen=True, slots=True)
class CheckResult:
    status: int | None  # the upstream's HTTP status; None when it never answered
    result: str  # "ok", or what went wrong
    latency_ms: float

    @property
    def ok(self) -> bool:
        return self.result == "ok"


def record_of(row: models.Channel) -> ChannelRecord:
    """The routing view of a channel row, whether or not it is in the snapshot (a disabled one is not)."""
    return ChannelRecord(
        id=row.id, name=row.name, type=row.type, base_url=row.base_url, keys=tuple(row.keys),
        models=ModelPatterns(row.models or []), model_mapping=dict(row.model_mapping or {}), priority=row.priority,
        weight=row.weight, timeout_s=row.timeout_s, connect_timeout_s=row.connect_timeout_s,
        options=dict(row.options or {}),
    )


def check_model(row: models.Channel, model: str | None = None) -> str:
    """``model``, else the first concrete model the channel names."""
    if model:
        return model
    names = [m for m in (row.models or []) if not is_wildcard(m)] + list(row.model_mapping or {})
    return names[0] if names else "gpt-4o-mini"


async def check(http: aiohttp.ClientSession, channel: ChannelRecord, model: str, timeout_s: float = 60.0) -> CheckResult:
    """One cheap call to the channel (see the module docstring); never raises for an upstream failure."""
    status: int | None = None
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=min(channel.timeout_s, timeout_s), sock_connect=channel.connect_timeout_s)
    try:
        if kinds.CHAT not in kinds_of(channel.type):
            status, result = await _reachable(http, channel, timeout)
        else:
            status, result = await _chat(http, channel, model, timeout)
    except asyncio.TimeoutError:
        result = "timed out"
    except Exception as exc:  # the check reports any failure; it never raises
        result = f"{type(exc).__name__}: {exc}"
    for key in channel.keys:
        result = result.replace(key, key_hint(key))
    return CheckResult(status, result, (time.perf_counter() - started) * 1000)


async def _chat(http: aiohttp.ClientSession, channel: ChannelRecord, model: str,
                timeout: aiohttp.ClientTimeout) -> tuple[int, str]:
    payload = {"model": model, "messages": _TEST_PROMPT, "max_tokens": 1}
    call = Call(family="openai", endpoint="chat.completions", path="/v1/chat/completions", model=model,
                body=orjson.dumps(payload), content_type="application/json", request_id=new_request_id(),
                payload=payload, max_output_tokens=1)
    adaptor = adaptor_for(channel.type)
    target = Target(channel=channel, key_index=0, key=channel.keys[0], upstream_model=channel.upstream_model(model))
    await adaptor.prepare(call, target, Services(http))
    request = adaptor.build_request(call, target)
    async with http.request(request.method, request.url, headers=request.headers, data=request.body,
                            timeout=timeout) as response:
        status, body = response.status, await response.read()
    if status >= 400:  # the URL without its query (a key may ride there); the caller hides keys anyway
        url = request.url.split("?", 1)[0]
        return status, f"HTTP {status} from {request.method} {url}: {adaptor.upstream_error(call, status, body).message}"
    return status, "ok"


async def _reachable(http: aiohttp.ClientSession, channel: ChannelRecord,
                     timeout: aiohttp.ClientTimeout) -> tuple[int, str]:
    async with http.get(channel.base_url, timeout=timeout) as response:
        status = response.status
    if status >= 500:
        return status, f"HTTP {status} from {channel.base_url}"
    return status, "ok"
