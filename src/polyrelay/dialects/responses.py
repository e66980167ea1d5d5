"""OpenAI Responses <-> Chat Completions: for channels whose upstream has no Responses API.

Anthropic and Gemini channels, and OpenAI-compatible channels with the option
``responses: false``, serve ``POST /v1/responses`` through chat: the request's items
become chat messages, the ``chat.completion`` a ``response`` object, and the chunk
stream the Responses API's typed events. The bridge is stateless: nothing is stored,
so ``previous_response_id`` (and anything else that needs the upstream's memory or its
built-in tools) is refused with a 400 that says so, never silently dropped.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from polyrelay import kinds
from polyrelay.billing.meter import Usage
from polyrelay.dialects.base import Dialect
from polyrelay.errors import bad_request
from polyrelay.providers.base import Call

_STATELESS = "this model's channel serves the Responses API by translating it to Chat Completions, which keeps no state"
# Request fields that need the upstream's own Responses API (state, prompts, background runs).
_NEEDS_NATIVE = ("previous_response_id", "conversation", "prompt", "background")
# Chat fields with the same name and meaning.
_SAME = ("temperature", "top_p", "user", "parallel_tool_calls", "safety_identifier", "prompt_cache_key",
         "service_tier")
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# ---------------------------------------------------------------- request

def needs_native(payload: dict[str, Any]) -> tuple[str, str] | None:
    """(why, field) when the request needs the upstream's own Responses API, else None."""
    for name in _NEEDS_NATIVE:
        if payload.get(name) not in (None, False):
            return (f"'{name}' is not supported here: {_STATELESS}. Send the whole conversation as 'input' "
                    "instead."), name
    return None


def chat_request(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """The chat request for a Responses ``payload``; 400 for what chat cannot express."""
    if (native := needs_native(payload)) is not None:
        raise bad_request(native[0], param=native[1])
    messages: list[dict[str, Any]] = []
    instructions = payload.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    elif instructions is not None and not isinstance(instructions, str):
        raise bad_request("'instructions' must be a string.", param="instructions")
    _add_input(messages, payload.get("input"))
    if not messages:
        raise bad_request("'input' must be a non-empty string or list of input items.", param="input")
    body: dict[str, Any] = {"model": model, "messages": messages}
    for name in _SAME:
        if payload.get(name) is not None:
            body[name] = payload[name]
    if isinstance(payload.get("max_output_tokens"), int):
        body["max_tokens"] = payload["max_output_tokens"]  # the name every OpenAI-compatible server knows
    if tools := _tools(payload.get("tools")):
        body["tools"] = tools
    if (choice := _tool_choice(payload.get("tool_choice"))) is not None:
        body["tool_choice"] = choice
    text = payload.get("text")
    if isinstance(text, dict):
        if (response_format := _response_format(text.get("format"))) is not None:
            body["response_format"] = response_format
        if text.get("verbosity") is not None:
            body["verbosity"] = text["verbosity"]
    reasoning = payload.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        body["reasoning_effort"] = reasoning["effort"]
    return body


def _add_input(messages: list[dict[str, Any]], input_: Any) -> None:
    if isinstance(input_, str):
        if input_:
            messages.append({"role": "user", "content": input_})
        return
    if not isinstance(input_, list):
        raise bad_request("'input' must be a string or a list of input items.", param="input")
    for i, item in enumerate(input_):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad_request(f"{where} must be an object.", param=where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            _add_message(messages, item, where)
        elif kind == "function_call":
            call = {"id": item.get("call_id", ""), "type": "function",
                    "function": {"name": item.get("name", ""), "arguments": item.get("arguments") or "{}"}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # one assistant turn: its text and its calls
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            content = output if isinstance(output, str) else _text_parts(output, where + ".output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id", ""), "content": content})
        else:
            raise bad_request(f"{where} is an item of type {kind!r}, which {_STATELESS} cannot take.", param=where)


def _add_message(messages: list[dict[str, Any]], item: dict[str, Any], where: str) -> None:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise bad_request(f"{where}.role must be 'user', 'assistant', 'system' or 'developer'.", param=where + ".role")
    if role == "developer":
        role = "system"  # what every chat server knows; OpenAI treats the two alike
    content = item.get("content")
    if isinstance(content, str):
        messages.append({"role": role, "content": content})
        return
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or a list of content parts.", param=where + ".content")
    parts: list[dict[str, Any]] = []
    for p, part in enumerate(content):
        at = f"{where}.content[{p}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal", "")})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise bad_request(f"{at} must give its image as 'image_url' (a URL or data URI) here: file ids "
                                  "need the upstream's own Responses API.", param=at)
            parts.append({"type": "image_url", "image_url": {"url": url, "detail": part.get("detail") or "auto"}})
        else:
            raise bad_request(f"{at} has a type ({kind!r}) that {_STATELESS} cannot take.", param=at)
    if role == "assistant":  # chat's assistant turns hold text only
        messages.append({"role": role, "content": "".join(part["text"] for part in parts if part["type"] == "text")})
    else:
        messages.append({"role": role, "content": parts})


def _text_parts(output: Any, where: str) -> str:
    if isinstance(output, list):
        texts = [part.get("text", "") for part in output if isinstance(part, dict) and part.get("type") == "input_text"]
        if len(texts) == len(output):
            return "".join(texts)
    raise bad_request(f"{where} must be a string or a list of input_text parts here.", param=where)


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for t, tool in enumerate(tools or ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise bad_request(f"tools[{t}] is a {kind!r} tool: built-in tools need the upstream's own Responses "
                              f"API, and {_STATELESS}. Only 'function' tools are available.", param=f"tools[{t}]")
        function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if tool.get(key) is not None}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice is None or isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise bad_request(f"This 'tool_choice' is not available here: {_STATELESS}. Use 'auto', 'none', 'required' "
                      "or a function.", param="tool_choice")


def _response_format(format_: Any) -> dict[str, Any] | None:
    if not isinstance(format_, dict) or format_.get("type") in (None, "text"):
        return None
    if format_["type"] == "json_object":
        return {"type": "json_object"}
    if format_["type"] == "json_schema":
        schema = {key: format_[key] for key in ("name", "description", "schema", "strict") if format_.get(key) is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise bad_request(f"text.format of type {format_['type']!r} is not supported.", param="text.format")


# ---------------------------------------------------------------- reply

def usage_object(usage: dict[str, Any] | None, fallback: Usage | None) -> dict[str, Any] | None:
    """Responses usage from a chat usage object (which has the details), else from the billed ``fallback``."""
    if isinstance(usage, dict):
        prompt, output = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    elif fallback is not None:
        prompt, output, cached, reasoning = fallback.prompt_tokens, fallback.completion_tokens, fallback.cached_tokens, 0
    else:
        return None
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output,  # reasoning tokens are part of them, as in chat
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + output,
    }


def response_object(call: Call, id_: str, created: int, status: str, output: list[dict[str, Any]],
                    usage: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
    """A ``response`` object echoing the request's settings, as the Responses API answers."""
    payload = call.payload or {}
    reason = _INCOMPLETE.get(finish or "")
    if status == "completed" and reason:
        status = "incomplete"
    text = payload.get("text") if isinstance(payload.get("text"), dict) else {}
    reasoning = payload.get("reasoning") if isinstance(payload.get("reasoning"), dict) else {}
    return {
        "id": id_, "object": "response", "created_at": created, "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "background": False, "error": None,
        "incomplete_details": {"reason": reason} if status == "incomplete" else None,
        "instructions": payload.get("instructions"), "max_output_tokens": payload.get("max_output_tokens"),
        "max_tool_calls": None, "model": call.model, "output": output,
        "parallel_tool_calls": payload.get("parallel_tool_calls", True), "previous_response_id": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": None},
        "service_tier": payload.get("service_tier") or "default", "store": False,
        "temperature": payload.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity") or "medium"},
        "tool_choice": payload.get("tool_choice", "auto"), "tools": payload.get("tools") or [],
        "top_logprobs": 0, "top_p": payload.get("top_p", 1.0), "truncation": "disabled",
        "usage": usage, "user": payload.get("user"), "metadata": payload.get("metadata") or {},
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def message_item(id_: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": id_, "type": "message", "status": status, "content": content, "role": "assistant"}


def function_call_item(id_: str, status: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": id_, "type": "function_call", "status": status, "arguments": arguments, "call_id": call_id,
            "name": name}


def reply_object(call: Call, pivot: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
    choices = pivot.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append(text_part(message["content"]))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        content.append({"type": "refusal", "refusal": message["refusal"]})
    if content:
        output.append(message_item(_id("msg"), "completed", content))
    for tool_call in message.get("tool_calls") or ():
        function = tool_call.get("function") or {}
        output.append(function_call_item(_id("fc"), "completed", tool_call.get("id") or _id("call"),
                                         function.get("name", ""), function.get("arguments") or ""))
    created = pivot.get("created") if isinstance(pivot.get("created"), int) else int(time.time())
    return response_object(call, _id("resp"), created, "completed", output,
                           usage_object(pivot.get("usage"), usage), choice.get("finish_reason"))


# ---------------------------------------------------------------- stream

class _Item:
    """One output item being streamed: a message (text) or a function call."""

    __slots__ = ("id", "index", "kind", "text", "call_id", "name", "head")

    def __init__(self, kind: str, index: int, call_id: str = "", name: str = "") -> None:
        self.id = _id("msg" if kind == "message" else "fc")
        self.index, self.kind, self.call_id, self.name = index, kind, call_id, name
        self.text: list[str] = []
        # Every delta event of this item up to its ``delta`` value.
        type_, position = ((b"response.output_text.delta", {"content_index": 0, "logprobs": []}) if kind == "message"
                           else (b"response.function_call_arguments.delta", {}))
        fields = orjson.dumps({"type": type_.decode(), "item_id": self.id, "output_index": index, **position})
        self.head = b"event: " + type_ + b"\ndata: " + fields[:-1] + b',"delta":'


class ResponsesStream:
    """``chat.completion.chunk`` events -> the Responses API's typed events, one chunk at a time."""

    __slots__ = ("_call", "_id", "_created", "_seq", "_items", "_current", "_calls", "_finish", "_usage", "_ended")

    def __init__(self, call: Call) -> None:
        self._call = call
        self._id = _id("resp")
        self._created = int(time.time())
        self._seq = 0
        self._items: list[_Item] = []
        # The one item open now: items are streamed one after the other, as OpenAI does, and a chat
        # stream sends its text, then each tool call whole (OpenAI's and polyrelay's own translators do).
        self._current: _Item | None = None
        self._calls: dict[int, _Item] = {}  # chat tool_calls index -> its function_call item
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._ended = False  # an error ended it: nothing may follow

    def _event(self, type_: str, **fields: Any) -> bytes:
        data = orjson.dumps({"type": type_, "sequence_number": self._seq, **fields})
        self._seq += 1
        return b"event: " + type_.encode() + b"\ndata: " + data + b"\n\n"

    def _response(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        return response_object(self._call, self._id, self._created, status, output,
                                self._usage if status != "in_progress" else None, self._finish)

    def _start(self) -> bytes:
        if self._seq:
            return b""
        started = self._response("in_progress", [])
        return self._event("response.created", response=started) + self._event("response.in_progress", response=started)

    def feed(self, name: bytes, data: bytes) -> bytes:
        if self._ended or data == b"[DONE]":
            return b""
        chunk = orjson.loads(data)
        out = self._start() if not self._seq else b""
        if isinstance(error := chunk.get("error"), dict):
            self._ended = True
            # Typed for Responses clients, and with ``error`` so the openai SDK raises it as an APIError.
            return out + self._event("error", code=error.get("code"), message=error.get("message", ""),
                                     param=error.get("param"), error=error)
        if isinstance(usage := chunk.get("usage"), dict):
            self._usage = usage_object(usage, None)
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if (content := delta.get("content")) and isinstance(content, str):
                out += self._text(content)
            if tool_calls := delta.get("tool_calls"):
                out += b"".join([self._tool_call(tool_call) for tool_call in tool_calls])
            if finish := choice.get("finish_reason"):
                self._finish = finish
        return out

    def _delta(self, item: _Item, value: str) -> bytes:
        """The hot path: one event per token or so, its constant head serialised once per item."""
        item.text.append(value)
        sequence, self._seq = self._seq, self._seq + 1
        return item.head + orjson.dumps(value) + b',"sequence_number":%d}\n\n' % sequence

    def _text(self, text: str) -> bytes:
        item = self._current
        if item is not None and item.kind == "message":
            return self._delta(item, text)
        opened = self._close_current()
        item = self._open("message")
        opened += self._event("response.output_item.added", output_index=item.index,
                              item=message_item(item.id, "in_progress", []))
        opened += self._event("response.content_part.added", item_id=item.id, output_index=item.index,
                              content_index=0, part=text_part(""))
        return opened + self._delta(item, text)

    def _tool_call(self, tool_call: dict[str, Any]) -> bytes:
        out = []
        function = tool_call.get("function") or {}
        index = tool_call.get("index", len(self._calls))
        item = self._calls.get(index)
        if item is None:
            out.append(self._close_current())
            item = self._calls[index] = self._open("function_call", tool_call.get("id") or _id("call"),
                                                   function.get("name") or "")
            out.append(self._event("response.output_item.added", output_index=item.index,
                                   item=function_call_item(item.id, "in_progress", item.call_id, item.name, "")))
        if arguments := function.get("arguments"):
            out.append(self._delta(item, arguments))
        return b"".join(out)

    def _open(self, kind: str, call_id: str = "", name: str = "") -> _Item:
        item = self._current = _Item(kind, len(self._items), call_id, name)
        self._items.append(item)
        return item

    def _close_current(self) -> bytes:
        item, self._current = self._current, None
        return self._close(item) if item is not None else b""

    def _done(self, item: _Item) -> dict[str, Any]:
        text = "".join(item.text)
        if item.kind == "message":
            return message_item(item.id, "completed", [text_part(text)])
        return function_call_item(item.id, "completed", item.call_id, item.name, text)

    def _close(self, item: _Item) -> bytes:
        text = "".join(item.text)
        if item.kind == "message":
            head = [
                self._event("response.output_text.done", item_id=item.id, output_index=item.index, content_index=0,
                            text=text, logprobs=[]),
                self._event("response.content_part.done", item_id=item.id, output_index=item.index, content_index=0,
                            part=text_part(text)),
            ]
        else:
            head = [self._event("response.function_call_arguments.done", item_id=item.id, output_index=item.index,
                                arguments=text)]
        return b"".join(head) + self._event("response.output_item.done", output_index=item.index, item=self._done(item))

    def end(self) -> bytes:
        if self._ended:
            return b""
        out = [self._start()]
        out.append(self._close_current())
        response = self._response("completed", [self._done(item) for item in self._items])
        out.append(self._event(f"response.{response['status']}", response=response))
        return b"".join(out)

    def usage(self) -> Usage | None:
        return None  # the pivot stream's usage is billed (``relay.bridge.Repivoted``)


class ResponsesDialect(Dialect):
    kind = kinds.RESPONSES
    via = kinds.CHAT

    def request(self, call: Call) -> dict[str, Any]:
        return chat_request(call.payload or {}, call.model)

    def needs_native(self, call: Call) -> tuple[str, str] | None:
        return needs_native(call.payload or {})

    def reply(self, call: Call, pivot: dict[str, Any], usage: Usage | None) -> bytes:
        if not isinstance(pivot.get("choices"), list):
            raise ValueError("the chat reply has no choices")
        return orjson.dumps(reply_object(call, pivot, usage))

    def stream(self, call: Call) -> ResponsesStream:
        return ResponsesStream(call)

