"""Micro-benchmark: CPU time polyrelay adds per streamed chunk when it translates a stream.

Times the pure translators fed realistic token-sized events, with and without the SSE
decoding of the raw bytes: the channel side (Gemini or Anthropic event -> OpenAI chunk),
the caller side of every bridged dialect (OpenAI chunk -> Claude, Responses or Gemini
event), the two hops of a bridged dialect on a translating channel (e.g. Anthropic event ->
chunk -> Responses event), and the pass-through usage watcher of the native paths for
contrast. No network, no event loop: this is the per-chunk cost on top of relaying bytes.

    .venv/bin/python bench/translate_stream.py [--events 200] [--rounds 200]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson

from polyrelay.dialects.registry import DIALECTS
from polyrelay.providers import anthropic_chat, gemini_chat
from polyrelay.providers.streams import SSEDecoder
from polyrelay.providers.base import Call

WORDS = ["Hello", " there", ",", " this", " is", " a", " streamed", " answer", " of", " tokens", "."]


def _call() -> Call:
    payload = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    return Call(family="openai", endpoint="chat.completions", path="/v1/chat/completions", model="m",
                body=orjson.dumps(payload), content_type="application/json", request_id="bench", payload=payload,
                stream=True, sse=True)


def gemini_events(n: int) -> list[bytes]:
    events = []
    for i in range(n):
        candidate = {"content": {"parts": [{"text": WORDS[i % len(WORDS)]}], "role": "model"}, "index": 0}
        if i == n - 1:
            candidate["finishReason"] = "STOP"
        usage = {"promptTokenCount": 11, "candidatesTokenCount": i + 1, "totalTokenCount": 12 + i}
        event = {"candidates": [candidate], "usageMetadata": usage, "modelVersion": "gemini-1.5-flash",
                 "responseId": "abc"}
        events.append(b"data: " + orjson.dumps(event) + b"\r\n\r\n")
    return events


def anthropic_events(n: int) -> list[bytes]:
    def event(name: str, data: dict) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [],
               "stop_reason": None, "usage": {"input_tokens": 9, "output_tokens": 1}}
    events = [event("message_start", {"type": "message_start", "message": message}),
              event("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}})]
    for i in range(n - 4):
        events.append(event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                    "delta": {"type": "text_delta", "text": WORDS[i % len(WORDS)]}}))
    events.append(event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                          "usage": {"output_tokens": n}}))
    return events


def chat_events(n: int) -> list[bytes]:
    """What an OpenAI-compatible upstream streams: a role chunk, text chunks, the finish, usage, [DONE]."""
    def chunk(delta: dict, finish: str | None = None) -> bytes:
        data = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(data) + b"\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": WORDS[i % len(WORDS)]}) for i in range(n - 4)]
    events.append(chunk({}, "stop"))
    usage = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
             "usage": {"prompt_tokens": 9, "completion_tokens": n, "total_tokens": 9 + n}}
    return events + [b"data: " + orjson.dumps(usage) + b"\n\n", b"data: [DONE]\n\n"]


# A streamed call of each bridged dialect, as its family builds it.
_DIALECT_CALLS = {
    "claude": ("anthropic", "messages", {"max_tokens": 1024, "messages": [{"role": "user", "content": "Hi"}]}),
    "responses": ("openai", "responses", {"input": "Hi"}),
    "gemini": ("gemini", "gemini.streamGenerateContent", {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}),
}


def _dialect_call(kind: str) -> Call:
    family, endpoint, payload = _DIALECT_CALLS[kind]
    payload = {"model": "m", **payload, "stream": True}
    return Call(family=family, endpoint=endpoint, path="/bench", model="m", body=orjson.dumps(payload),
                content_type="application/json", request_id="bench", payload=payload, stream=True, sse=True)


def _pairs(raw: list[bytes]) -> list[tuple[bytes, bytes]]:
    decoder = SSEDecoder()
    return [pair for chunk in raw for pair in decoder.feed(chunk)]


def _time(label: str, rounds: int, per_round: int, body: Callable[[], None], repeats: int = 5) -> None:
    """Best of ``repeats`` (CPU time): the least disturbed run is the translation's own cost."""
    body()  # warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(rounds):
            body()
        best = min(best, time.process_time() - started)
    print(f"{label:<58} {best / (rounds * per_round) * 1e6:7.2f} us/chunk")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    call = _call()
    for name, raw, translator, watcher in (
        ("gemini", gemini_events(args.events), gemini_chat.ChatStream, lambda: gemini_chat.UsageWatcher(call)),
        ("anthropic", anthropic_events(args.events), anthropic_chat.ChatStream, anthropic_chat.UsageWatcher),
    ):
        pairs = _pairs(raw)

        def translate_only() -> None:
            feed = translator(call).feed
            for event_name, data in pairs:
                feed(event_name, data)

        def decode_and_translate() -> None:
            decoder, feed = SSEDecoder(), translator(call).feed
            for chunk in raw:
                for event_name, data in decoder.feed(chunk):
                    feed(event_name, data)

        def watch_only() -> None:
            decoder, observe = SSEDecoder(), watcher().observe
            for chunk in raw:
                for event_name, data in decoder.feed(chunk):
                    observe(event_name, data)

        _time(f"{name}: translate (event -> OpenAI chunk)", args.rounds, len(pairs), translate_only)
        _time(f"{name}: decode SSE + translate", args.rounds, len(pairs), decode_and_translate)
        _time(f"{name}: native pass-through usage watch", args.rounds, len(pairs), watch_only)

    chat_raw = chat_events(args.events)
    chat_pairs = _pairs(chat_raw)
    anthropic_raw = anthropic_events(args.events)
    for kind in _DIALECT_CALLS:
        dialect, dialect_call = DIALECTS[kind], _dialect_call(kind)

        def bridge_only() -> None:
            feed = dialect.stream(dialect_call).feed
            for event_name, data in chat_pairs:
                feed(event_name, data)

        def decode_and_bridge() -> None:
            decoder, feed = SSEDecoder(), dialect.stream(dialect_call).feed
            for chunk in chat_raw:
                for event_name, data in decoder.feed(chunk):
                    feed(event_name, data)

        def two_hops() -> None:  # the dialect on an Anthropic channel: Anthropic event -> chunk -> the dialect's
            upstream, chunks = SSEDecoder(), SSEDecoder()
            to_chat, feed = anthropic_chat.ChatStream(call).feed, dialect.stream(dialect_call).feed
            for raw_event in anthropic_raw:
                for event_name, data in upstream.feed(raw_event):
                    for pivot_name, pivot_data in chunks.feed(to_chat(event_name, data)):
                        feed(pivot_name, pivot_data)

        _time(f"{kind} bridge: translate (OpenAI chunk -> {kind})", args.rounds, len(chat_pairs), bridge_only)
        _time(f"{kind} bridge: decode SSE + translate", args.rounds, len(chat_pairs), decode_and_bridge)
        _time(f"{kind} bridge on anthropic: both hops + decodes", args.rounds, len(anthropic_raw), two_hops)


if __name__ == "__main__":
    main()
