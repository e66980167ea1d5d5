"""The incremental SSE decoder and the two stream wrappers built on it (translated and observed).

Upstream framing as the real APIs send it: Anthropic ``event: x\\ndata: {...}\\n\\n``, Gemini
``data: {...}\\r\\n\\r\\n``, OpenAI ``data: {...}\\n\\n`` ending with ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from polyrelay.billing.meter import Usage
from polyrelay.providers.streams import ObservedStream, SSEDecoder, TranslatedStream

Event = tuple[bytes, bytes]

ANTHROPIC = (
    b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":9}}}\n\n'
    b'event: ping\ndata: {"type": "ping"}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_delta","text":"a\\n\\nb"}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
ANTHROPIC_EVENTS = [
    (b"message_start", b'{"type":"message_start","message":{"usage":{"input_tokens":9}}}'),
    (b"ping", b'{"type": "ping"}'),
    (b"content_block_delta", b'{"type":"content_block_delta","delta":{"type":"text_delta","text":"a\\n\\nb"}}'),
    (b"message_stop", b'{"type":"message_stop"}'),
]
GEMINI = (
    b'data: {"candidates":[{"content":{"parts":[{"text":"Hel"}]}}]}\r\n\r\n'
    b'data: {"candidates":[{"content":{"parts":[{"text":"lo"}]}}],"usageMetadata":{"promptTokenCount":3}}\r\n\r\n'
)
GEMINI_EVENTS = [
    (b"", b'{"candidates":[{"content":{"parts":[{"text":"Hel"}]}}]}'),
    (b"", b'{"candidates":[{"content":{"parts":[{"text":"lo"}]}}],"usageMetadata":{"promptTokenCount":3}}'),
]


def decode(chunks: list[bytes]) -> list[Event]:
    decoder = SSEDecoder()
    events: list[Event] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.flush()


# ---------------------------------------------------------------- decoder

def test_whole_events_in_one_read() -> None:
    assert decode([ANTHROPIC]) == ANTHROPIC_EVENTS
    assert decode([GEMINI]) == GEMINI_EVENTS
    assert decode([b'data: {"id":1}\n\ndata: [DONE]\n\n']) == [(b"", b'{"id":1}'), (b"", b"[DONE]")]


@pytest.mark.parametrize("stream,expected", [(ANTHROPIC, ANTHROPIC_EVENTS), (GEMINI, GEMINI_EVENTS)], ids=["lf", "crlf"])
def test_an_event_cut_anywhere_across_two_reads_is_decoded_once(stream: bytes, expected: list[Event]) -> None:
    for cut in range(1, len(stream)):
        assert decode([stream[:cut], stream[cut:]]) == expected, f"cut at {cut}: {stream[cut - 5:cut + 5]!r}"


@pytest.mark.parametrize("stream,expected", [(ANTHROPIC, ANTHROPIC_EVENTS), (GEMINI, GEMINI_EVENTS)], ids=["lf", "crlf"])
def test_byte_by_byte_reads(stream: bytes, expected: list[Event]) -> None:
    assert decode([stream[i : i + 1] for i in range(len(stream))]) == expected


def test_events_come_out_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\n") == []
    assert decoder.feed(b"\ndata: tw") == [(b"", b"one")]
    assert decoder.feed(b"o\n\n") == [(b"", b"two")]
    assert decoder.flush() == []


def test_crlf_split_between_cr_and_lf() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\n\r") == []
    assert decoder.feed(b"\n") == [(b"", b"x")]
    assert decoder.flush() == []


def test_mixed_line_endings() -> None:
    assert decode([b"event: a\r\ndata: 1\n\r\ndata: 2\r\n\n"]) == [(b"a", b"1"), (b"", b"2")]


def test_field_syntax_variants() -> None:
    stream = (
        b": keep-alive comment\n\n"          # comment only: no event
        b"data:no-space\n\n"                 # the space after the colon is optional
        b"data:  two spaces\n\n"             # only one space is removed
        b"data: line 1\ndata: line 2\n\n"    # multi-line data joined with LF
        b"data:  indented\ndata:trailing \n\n"  # each line loses one optional space, nothing else
        b"id: 7\nevent:  padded \nretry: 100\ndata: z\n\n"  # id/retry ignored, name trimmed
        b"event: only-a-name\n\n"            # no data: no event
        b"data: \n\n"                        # empty data is an event
    )
    assert decode([stream]) == [
        (b"", b"no-space"), (b"", b" two spaces"), (b"", b"line 1\nline 2"), (b"", b" indented\ntrailing "),
        (b"padded", b"z"), (b"", b""),
    ]


def test_extra_blank_lines_between_events() -> None:
    assert decode([b"data: a\n\n\n\ndata: b\n\n"]) == [(b"", b"a"), (b"", b"b")]


def test_flush_returns_a_last_event_without_trailing_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: tail") == [(b"", b"a")]
    assert decoder.flush() == [(b"", b"tail")]
    assert decoder.flush() == []  # flushed once, then empty
    assert decoder.feed(b"data: again\n\n") == [(b"", b"again")]


def test_flush_of_a_crlf_tail() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: e\r\ndata: last\r\n") == []
    assert decoder.flush() == [(b"e", b"last")]


def test_flush_with_nothing_pending() -> None:
    decoder = SSEDecoder()
    assert decoder.flush() == []
    assert decoder.feed(b"data: a\n\n") == [(b"", b"a")]
    assert decoder.flush() == []


# ---------------------------------------------------------------- stream wrappers

class FakeContent:
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


class FakeResponse:
    """The part of ``aiohttp.ClientResponse`` the streams read: ``content.iter_any()``."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.content = FakeContent(chunks)


class RecordingTranslator:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.ended = 0

    def feed(self, name: bytes, data: bytes) -> bytes:
        self.events.append((name, data))
        return b"[" + name + b"|" + data + b"]" if name != b"ping" else b""

    def end(self) -> bytes:
        self.ended += 1
        return b"<end>"

    def usage(self) -> Usage | None:
        return Usage(prompt_tokens=len(self.events))


class RecordingWatcher:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def observe(self, name: bytes, data: bytes) -> None:
        self.events.append((name, data))

    def usage(self) -> Usage | None:
        return Usage(completion_tokens=len(self.events))


async def collect(stream: Any) -> list[bytes]:
    return [chunk async for chunk in stream]


async def test_translated_stream_translates_each_event_once_and_ends() -> None:
    translator = RecordingTranslator()
    chunks = [ANTHROPIC[:10], ANTHROPIC[10:70], ANTHROPIC[70:72], ANTHROPIC[72:]]
    stream = TranslatedStream(FakeResponse(chunks), translator)  # type: ignore[arg-type]
    out = await collect(stream)
    assert translator.events == ANTHROPIC_EVENTS
    assert translator.ended == 1
    assert b"" not in out  # reads that complete no event (or only a ping) send nothing
    assert b"".join(out) == b"".join(b"[" + n + b"|" + d + b"]" for n, d in ANTHROPIC_EVENTS if n != b"ping") + b"<end>"
    usage = stream.usage()
    assert usage is not None and usage.prompt_tokens == 4


async def test_translated_stream_flushes_an_unterminated_last_event_before_the_end() -> None:
    translator = RecordingTranslator()
    out = await collect(TranslatedStream(FakeResponse([b"data: a\r\n\r\ndata: b"]), translator))  # type: ignore[arg-type]
    assert b"".join(out) == b"[|a][|b]<end>"


async def test_observed_stream_forwards_bytes_untouched_and_observes_every_event() -> None:
    watcher = RecordingWatcher()
    chunks = [GEMINI[:7], GEMINI[7:60], GEMINI[60:61], GEMINI[61:]]
    stream = ObservedStream(FakeResponse(chunks), watcher)  # type: ignore[arg-type]
    assert await collect(stream) == chunks
    assert watcher.events == GEMINI_EVENTS
    usage = stream.usage()
    assert usage is not None and usage.completion_tokens == 2


async def test_observed_stream_reads_a_chunk_before_handing_it_over() -> None:
    """A caller that disconnects right after a chunk must still be billed for what that chunk held."""
    watcher = RecordingWatcher()
    stream = ObservedStream(FakeResponse([GEMINI, b"data: never read\n\n"]), watcher)  # type: ignore[arg-type]
    async for chunk in stream:
        assert chunk == GEMINI
        assert watcher.events == GEMINI_EVENTS
        break


async def test_observed_non_sse_body_is_observed_once_whole() -> None:
    watcher = RecordingWatcher()
    body = orjson.dumps([{"candidates": []}, {"usageMetadata": {"promptTokenCount": 3}}])
    chunks = [body[:5], body[5:]]
    assert await collect(ObservedStream(FakeResponse(chunks), watcher, sse=False)) == chunks  # type: ignore[arg-type]
    assert watcher.events == [(b"", body)]


# ---------------------------------------------------------------- edge cases once broken

def test_flush_keeps_complete_events_apart_behind_a_trailing_cr() -> None:
    """A read ending in CR makes ``feed`` hold back the whole buffer, complete events included.

    If the upstream then closes (its last blank line cut after the CR), ``flush`` parses the whole
    held buffer as one block: two events become one whose data is ``A\\nB`` (invalid JSON for the
    translators, lost usage for the watchers). Expected: the two events, each once.
    """
    decoder = SSEDecoder()
    events = decoder.feed(b'data: {"n":1}\r\n\r\ndata: {"n":2}\r\n\r')
    events += decoder.flush()
    assert events == [(b"", b'{"n":1}'), (b"", b'{"n":2}')]
