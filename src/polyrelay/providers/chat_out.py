"""OpenAI chat output, built from any upstream's answer: completions, chunks, usage, SSE framing.

Every translating adaptor (Gemini, Anthropic) produces the caller's bytes through these
helpers, so the shapes the ``openai`` SDK sees are identical whichever provider answered.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from polyrelay.billing import tokenizer
from polyrelay.billing.meter import Usage
from polyrelay.providers.base import Call

DONE = b"data: [DONE]\n\n"


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def tool_call_id() -> str:
    """For upstreams (Gemini) whose function calls carry no id; the caller needs one to answer."""
    return f"call_{uuid.uuid4().hex[:24]}"


def sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def usage_object(usage: Usage, reasoning_tokens: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }


def tool_call(id_: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


def message(text: str | None, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        out["tool_calls"] = tool_calls
    return out


def completion(
    model: str,
    choices: list[tuple[dict[str, Any], str | None]],
    usage: Usage | None,
    reasoning_tokens: int = 0,
    id_: str | None = None,
) -> bytes:
    """A whole ``chat.completion``; ``choices`` are (message, finish_reason) pairs in order."""
    body: dict[str, Any] = {
        "id": id_ or new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {"index": index, "message": msg, "logprobs": None, "finish_reason": finish}
            for index, (msg, finish) in enumerate(choices)
        ],
    }
    if usage is not None:
        body["usage"] = usage_object(usage, reasoning_tokens)
    return orjson.dumps(body)


class ChunkWriter:
    """Frames ``chat.completion.chunk`` events of one stream (same id, created and model)."""

    __slots__ = ("id", "created", "model", "include_usage", "_head")

    def __init__(self, model: str, include_usage: bool, id_: str | None = None) -> None:
        self.id = id_ or new_id()
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        # The constant prefix of every chunk, serialised once per stream.
        self._head = orjson.dumps(
            {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": model,
             "system_fingerprint": None}
        )[:-1]

    def delta(self, delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
        choices = orjson.dumps([{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}])
        return b"data: " + self._head + b',"choices":' + choices + b"}\n\n"

    def usage(self, usage: Usage, reasoning_tokens: int = 0) -> bytes:
        """The usage-only last chunk, or nothing when the caller did not ask for it."""
        if not self.include_usage:
            return b""
        body = orjson.dumps(usage_object(usage, reasoning_tokens))
        return b"data: " + self._head + b',"choices":[],"usage":' + body + b"}\n\n"

    @staticmethod
    def error(status: int, message: str, type_: str, code: str | None) -> bytes:
        """A mid-stream upstream error; the ``openai`` SDK raises APIError on a chunk with ``error``."""
        return sse({"error": {"message": message, "type": type_, "param": None, "code": code, "status": status}})


def counted_usage(call: Call, produced: str) -> Usage:
    """Usage by local count, for a translated reply whose upstream reported none (a cut stream)."""
    messages = (call.payload or {}).get("messages") or []
    return Usage(
        prompt_tokens=tokenizer.count_messages(call.model, messages),
        completion_tokens=tokenizer.count_text(call.model, produced),
        source="counted",
    )
