"""OpenAI chat <-> Anthropic Messages API: request, reply, stream and usage translation.

Pure functions (no I/O): images arrive already fetched via ``image_parts``; the
stream translator is fed one SSE event at a time, so the benchmark can time it alone.
"""

from __future__ import annotations

from typing import Any

import orjson

from polyrelay.billing.meter import Usage
from polyrelay.errors import bad_request
from polyrelay.providers import chat_out
from polyrelay.providers.chat_in import (
    arguments_of,
    image_url_of,
    max_output_tokens,
    messages_of,
    parts_of,
    stop_list,
    text_of,
)
from polyrelay.providers.chat_out import ChunkWriter
from polyrelay.providers.image_parts import inline
from polyrelay.providers.base import Call

DEFAULT_MAX_TOKENS = 4096
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic error type -> (HTTP status, OpenAI error type).
ERROR_TYPES = {
    "invalid_request_error": (400, "invalid_request_error"),
    "authentication_error": (401, "authentication_error"),
    "permission_error": (403, "permission_error"),
    "not_found_error": (404, "invalid_request_error"),
    "request_too_large": (413, "invalid_request_error"),
    "rate_limit_error": (429, "rate_limit_error"),
    "api_error": (500, "server_error"),
    "overloaded_error": (529, "server_error"),
}
_JSON_OBJECT = "Respond with one valid JSON object only: no prose, no code fences."


# ---------------------------------------------------------------- request

def chat_request(call: Call, options: dict[str, Any], upstream_model: str, fetch_images: bool) -> dict[str, Any]:
    payload = call.payload or {}
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for m, message in enumerate(messages_of(payload)):
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(text_of(message.get("content")))
        elif role == "user":
            _add(turns, "user", _blocks(call, message.get("content"), m, fetch_images))
        elif role == "assistant":
            blocks = [b for b in _blocks(call, message.get("content"), m, fetch_images) if b["type"] == "text"]
            for t, tool_call in enumerate(message.get("tool_calls") or ()):
                function = tool_call.get("function") or {}
                blocks.append({"type": "tool_use", "id": tool_call.get("id", ""), "name": function.get("name", ""),
                               "input": arguments_of(function, f"messages[{m}].tool_calls[{t}]")})
            _add(turns, "assistant", blocks)
        elif role == "tool":
            result = {"type": "tool_result", "tool_use_id": message.get("tool_call_id", ""),
                      "content": text_of(message.get("content"))}
            _add(turns, "user", [result])
        else:
            raise bad_request(f"messages[{m}] has a role ({role!r}) Anthropic channels cannot take.",
                              param=f"messages[{m}].role")
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": turns,
        "max_tokens": max_output_tokens(payload) or int(options.get("default_max_tokens", DEFAULT_MAX_TOKENS)),
    }
    system_text = "\n\n".join(s for s in system if s)
    if instruction := _json_instruction(payload.get("response_format")):
        system_text = f"{system_text}\n\n{instruction}" if system_text else instruction
    if system_text:
        body["system"] = system_text
    if isinstance(payload.get("temperature"), (int, float)):
        body["temperature"] = min(float(payload["temperature"]), 1.0)  # OpenAI's range is 0..2, Anthropic's 0..1
    if payload.get("top_p") is not None:
        body["top_p"] = payload["top_p"]
    if (stop := stop_list(payload.get("stop"))) is not None:
        body["stop_sequences"] = stop
    if call.stream:
        body["stream"] = True
    if isinstance(payload.get("user"), str):
        body["metadata"] = {"user_id": payload["user"]}
    if tools := _tools(payload):
        body["tools"] = tools
        if (choice := _tool_choice(payload.get("tool_choice"), payload.get("parallel_tool_calls"))) is not None:
            body["tool_choice"] = choice
    return body


def _add(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Append a turn; consecutive turns of one role merge (the API wants them alternating)."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _blocks(call: Call, content: Any, m: int, fetch_images: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p, part in enumerate(parts_of(content)):
        kind = part.get("type")
        where = f"messages[{m}].content[{p}]"
        if kind == "text":
            if part.get("text"):  # the API refuses empty text blocks
                out.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            url = image_url_of(part)
            if not fetch_images and url.startswith(("http://", "https://")):
                out.append({"type": "image", "source": {"type": "url", "url": url}})
            else:
                media_type, data = inline(call, url, where + ".image_url")
                out.append({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
        else:
            raise bad_request(f"{where} has a type ({kind!r}) Anthropic channels cannot take.", param=where)
    return out


def _json_instruction(response_format: Any) -> str | None:
    """The Messages API has no JSON mode: ask for it in the system prompt (and give the schema)."""
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_object":
        return _JSON_OBJECT
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return _JSON_OBJECT + (" It must match this JSON Schema: " + orjson.dumps(schema).decode() if schema else "")
    return None


def _tools(payload: dict[str, Any]) -> list[dict[str, Any]]:
    tools = []
    for tool in payload.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict):
            continue
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        entry: dict[str, Any] = {"name": function.get("name", ""), "input_schema": schema}
        if function.get("description"):
            entry["description"] = function["description"]
        tools.append(entry)
    return tools


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None = None
    if choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and (name := (choice.get("function") or {}).get("name")):
        out = {"type": "tool", "name": name}
    if parallel is False:
        out = out or {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


# ---------------------------------------------------------------- usage and reply

class UsageCounter:
    """Anthropic usage: ``input_tokens`` excludes cache reads and writes, OpenAI's prompt includes them.

    So ``prompt_tokens`` = ``input_tokens`` + ``cache_read_input_tokens`` + ``cache_creation_input_tokens``
    (what an OpenAI caller sees). Cache reads become ``cached_tokens``, billed at the model's
    ``cached_input_per_mtok``; cache writes become ``cache_write_tokens``, billed at its
    ``cache_write_per_mtok``; the rest at ``input_per_mtok`` (either price absent: the input price).
    """

    __slots__ = ("input", "cache_read", "cache_write", "output", "seen")

    def __init__(self) -> None:
        self.input = self.cache_read = self.cache_write = self.output = 0
        self.seen = False

    def add(self, usage: Any) -> None:
        """Fields of a ``usage`` object; later values replace earlier ones (they are cumulative)."""
        if not isinstance(usage, dict):
            return
        self.seen = True
        if usage.get("input_tokens") is not None:
            self.input = int(usage["input_tokens"])
        if usage.get("cache_read_input_tokens") is not None:
            self.cache_read = int(usage["cache_read_input_tokens"])
        if usage.get("cache_creation_input_tokens") is not None:
            self.cache_write = int(usage["cache_creation_input_tokens"])
        if usage.get("output_tokens") is not None:
            self.output = int(usage["output_tokens"])

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.input + self.cache_read + self.cache_write,
            completion_tokens=self.output,
            cached_tokens=self.cache_read,
            cache_write_tokens=self.cache_write,
        )


def finish_reason(reason: Any) -> str | None:
    return _FINISH.get(reason, "stop") if reason else None


def chat_reply(call: Call, data: dict[str, Any]) -> tuple[bytes, Usage]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data.get("content") or ():
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(chat_out.tool_call(block.get("id", ""), block.get("name", ""),
                                            orjson.dumps(block.get("input") or {}).decode()))
    text = "".join(texts)
    counter = UsageCounter()
    counter.add(data.get("usage"))
    usage = counter.usage() if counter.seen else chat_out.counted_usage(call, text)
    message = chat_out.message(text if text or not calls else None, calls)
    body = chat_out.completion(call.model, [(message, finish_reason(data.get("stop_reason") or "end_turn"))], usage)
    return body, usage


# ---------------------------------------------------------------- stream

class ChatStream:
    """Anthropic SSE events -> ``chat.completion.chunk`` events, one event at a time."""

    __slots__ = ("_call", "_out", "_tools", "_counter", "_produced")

    def __init__(self, call: Call) -> None:
        self._call = call
        self._out = ChunkWriter(call.model, call.include_usage)
        self._tools: dict[int, int] = {}  # content block index -> OpenAI tool_calls index
        self._counter = UsageCounter()
        self._produced: list[str] = []

    def feed(self, name: bytes, data: bytes) -> bytes:
        event = orjson.loads(data)
        kind = event.get("type")
        out = self._out
        if kind == "content_block_delta":  # the hot path: one per token or so
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                self._produced.append(delta.get("text", ""))
                return out.delta({"content": delta.get("text", "")})
            if delta.get("type") == "input_json_delta":
                index = self._tools.get(event.get("index", -1))
                if index is not None:
                    self._produced.append(delta.get("partial_json", ""))
                    return out.delta({"tool_calls": [{"index": index, "function": {"arguments": delta.get("partial_json", "")}}]})
            return b""  # thinking and signature deltas are not part of OpenAI's chat format
        if kind == "message_start":
            self._counter.add((event.get("message") or {}).get("usage"))
            return out.delta({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tools[event.get("index", 0)] = len(self._tools)
                return out.delta({"tool_calls": [{"index": index, "id": block.get("id", ""), "type": "function",
                                                  "function": {"name": block.get("name", ""), "arguments": ""}}]})
            if block.get("type") == "text" and block.get("text"):
                self._produced.append(block["text"])
                return out.delta({"content": block["text"]})
            return b""
        if kind == "message_delta":
            self._counter.add(event.get("usage"))
            return out.delta({}, finish_reason((event.get("delta") or {}).get("stop_reason")))
        if kind == "error":
            error = event.get("error") or {}
            status, type_ = ERROR_TYPES.get(error.get("type"), (500, "server_error"))
            return out.error(status, str(error.get("message", "")), type_, error.get("type"))
        return b""  # ping, content_block_stop, message_stop

    def end(self) -> bytes:
        if not self._out.include_usage:
            return chat_out.DONE
        return self._out.usage(self.usage() or Usage()) + chat_out.DONE

    def usage(self) -> Usage | None:
        if self._counter.seen:
            return self._counter.usage()
        return chat_out.counted_usage(self._call, "".join(self._produced))


class UsageWatcher:
    """Reads usage from a native Messages stream passing through."""

    __slots__ = ("_counter",)

    def __init__(self) -> None:
        self._counter = UsageCounter()

    def observe(self, name: bytes, data: bytes) -> None:
        if name not in (b"message_start", b"message_delta") and b'"usage"' not in data:
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if event.get("type") == "message_start":
            self._counter.add((event.get("message") or {}).get("usage"))
        elif event.get("type") == "message_delta":
            self._counter.add(event.get("usage"))

    def usage(self) -> Usage | None:
        return self._counter.usage() if self._counter.seen else Usage(source="request")
