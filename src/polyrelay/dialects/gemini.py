"""Gemini callers on any chat channel: their OpenAI chat pivot's replies and streams as Gemini's.

The request side is ``gemini_request``. A stream is written as Google writes it: SSE
events ``data: {...}\r\n\r\n`` with ``alt=sse`` (what the SDK asks for), else one JSON
array sent element by element. OpenAI streams a tool call's arguments in fragments and
Gemini sends a functionCall whole, so calls are held until their choice finishes; the
finishing event also waits for the pivot's usage chunk, which follows it, so it carries
``usageMetadata`` as Google's last event does.
"""

from __future__ import annotations

from typing import Any

import orjson

from polyrelay import kinds
from polyrelay.billing.meter import Usage
from polyrelay.dialects.base import Dialect
from polyrelay.dialects.gemini_request import chat_request, field
from polyrelay.providers.base import Call

# HTTP status -> google.rpc status, as Google's errors carry both.
RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# Every google.rpc status name: an upstream's own (kept in ``RelayError.code``) is shown as it came.
RPC_CODES = frozenset({"CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                       "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                       "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"})
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY", "tool_calls": "STOP",
           "function_call": "STOP"}


def rpc_status(status: int) -> str:
    return RPC_STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")


def thoughts_wanted(call: Call) -> bool:
    """Whether the caller asked to see thoughts (``thinkingConfig.includeThoughts``)."""
    config = field(call.payload or {}, "generationConfig")
    thinking = field(config, "thinkingConfig") if isinstance(config, dict) else None
    return isinstance(thinking, dict) and field(thinking, "includeThoughts") is True


def usage_metadata(usage: dict[str, Any] | None, fallback: Usage | None) -> dict[str, Any] | None:
    """Gemini's ``usageMetadata`` from an OpenAI usage object (else from the pivot's metered usage)."""
    if isinstance(usage, dict):
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        thoughts = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    elif fallback is not None:
        prompt, completion, cached, thoughts = fallback.prompt_tokens, fallback.completion_tokens, fallback.cached_tokens, 0
    else:
        return None
    metadata = {"promptTokenCount": prompt, "candidatesTokenCount": completion - thoughts,
                "totalTokenCount": prompt + completion}
    if cached:
        metadata["cachedContentTokenCount"] = cached
    if thoughts:
        metadata["thoughtsTokenCount"] = thoughts
    return metadata


def finish_reason(reason: Any) -> str:
    return _FINISH.get(reason, "OTHER") if isinstance(reason, str) else "STOP"


def function_call(tool_call: dict[str, Any]) -> dict[str, Any]:
    """A functionCall part; the call's id is kept so a caller who sends the turn back is matched exactly."""
    function = tool_call.get("function") or {}
    raw = function.get("arguments") or "{}"
    try:
        args = orjson.loads(raw)
    except orjson.JSONDecodeError:
        args = {"arguments": raw}  # an upstream's malformed arguments, kept visible rather than lost
    if not isinstance(args, dict):
        args = {"value": args}
    call: dict[str, Any] = {"name": function.get("name", ""), "args": args}
    if tool_call.get("id"):
        call["id"] = tool_call["id"]
    return {"functionCall": call}


def generate_reply(call: Call, pivot: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
    """A GenerateContentResponse from a ``chat.completion`` (``usage``: the pivot's metered usage, if it has none)."""
    thoughts = thoughts_wanted(call)
    candidates = []
    for choice in pivot.get("choices") or ():
        message = choice.get("message") or {}
        parts: list[dict[str, Any]] = []
        if thoughts and isinstance(message.get("reasoning_content"), str) and message["reasoning_content"]:
            parts.append({"text": message["reasoning_content"], "thought": True})
        if isinstance(message.get("content"), str) and message["content"]:
            parts.append({"text": message["content"]})
        parts += [function_call(tool_call) for tool_call in message.get("tool_calls") or ()]
        candidates.append({"content": {"parts": parts, "role": "model"},
                           "finishReason": finish_reason(choice.get("finish_reason")),
                           "index": choice.get("index", len(candidates))})
    reply: dict[str, Any] = {"candidates": candidates}
    if (metadata := usage_metadata(pivot.get("usage"), usage)) is not None:
        reply["usageMetadata"] = metadata
    reply["modelVersion"] = call.model
    reply["responseId"] = str(pivot.get("id") or call.request_id)
    return reply




class GeminiStream:
    """``chat.completion.chunk`` events in, Gemini stream events out (SSE or the JSON-array form)."""

    __slots__ = ("_model", "_sse", "_thoughts", "_id", "_events", "_calls", "_finished", "_usage")

    def __init__(self, call: Call) -> None:
        self._model = call.model
        self._sse = call.sse
        self._thoughts = thoughts_wanted(call)
        self._id = call.request_id
        self._events = 0
        self._calls: dict[int, dict[int, dict[str, Any]]] = {}  # choice -> tool index -> call so far
        self._finished: list[dict[str, Any]] = []  # finished candidates, waiting for the usage chunk
        self._usage: dict[str, Any] | None = None

    def feed(self, name: bytes, data: bytes) -> bytes:
        if data == b"[DONE]":
            return self._flush()
        event = orjson.loads(data)
        if not isinstance(event, dict):
            return b""
        if isinstance(event.get("error"), dict):
            return self._flush() + self._error(event["error"])
        if self._events == 0 and isinstance(event.get("id"), str):
            self._id = event["id"]
        candidates = []
        for choice in event.get("choices") or ():
            index = choice.get("index", 0)
            parts = self._parts(index, choice.get("delta") or {})
            reason = choice.get("finish_reason")
            if reason:
                parts += [function_call(call) for _, call in sorted(self._calls.pop(index, {}).items())]
                self._finished.append({"content": {"parts": parts, "role": "model"},
                                       "finishReason": finish_reason(reason), "index": index})
            elif parts:
                candidates.append({"content": {"parts": parts, "role": "model"}, "index": index})
        out = self._event({"candidates": candidates}) if candidates else b""
        if isinstance(event.get("usage"), dict):
            self._usage = event["usage"]
            out += self._flush()
        return out

    def _parts(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        if self._thoughts and isinstance(delta.get("reasoning_content"), str) and delta["reasoning_content"]:
            parts.append({"text": delta["reasoning_content"], "thought": True})
        if isinstance(delta.get("content"), str) and delta["content"]:
            parts.append({"text": delta["content"]})
        for fragment in delta.get("tool_calls") or ():
            calls = self._calls.setdefault(index, {})
            call = calls.setdefault(fragment.get("index", len(calls)), {"id": "", "function": {"name": "", "arguments": ""}})
            function = fragment.get("function") or {}
            call["id"] = call["id"] or fragment.get("id") or ""
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""
        return parts

    def _flush(self) -> bytes:
        """The finished candidates, with the usage so far, as one event (nothing when neither is pending)."""
        if not self._finished and self._usage is None:
            return b""
        event: dict[str, Any] = {"candidates": self._finished} if self._finished else {}
        if (metadata := usage_metadata(self._usage, None)) is not None:
            event["usageMetadata"] = metadata
        self._finished, self._usage = [], None
        return self._event(event)

    def _event(self, event: dict[str, Any]) -> bytes:
        event["modelVersion"] = self._model
        event["responseId"] = self._id
        self._events += 1
        if self._sse:
            return b"data: " + orjson.dumps(event) + b"\r\n\r\n"
        return (b"[" if self._events == 1 else b"\n,") + orjson.dumps(event)

    def _error(self, error: dict[str, Any]) -> bytes:
        status = error.get("status") if isinstance(error.get("status"), int) else error.get("code")
        code = status if isinstance(status, int) and 400 <= status <= 599 else 500
        body = {"error": {"code": code, "message": str(error.get("message") or "The upstream failed."),
                          "status": rpc_status(code)}}
        self._events += 1
        if self._sse:
            return b"data: " + orjson.dumps(body) + b"\r\n\r\n"
        return (b"[" if self._events == 1 else b"\n,") + orjson.dumps(body)

    def end(self) -> bytes:
        tail = self._flush()
        if self._sse:
            return tail
        return tail + (b"]" if self._events else b"[]")

    def usage(self) -> Usage | None:
        return None  # the pivot stream's usage is billed


class GeminiDialect(Dialect):
    kind = kinds.GEMINI
    via = kinds.CHAT

    def request(self, call: Call) -> dict[str, Any]:
        return chat_request(call)

    def reply(self, call: Call, pivot: dict[str, Any], usage: Usage | None) -> bytes:
        return orjson.dumps(generate_reply(call, pivot, usage))

    def stream(self, call: Call) -> GeminiStream:
        return GeminiStream(call)

    def stream_content_type(self, call: Call) -> str:
        return "text/event-stream" if call.sse else "application/json"


