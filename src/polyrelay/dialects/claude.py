"""Claude Messages (``POST /v1/messages``) <-> the OpenAI chat pivot: request, reply, stream, errors.

Callers of the anthropic SDK (and Claude Code) reach any channel that serves chat. Pure
functions: no I/O; images travel as ``image_url`` parts that the channel's own adaptor
fetches or inlines as it does for chat callers. What the pivot cannot express (server
tools, documents from the Files API, MCP servers) is refused with a 400, never dropped;
hints with no effect on the answer (``cache_control``, ``service_tier``, ``speed``,
``context_management``) are.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from polyrelay import kinds
from polyrelay.billing import tokenizer
from polyrelay.billing.meter import Usage
from polyrelay.dialects.base import Dialect
from polyrelay.errors import RelayError, bad_request
from polyrelay.providers.base import Call
from polyrelay.providers.openai import usage_from_openai

# OpenAI finish_reason -> Claude stop_reason.
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
         "content_filter": "refusal"}
# HTTP status -> Anthropic error type, which its SDK classifies by.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_KNOWN_ERRORS = frozenset(ERROR_TYPES.values()) | {"api_error"}
# Thinking budget (tokens) -> the pivot's reasoning_effort: the smallest effort whose budget covers it.
_EFFORT_BUDGETS = ((4096, "low"), (16384, "medium"))
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
# Top-level fields a channel of another protocol cannot honour: refused, not dropped.
# (``context_management`` only trims old context on Claude's side: dropped, like the other hints.)
_REFUSED = ("container", "mcp_servers")
# OpenAI refuses a longer ``user``; Claude Code's ids (user_<hash>_account_<uuid>_session_<uuid>) are longer, and
# the field only tags a request for abuse tracking, so such an id is not sent.
_MAX_USER = 64
_IMAGE_TOKENS = 1600  # Anthropic's cost of an image at its largest unscaled size (~1.15 megapixels)


def error_body(error: RelayError) -> dict[str, Any]:
    """Anthropic's error object for ``error``; an upstream's own Anthropic type (kept in ``code``) wins."""
    kind = error.code if error.code in _KNOWN_ERRORS else ERROR_TYPES.get(
        error.status, "api_error" if error.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def _tool_use_id() -> str:
    """For pivots whose tool calls carry no id; the caller needs one to answer with a tool_result."""
    return f"toolu_{uuid.uuid4().hex[:24]}"


# ---------------------------------------------------------------- request

def chat_request(payload: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat request for a Claude Messages request (without ``stream``: the bridge adds it)."""
    for name in _REFUSED:
        if payload.get(name):
            raise bad_request(f"{name}: only Anthropic channels serve it, and this model is served by another.",
                              param=name)
    limit = payload.get("max_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise bad_request("max_tokens: Field required (an integer of at least 1).", param="max_tokens")
    messages = _system(payload.get("system"))
    turns = payload.get("messages")
    if not isinstance(turns, list) or not turns:
        raise bad_request("messages: Field required (a non-empty list).", param="messages")
    for m, turn in enumerate(turns):
        messages.extend(_messages(turn, m))
    body: dict[str, Any] = {"model": payload.get("model"), "messages": messages, "max_tokens": limit}
    for name in ("temperature", "top_p"):  # top_k has no pivot field: a sampling hint, dropped
        if isinstance(payload.get(name), (int, float)):
            body[name] = payload[name]
    if stops := payload.get("stop_sequences"):
        body["stop"] = list(stops)
    user = (payload.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and 0 < len(user) <= _MAX_USER:
        body["user"] = user
    if tools := _tools(payload.get("tools")):
        body["tools"] = tools
        choice = payload.get("tool_choice")
        if isinstance(choice, dict):
            if (mapped := _tool_choice(choice)) is not None:
                body["tool_choice"] = mapped
            if choice.get("disable_parallel_tool_use") and choice.get("type") != "none":
                body["parallel_tool_calls"] = False
    if (effort := _effort(payload)) is not None:
        body["reasoning_effort"] = effort
    output_format = (payload.get("output_config") or {}).get("format")
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "output", "schema": output_format.get("schema") or {}, "strict": True}}
    return body


def _text(blocks: Any, where: str) -> str:
    """The text of a string or of a list of text blocks (system prompts, tool results)."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise bad_request(f"{where}: must be a string or a list of text blocks.", param=where)
    texts = []
    for b, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise bad_request(f"{where}.{b}: only text blocks are allowed here.", param=f"{where}.{b}")
        texts.append(str(block.get("text", "")))
    return "\n\n".join(texts)


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    text = _text(system, "system")
    return [{"role": "system", "content": text}] if text else []


def _messages(turn: Any, m: int) -> list[dict[str, Any]]:
    """One Claude turn as pivot messages: a user turn's tool results become ``tool`` messages, first."""
    where = f"messages.{m}"
    if not isinstance(turn, dict):
        raise bad_request(f"{where}: must be an object.", param=where)
    role, content = turn.get("role"), turn.get("content")
    if role == "system":  # the SDK's SystemMessageParam: a system prompt in place
        text = _text(content, f"{where}.content")
        return [{"role": "system", "content": text}] if text else []
    if role not in ("user", "assistant"):
        raise bad_request(f"{where}.role: Input should be 'user', 'assistant' or 'system'.", param=f"{where}.role")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise bad_request(f"{where}.content: must be a string or a list of content blocks.", param=f"{where}.content")
    if role == "assistant":
        return [_assistant(content, where)]
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for b, block in enumerate(content):
        here = f"{where}.content.{b}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            message, images = _tool_result(block, here)
            tools.append(message)
            parts.extend(images)  # a tool's images have no place in a tool message: the user turn carries them
        else:
            parts.append(_part(block, here))
    out = tools
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant(content: list[Any], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for b, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append({"id": str(block.get("id") or _tool_use_id()), "type": "function", "function": {
                "name": str(block.get("name", "")), "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier thinking is not context (Anthropic drops it too); the pivot has no field for it
        else:
            raise bad_request(f"{where}.content.{b}: a {kind!r} block can only be sent to Anthropic channels.",
                              param=f"{where}.content.{b}")
    # Content may be null only beside tool calls (an assistant turn of thinking alone is empty text).
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return message


def _part(block: Any, where: str) -> dict[str, Any]:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        return {"type": "text", "text": str(block.get("text", ""))}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(block.get("source") or {}, where)}}
    if kind == "document":
        source = block.get("source") or {}
        if source.get("type") == "text":
            return {"type": "text", "text": str(source.get("data", ""))}
        if source.get("type") == "base64":
            return {"type": "file", "file": {"filename": str(block.get("title") or "document.pdf"),
                                             "file_data": f"data:{source.get('media_type')};base64,{source.get('data')}"}}
    raise bad_request(f"{where}: a {kind!r} block of this kind can only be sent to Anthropic channels.", param=where)


def _image_url(source: dict[str, Any], where: str) -> str:
    if source.get("type") == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise bad_request(f"{where}.source: only base64 and url image sources reach channels other than Anthropic's.",
                      param=f"{where}.source")


def _tool_result(block: dict[str, Any], where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``tool`` message of a tool_result, and the images it held."""
    content = block.get("content")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    for b, item in enumerate(content if isinstance(content, list) else ()):
        part = _part(item, f"{where}.content.{b}")
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            images.append(part)
    text = "\n\n".join(texts)
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"  # the pivot has no error flag: the model reads it instead
    return {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}, images


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for t, tool in enumerate(tools or ()):
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom") or "input_schema" not in tool:
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise bad_request(f"tools.{t}: the server tool {kind!r} is only served by Anthropic channels.",
                              param=f"tools.{t}")
        function: dict[str, Any] = {"name": tool.get("name", ""), "parameters": tool["input_schema"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: dict[str, Any]) -> Any:
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    return {"auto": "auto", "any": "required", "none": "none"}.get(str(kind))


def _effort(payload: dict[str, Any]) -> str | None:
    """reasoning_effort from ``output_config.effort`` or a manual thinking budget; adaptive thinking
    leaves the choice to the model, as it does on Claude."""
    effort = (payload.get("output_config") or {}).get("effort")
    if isinstance(effort, str) and effort in _EFFORTS:
        return _EFFORTS[effort]
    thinking = payload.get("thinking") or {}
    if thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    budget = budget if isinstance(budget, int) else 0
    return next((effort for limit, effort in _EFFORT_BUDGETS if budget <= limit), "high")


# ---------------------------------------------------------------- reply

def _usage_object(usage: Usage | None) -> dict[str, int]:
    """Anthropic's usage: its ``input_tokens`` excludes cache reads and writes, the pivot's prompt includes them."""
    usage = usage or Usage()
    fresh = max(usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens, 0)
    return {"input_tokens": fresh, "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cached_tokens, "output_tokens": usage.completion_tokens}


def _stop(choice: dict[str, Any], stops: Any) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence); upstreams that name the stop string they met (vLLM) give the sequence."""
    finish = choice.get("finish_reason")
    matched = choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str) and isinstance(stops, list) and matched in stops:
        return "stop_sequence", matched
    return _STOP.get(finish or "stop", "end_turn"), None


def _reasoning(message: dict[str, Any]) -> str:
    """DeepSeek's ``reasoning_content`` or OpenRouter's and vLLM's ``reasoning``."""
    value = message.get("reasoning_content") or message.get("reasoning")
    return value if isinstance(value, str) else ""


def message_reply(call: Call, pivot: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
    """The Claude message for a ``chat.completion``."""
    choices = pivot.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if thought := _reasoning(message):
        content.append({"type": "thinking", "thinking": thought, "signature": ""})
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    elif isinstance(message.get("refusal"), str) and message["refusal"]:
        content.append({"type": "text", "text": message["refusal"]})
    for tool_call in message.get("tool_calls") or ():
        function = tool_call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = {"arguments": function.get("arguments")}  # the model's malformed JSON, kept readable
        content.append({"type": "tool_use", "id": tool_call.get("id") or _tool_use_id(),
                        "name": function.get("name", ""),
                        "input": arguments if isinstance(arguments, dict) else {"value": arguments}})
    stop_reason, stop_sequence = _stop(choice, (call.payload or {}).get("stop_sequences"))
    if usage is None:
        usage = usage_from_openai(pivot)
    return {"id": message_id(), "type": "message", "role": "assistant", "model": call.model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": _usage_object(usage)}


# ---------------------------------------------------------------- stream

def _event(name: bytes, data: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class ClaudeStream:
    """``chat.completion.chunk`` events -> Anthropic's event sequence, one event at a time.

    message_start, then per content block content_block_start / *_delta / content_block_stop,
    then message_delta (stop reason, usage) and message_stop. The pivot's usage arrives after
    its finish chunk, so message_delta waits for it (or for ``[DONE]``, or the end).
    """

    __slots__ = ("_call", "_started", "_block", "_open", "_tools", "_stop", "_usage", "_produced", "_done")

    def __init__(self, call: Call) -> None:
        self._call = call
        self._started = self._done = False
        self._block = -1  # index of the last block opened
        self._open = ""  # type of the block open now: "", "text", "thinking", "tool_use"
        self._tools: dict[int, int] = {}  # pivot tool_calls index -> content block index
        self._stop: tuple[str, str | None] | None = None
        self._usage: Usage | None = None
        self._produced: list[str] = []  # for a local count when the pivot reports no usage

    def feed(self, name: bytes, data: bytes) -> bytes:
        if self._done:
            return b""
        if data == b"[DONE]":
            return self._finish()
        chunk = orjson.loads(data)
        if not isinstance(chunk, dict):
            return b""
        if isinstance(chunk.get("error"), dict):
            self._done = True
            return self._error(chunk["error"])
        out = b"" if self._started else self._start()
        if (usage := usage_from_openai(chunk)) is not None:
            self._usage = usage
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and not choice.get("index"):
                out += self._choice(choice)
        return out

    def _start(self) -> bytes:
        self._started = True
        message = {"id": message_id(), "type": "message", "role": "assistant", "model": self._call.model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}  # known at the end: sent with message_delta
        return _event(b"message_start", {"type": "message_start", "message": message})

    def _choice(self, choice: dict[str, Any]) -> bytes:
        delta = choice.get("delta") or {}
        out = b""
        if thought := _reasoning(delta):
            out += self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out += self._delta(b"thinking_delta", b"thinking", thought)
        if isinstance(delta.get("content"), str) and delta["content"]:
            out += self._open_block("text", {"type": "text", "text": ""})
            out += self._delta(b"text_delta", b"text", delta["content"])
        for tool_call in delta.get("tool_calls") or ():
            out += self._tool_delta(tool_call)
        if choice.get("finish_reason"):
            out += self._close()
            self._stop = _stop(choice, (self._call.payload or {}).get("stop_sequences"))
        return out

    def _tool_delta(self, tool_call: dict[str, Any]) -> bytes:
        out = b""
        index = tool_call.get("index", 0)
        function = tool_call.get("function") or {}
        block = self._tools.get(index)
        if block is None:
            out += self._close()
            block = self._tools[index] = self._block = self._block + 1
            self._open = "tool_use"
            opening = {"type": "tool_use", "id": tool_call.get("id") or _tool_use_id(),
                       "name": function.get("name", ""), "input": {}}
            out += _event(b"content_block_start", {"type": "content_block_start", "index": block,
                                                    "content_block": opening})
        if arguments := function.get("arguments"):
            self._produced.append(arguments)
            out += _event(b"content_block_delta", {"type": "content_block_delta", "index": block,
                                                    "delta": {"type": "input_json_delta", "partial_json": arguments}})
        return out

    def _open_block(self, kind: str, opening: dict[str, Any]) -> bytes:
        if self._open == kind:
            return b""
        out = self._close()
        self._block += 1
        self._open = kind
        return out + _event(b"content_block_start", {"type": "content_block_start", "index": self._block,
                                                      "content_block": opening})

    def _delta(self, kind: bytes, field: bytes, value: str) -> bytes:
        """One text or thinking delta: the event most streams are made of, so framed without a dict."""
        self._produced.append(value)
        return (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":{"type":"%s","%s":'
                % (self._block, kind, field) + orjson.dumps(value) + b"}}\n\n")

    def _close(self) -> bytes:
        if not self._open:
            return b""
        self._open = ""
        return _event(b"content_block_stop", {"type": "content_block_stop", "index": self._block})

    def _finish(self) -> bytes:
        self._done = True
        out = (b"" if self._started else self._start()) + self._close()
        stop_reason, stop_sequence = self._stop or ("end_turn", None)
        usage = self._usage or Usage(completion_tokens=tokenizer.count_text(self._call.model, "".join(self._produced)))
        out += _event(b"message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                         "usage": _usage_object(usage)})
        return out + _event(b"message_stop", {"type": "message_stop"})

    def _error(self, error: dict[str, Any]) -> bytes:
        status = error.get("status") if isinstance(error.get("status"), int) else 500
        relay_error = RelayError(status, str(error.get("message") or "The upstream failed."),
                                 code=str(error.get("type") or ""))
        return _event(b"error", error_body(relay_error))

    def end(self) -> bytes:
        return b"" if self._done else self._finish()

    def usage(self) -> Usage | None:
        return self._usage


# ---------------------------------------------------------------- token counting

def count_tokens(payload: dict[str, Any]) -> int:
    """A local estimate of a count_tokens request's ``input_tokens``, for models no Anthropic channel
    serves: the pivot's messages in OpenAI's framing, plus tool definitions and calls as JSON, plus
    Anthropic's flat cost of an image."""
    model = str(payload.get("model") or "")
    pivot = chat_request({**payload, "max_tokens": 1})
    total = tokenizer.count_messages(model, pivot["messages"])
    for message in pivot["messages"]:
        for tool_call in message.get("tool_calls") or ():
            total += tokenizer.count_text(model, orjson.dumps(tool_call["function"]).decode())
        if isinstance(message.get("content"), list):
            total += _IMAGE_TOKENS * sum(1 for part in message["content"] if part.get("type") != "text")
    if tools := pivot.get("tools"):
        total += tokenizer.count_text(model, orjson.dumps(tools).decode())
    return total


class ClaudeDialect(Dialect):
    kind = kinds.CLAUDE
    via = kinds.CHAT

    def request(self, call: Call) -> dict[str, Any]:
        return chat_request(call.payload or {})

    def reply(self, call: Call, pivot: dict[str, Any], usage: Usage | None) -> bytes:
        return orjson.dumps(message_reply(call, pivot, usage))

    def stream(self, call: Call) -> ClaudeStream:
        return ClaudeStream(call)
