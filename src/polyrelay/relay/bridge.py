"""Which adaptor serves a call on a channel: the channel's own, or its own behind a dialect bridge.

A channel serves a kind natively when its adaptor speaks it (``Adaptor.speaks``); otherwise,
when a dialect (``polyrelay.dialects``) bridges that kind through a pivot the channel serves,
the call is translated to the pivot, sent through the channel's adaptor, and its reply or
stream translated back. A call is never forwarded raw to an API that does not speak it:
routing offers a channel only kinds it serves one way or the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson

from polyrelay import kinds
from polyrelay.billing.meter import Usage
from polyrelay.dialects.base import Dialect
from polyrelay.dialects.registry import DIALECTS
from polyrelay.errors import RelayError, bad_request
from polyrelay.providers import registry
from polyrelay.providers.base import Adaptor, Call, Reply, ReplyStream, Services, Target, UpstreamRequest
from polyrelay.providers.streams import StreamTranslator, translated
from polyrelay.store.snapshot import ChannelRecord

_PIVOT = "pivot"  # in ``Call.extra``: the pivot call, built once and reused by every attempt
_PIVOT_PATHS = {kinds.CHAT: ("chat.completions", "/v1/chat/completions"), kinds.EMBEDDINGS: ("embeddings", "/v1/embeddings")}


def _served(channel_type: str) -> frozenset[str]:
    own = registry.kinds_of(channel_type)
    return own | frozenset(dialect.kind for dialect in DIALECTS.values() if dialect.via in own)


_SERVED: dict[str, frozenset[str]] = {}


def serves(channel_type: str, kind: str) -> bool:
    """Whether channels of ``channel_type`` can serve ``kind``, natively or through a bridge."""
    served = _SERVED.get(channel_type)
    if served is None:
        served = _SERVED[channel_type] = _served(channel_type)
    return kind in served


_BRIDGES: dict[tuple[str, str], "Bridged"] = {}


def adaptor_for(channel: ChannelRecord, kind: str) -> Adaptor:
    """The adaptor that serves ``kind`` on ``channel`` (routing guarantees there is one)."""
    adaptor = registry.adaptor_for(channel.type)
    if adaptor.speaks(kind, channel) or (dialect := DIALECTS.get(kind)) is None:
        return adaptor
    bridged = _BRIDGES.get((channel.type, kind))
    if bridged is None:
        bridged = _BRIDGES[(channel.type, kind)] = Bridged(adaptor, dialect)
    return bridged


def speaks_natively(channel: ChannelRecord, kind: str) -> bool:
    """Whether ``channel`` serves ``kind`` itself, not through a dialect bridge."""
    return kind in registry.kinds_of(channel.type) and registry.adaptor_for(channel.type).speaks(kind, channel)


def narrowed(groups: list[list[ChannelRecord]], call: Call) -> list[list[ChannelRecord]]:
    """``groups`` without the channels that would bridge ``call`` when its dialect says only a native channel
    can serve it (``Dialect.needs_native``); 400 when none is left."""
    dialect = DIALECTS.get(call.kind)
    if dialect is None or (native := dialect.needs_native(call)) is None:
        return groups
    kept = [speaking for group in groups
            if (speaking := [c for c in group if speaks_natively(c, call.kind)])]
    if not kept:
        raise bad_request(native[0], param=native[1])
    return kept


def pivot_call(call: Call, dialect: Dialect) -> Call:
    """The call as its pivot kind states it: OpenAI JSON, streamed as SSE with usage when the caller streams."""
    pivot = call.extra.get(_PIVOT)
    if pivot is not None:
        return pivot
    payload = dialect.request(call)
    stream = call.stream and dialect.via == kinds.CHAT
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    endpoint, path = _PIVOT_PATHS[dialect.via]
    pivot = call.extra[_PIVOT] = Call(
        family="openai", endpoint=endpoint, path=path, model=call.model, body=orjson.dumps(payload),
        content_type="application/json", request_id=call.request_id, client_ip=call.client_ip, payload=payload,
        stream=stream, sse=stream, include_usage=stream, max_output_tokens=call.max_output_tokens, kind=dialect.via,
    )
    return pivot


class Bridged(Adaptor):
    """A channel's adaptor fed the pivot form of a call of another dialect."""

    def __init__(self, inner: Adaptor, dialect: Dialect) -> None:
        self.type = inner.type
        self.kinds = frozenset({dialect.kind})
        self._inner = inner
        self._dialect = dialect

    async def prepare(self, call: Call, target: Target, services: Services) -> None:
        await self._inner.prepare(pivot_call(call, self._dialect), target, services)

    def build_request(self, call: Call, target: Target) -> UpstreamRequest:
        return self._inner.build_request(pivot_call(call, self._dialect), target)

    async def read_reply(self, call: Call, response: aiohttp.ClientResponse) -> Reply:
        reply = await self._inner.read_reply(pivot_call(call, self._dialect), response)
        data = orjson.loads(reply.body)
        if not isinstance(data, dict):
            raise ValueError("the pivot reply is not a JSON object")
        body = self._dialect.reply(call, data, reply.usage)
        return Reply(reply.status, body, "application/json", reply.usage, reply.headers)

    def stream_reply(self, call: Call, response: aiohttp.ClientResponse) -> ReplyStream:
        pivot = self._inner.stream_reply(pivot_call(call, self._dialect), response)
        return Repivoted(pivot, self._dialect.stream(call))

    def upstream_error(self, call: Call, status: int, body: bytes) -> RelayError:
        return self._inner.upstream_error(pivot_call(call, self._dialect), status, body)

    def stream_content_type(self, call: Call, response: aiohttp.ClientResponse) -> str:
        return self._dialect.stream_content_type(call)


class Repivoted(ReplyStream):
    """The pivot's SSE stream, translated event by event into the caller's dialect; usage is the pivot's."""

    def __init__(self, pivot: ReplyStream, translator: StreamTranslator) -> None:
        self._pivot = pivot
        self._translator = translator

    def __aiter__(self) -> AsyncIterator[bytes]:
        return translated(self._pivot, self._translator)

    def usage(self) -> Usage | None:
        return self._pivot.usage()
