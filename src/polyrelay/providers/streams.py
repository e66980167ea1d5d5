"""Upstream server-sent-event streams that polyrelay translates or watches for usage.

``TranslatedStream`` turns another protocol's events into the caller's (Gemini or
Anthropic -> OpenAI chunks); ``ObservedStream`` forwards bytes untouched as they
arrive and only reads usage from them (native pass-through paths). Both share one
incremental SSE decoder, so the per-protocol code is a pure event -> bytes function
that the benchmark can time on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

import aiohttp

from polyrelay.billing.meter import Usage
from polyrelay.providers.base import ReplyStream

Event = tuple[bytes, bytes]  # (event name, data); the name is b"" when the event has none


class SSEDecoder:
    """Splits a byte stream into complete events; tolerant of CRLF and of events cut across reads."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[Event]:
        buffer = self._pending + chunk if self._pending else chunk
        if b"\r" in buffer:
            # A CRLF cut across reads leaves a lone "\r" pending; it is normalised with its LF next time.
            buffer = buffer.replace(b"\r\n", b"\n")
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self._pending = buffer
            return []
        self._pending = buffer[cut + 2 :]
        events = []
        for block in buffer[:cut].split(b"\n\n"):
            if (event := _parse(block)) is not None:
                events.append(event)
        return events

    def flush(self) -> list[Event]:
        """The last event when the upstream closed without a trailing blank line."""
        rest, self._pending = self._pending.replace(b"\r\n", b"\n").strip(), b""
        event = _parse(rest) if rest else None
        return [event] if event is not None else []


def _parse(block: bytes) -> Event | None:
    # Fast paths for the two shapes real upstreams send: "data: x" and "event: n\ndata: x".
    if block.startswith(b"data: ") and b"\n" not in block:
        return b"", block[6:]
    if block.startswith(b"event: "):
        cut = block.find(b"\n")
        if cut > 0 and block.startswith(b"data: ", cut + 1) and block.find(b"\n", cut + 1) < 0:
            return block[7:cut], block[cut + 7 :]
    name = b""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    if not data:
        return None
    return name, data[0] if len(data) == 1 else b"\n".join(data)


class StreamTranslator(Protocol):
    """One stream's protocol translation: pure, synchronous, fed event by event."""

    def feed(self, name: bytes, data: bytes) -> bytes:
        """The caller's bytes for one upstream event (possibly none)."""

    def end(self) -> bytes:
        """The caller's closing bytes once the upstream finished cleanly."""

    def usage(self) -> Usage | None: ...


class UsageWatcher(Protocol):
    def observe(self, name: bytes, data: bytes) -> None: ...

    def usage(self) -> Usage | None: ...


async def translated(chunks: AsyncIterable[bytes], translator: StreamTranslator) -> AsyncIterator[bytes]:
    """The caller's bytes for an upstream SSE byte stream, translated event by event."""
    decoder, translate = SSEDecoder(), translator.feed
    async for chunk in chunks:
        out = b"".join([translate(name, data) for name, data in decoder.feed(chunk)])
        if out:
            yield out
    tail = b"".join([translate(name, data) for name, data in decoder.flush()]) + translator.end()
    if tail:
        yield tail


class TranslatedStream(ReplyStream):
    def __init__(self, response: aiohttp.ClientResponse, translator: StreamTranslator) -> None:
        self._response = response
        self._translator = translator

    def __aiter__(self) -> AsyncIterator[bytes]:
        return translated(self._response.content.iter_any(), self._translator)

    def usage(self) -> Usage | None:
        return self._translator.usage()


class ObservedStream(ReplyStream):
    """Bytes flow to the caller as they arrive; a copy is decoded only to read usage."""

    def __init__(self, response: aiohttp.ClientResponse, watcher: UsageWatcher, sse: bool = True) -> None:
        self._response = response
        self._watcher = watcher
        self._sse = sse

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if not self._sse:  # one JSON document streamed in pieces: read usage once it is whole
            body: list[bytes] = []
            async for chunk in self._response.content.iter_any():
                body.append(chunk)
                yield chunk
            self._watcher.observe(b"", b"".join(body))
            return
        decoder, observe = SSEDecoder(), self._watcher.observe
        async for chunk in self._response.content.iter_any():
            for name, data in decoder.feed(chunk):  # before yielding: a caller may leave at the yield
                observe(name, data)
            yield chunk
        for name, data in decoder.flush():
            observe(name, data)

    def usage(self) -> Usage | None:
        return self._watcher.usage()
