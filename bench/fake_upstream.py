"""A deliberately cheap fake OpenAI upstream for the benchmark (loopback only).

Raw asyncio Protocol on uvloop, HTTP/1.1 keep-alive, canned bytes: no framework,
no JSON encoding per request. Any POST answers a chat completion:

- non-streaming: one ``chat.completion`` JSON with a usage block (Content-Length);
- ``"stream": true``: 14 ``chat.completion.chunk`` SSE events, then (only when the body
  asks for ``stream_options.include_usage``) a usage-only chunk with ``choices: []``,
  then ``data: [DONE]``; each event is one chunk of chunked transfer encoding, all
  written with a single ``transport.write``.

Usage: python bench/fake_upstream.py --port N   (prints "ready" on stdout when listening)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys

MODEL = "bench-model"
_CREATED = 1_700_000_000

_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": _CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! This is a canned answer from the bench upstream."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 14, "total_tokens": 26},
    },
    separators=(",", ":"),
).encode()


def _chunk_event(delta: dict, finish: str | None) -> bytes:
    data = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def _stream_events(include_usage: bool) -> list[bytes]:
    words = ["Hello", "!", " This", " is", " a", " canned", " streamed", " answer", " from", " the", " bench", " upstream", "."]
    events = [_chunk_event({"role": "assistant", "content": ""}, None)]
    events += [_chunk_event({"content": word}, None) for word in words]  # 1 + 13 = 14 chunks
    events[-1] = _chunk_event({"content": words[-1]}, "stop")
    assert len(events) == 14
    if include_usage:
        usage = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": MODEL,
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 14, "total_tokens": 26},
        }
        events.append(b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def _chunked(events: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


RESPONSE_JSON = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(_COMPLETION)
    + _COMPLETION
)
_STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
RESPONSE_STREAM_USAGE = _STREAM_HEAD + _chunked(_stream_events(True))
RESPONSE_STREAM = _STREAM_HEAD + _chunked(_stream_events(False))
RESPONSE_OTHER = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_INCLUDE_USAGE = re.compile(rb'"include_usage"\s*:\s*true')


class Upstream(asyncio.Protocol):
    __slots__ = ("transport", "buffer")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                break
            match = _CONTENT_LENGTH.search(buffer, 0, head_end + 2)
            length = int(match.group(1)) if match else 0
            end = head_end + 4 + length
            if len(buffer) < end:
                break
            if buffer.startswith(b"GET"):
                self.transport.write(RESPONSE_OTHER)
            else:
                body = buffer[head_end + 4 : end]
                if _STREAM_TRUE.search(body):
                    self.transport.write(RESPONSE_STREAM_USAGE if _INCLUDE_USAGE.search(body) else RESPONSE_STREAM)
                else:
                    self.transport.write(RESPONSE_JSON)
            buffer = buffer[end:]
        self.buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        self.buffer = b""


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, host, port, backlog=1024, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if not args.host.startswith("127."):
        sys.exit("loopback only")
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
