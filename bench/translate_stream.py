"""Micro-benchmark: CPU time polyrelay adds per streamed chunk when it translates a stream.

Times the pure translators (Gemini SSE event -> OpenAI chunk, Anthropic SSE event ->
OpenAI chunk) fed realistic token-sized events, with and without the SSE decoding of
the raw bytes, and the pass-through usage watcher of the native paths for contrast.
No network, no event loop: this is the per-chunk cost on top of relaying bytes.

    .venv/bin/python bench/translate_stream.py [--events 200] [--rounds 200]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson

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
    print(f"{label:<48} {best / (rounds * per_round) * 1e6:7.2f} us/chunk")


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


if __name__ == "__main__":
    main()
