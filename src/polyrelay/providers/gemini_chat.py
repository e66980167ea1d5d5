"""OpenAI chat <-> Gemini ``generateContent``: request, reply, stream and usage translation.

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
    tool_names_by_id,
)
from polyrelay.providers.chat_out import ChunkWriter
from polyrelay.providers.image_parts import inline
from polyrelay.providers.base import Call

SAFETY_CATEGORIES = (
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_CIVIC_INTEGRITY",
)
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "stop",
}
# The OpenAPI-subset Schema Gemini accepts; JSON-Schema extras (additionalProperties,
# $schema, strict, ...) make it answer 400, so they are dropped.
_SCHEMA_KEYS = frozenset(
    {"type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
     "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
     "propertyOrdering", "default", "items", "minimum", "maximum"}
)
_TOOL_CHOICE = {"auto": "AUTO", "none": "NONE", "required": "ANY"}


# ---------------------------------------------------------------- request

def chat_request(call: Call, options: dict[str, Any]) -> dict[str, Any]:
    payload = call.payload or {}
    messages = messages_of(payload)
    tool_names = tool_names_by_id(messages)
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    for m, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(text_of(message.get("content")))
        elif role == "tool":
            name = tool_names.get(message.get("tool_call_id", "")) or message.get("name") or ""
            response = _tool_response(message.get("content"))
            _add(contents, "user", [{"functionResponse": {"name": name, "response": response}}])
        elif role == "function":  # legacy functions API
            response = _tool_response(message.get("content"))
            _add(contents, "user", [{"functionResponse": {"name": message.get("name", ""), "response": response}}])
        elif role == "assistant":
            parts = _parts(call, message.get("content"), m)
            for t, tool_call in enumerate(message.get("tool_calls") or ()):
                function = tool_call.get("function") or {}
                args = arguments_of(function, f"messages[{m}].tool_calls[{t}]")
                parts.append({"functionCall": {"name": function.get("name", ""), "args": args}})
            if isinstance(message.get("function_call"), dict):
                function = message["function_call"]
                args = arguments_of(function, f"messages[{m}].function_call")
                parts.append({"functionCall": {"name": function.get("name", ""), "args": args}})
            _add(contents, "model", parts)
        elif role == "user":
            _add(contents, "user", _parts(call, message.get("content"), m))
        else:
            raise bad_request(f"messages[{m}] has an unknown role {role!r}.", param=f"messages[{m}].role")
    body: dict[str, Any] = {"contents": contents}
    if system := [s for s in system if s]:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    if config := _generation_config(payload):
        body["generationConfig"] = config
    if tools := _tools(payload):
        body["tools"] = tools
        if (tool_config := _tool_config(payload.get("tool_choice"))) is not None:
            body["toolConfig"] = tool_config
    if (safety := safety_settings(options.get("safety_settings"))) is not None:
        body["safetySettings"] = safety
    return body


def _add(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    """Append a turn; consecutive turns of one role merge (parallel tool results are one turn)."""
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _parts(call: Call, content: Any, m: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p, part in enumerate(parts_of(content)):
        kind = part.get("type")
        where = f"messages[{m}].content[{p}]"
        if kind == "text":
            out.append({"text": part.get("text", "")})
        elif kind == "image_url":
            media_type, data = inline(call, image_url_of(part), where + ".image_url")
            out.append({"inlineData": {"mimeType": media_type, "data": data}})
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            out.append({"inlineData": {"mimeType": f"audio/{audio.get('format', 'wav')}", "data": audio.get("data", "")}})
        else:
            raise bad_request(f"{where} has a type ({kind!r}) Gemini channels cannot take.", param=where)
    return out


def _tool_response(content: Any) -> dict[str, Any]:
    """Gemini wants an object; a JSON object result is passed as is, anything else wrapped."""
    text = text_of(content)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"content": text}
    return value if isinstance(value, dict) else {"content": value}


def _generation_config(payload: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for source, target in (("temperature", "temperature"), ("top_p", "topP"), ("n", "candidateCount"),
                           ("seed", "seed"), ("presence_penalty", "presencePenalty"),
                           ("frequency_penalty", "frequencyPenalty")):
        if payload.get(source) is not None:
            config[target] = payload[source]
    if (limit := max_output_tokens(payload)) is not None:
        config["maxOutputTokens"] = limit
    if (stop := stop_list(payload.get("stop"))) is not None:
        config["stopSequences"] = stop
    response_format = payload.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind in ("json_object", "json_schema"):
            config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
        if isinstance(schema, dict):
            config["responseSchema"] = gemini_schema(schema)
    return config


def gemini_schema(schema: Any) -> Any:
    """A JSON Schema reduced to the subset Gemini accepts (``["x","null"]`` types -> nullable)."""
    if isinstance(schema, list):
        return [gemini_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in _SCHEMA_KEYS:
            continue
        if key == "type" and isinstance(value, list):
            kinds = [v for v in value if v != "null"]
            out["type"] = kinds[0] if kinds else "string"
            if "null" in value:
                out["nullable"] = True
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: gemini_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = gemini_schema(value)
        else:
            out[key] = value
    return out


def _tools(payload: dict[str, Any]) -> list[dict[str, Any]]:
    functions = [t.get("function") for t in payload.get("tools") or () if isinstance(t, dict) and t.get("type") == "function"]
    functions += [f for f in payload.get("functions") or () if isinstance(f, dict)]  # legacy
    declarations = []
    for function in functions:
        if not isinstance(function, dict):
            continue
        declaration: dict[str, Any] = {"name": function.get("name", "")}
        if function.get("description"):
            declaration["description"] = function["description"]
        parameters = function.get("parameters")
        if isinstance(parameters, dict) and parameters.get("properties"):
            declaration["parameters"] = gemini_schema(parameters)
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, str) and choice in _TOOL_CHOICE:
        return {"functionCallingConfig": {"mode": _TOOL_CHOICE[choice]}}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name:
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    return None


def safety_settings(option: Any) -> list[dict[str, Any]] | None:
    """Channel option: a threshold for every category (``"BLOCK_NONE"``) or Gemini's own list."""
    if isinstance(option, str):
        return [{"category": category, "threshold": option} for category in SAFETY_CATEGORIES]
    if isinstance(option, list):
        return option
    return None


# ---------------------------------------------------------------- usage and reply

def usage_of(metadata: dict[str, Any] | None) -> tuple[Usage, int] | None:
    """(usage, reasoning tokens) from ``usageMetadata``; thinking is billed as output."""
    if not isinstance(metadata, dict):
        return None
    thoughts = int(metadata.get("thoughtsTokenCount") or 0)
    return (
        Usage(
            prompt_tokens=int(metadata.get("promptTokenCount") or 0) + int(metadata.get("toolUsePromptTokenCount") or 0),
            completion_tokens=int(metadata.get("candidatesTokenCount") or 0) + thoughts,
            cached_tokens=int(metadata.get("cachedContentTokenCount") or 0),
        ),
        thoughts,
    )


def finish_reason(reason: str | None, called_tools: bool) -> str | None:
    if reason is None:
        return None
    if called_tools and reason == "STOP":
        return "tool_calls"
    return _FINISH.get(reason, "stop")


def _split(parts: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """The visible text and the function calls of a candidate's parts (thoughts are skipped)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if "text" in part:
            texts.append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            function = part["functionCall"]
            calls.append(chat_out.tool_call(
                function.get("id") or chat_out.tool_call_id(),
                function.get("name", ""),
                orjson.dumps(function.get("args") or {}).decode(),
            ))
    return "".join(texts), calls


def chat_reply(call: Call, data: dict[str, Any]) -> tuple[bytes, Usage | None]:
    choices: list[tuple[dict[str, Any], str | None]] = []
    produced: list[str] = []
    for candidate in data.get("candidates") or ():
        text, calls = _split((candidate.get("content") or {}).get("parts") or [])
        produced.append(text)
        choices.append((chat_out.message(text if text or not calls else None, calls),
                        finish_reason(candidate.get("finishReason") or "STOP", bool(calls))))
    if not choices:  # the prompt itself was blocked (promptFeedback.blockReason)
        choices.append((chat_out.message("", []), "content_filter"))
    counted = usage_of(data.get("usageMetadata"))
    usage, reasoning = counted if counted else (chat_out.counted_usage(call, "".join(produced)), 0)
    return chat_out.completion(call.model, choices, usage, reasoning), usage


# ---------------------------------------------------------------- stream

class ChatStream:
    """Gemini SSE events -> ``chat.completion.chunk`` events, one event at a time."""

    __slots__ = ("_call", "_out", "_started", "_tools", "_metadata", "_produced")

    def __init__(self, call: Call) -> None:
        self._call = call
        self._out = ChunkWriter(call.model, call.include_usage)
        self._started: set[int] = set()
        self._tools: dict[int, int] = {}  # candidate index -> tool calls sent so far
        self._metadata: dict[str, Any] | None = None
        self._produced: list[str] = []

    def feed(self, name: bytes, data: bytes) -> bytes:
        event = orjson.loads(data)
        if isinstance(event, list):  # a JSON-array stream element, tolerated
            return b"".join(self.feed(name, orjson.dumps(item)) for item in event)
        out = self._out
        if "error" in event:
            error = event["error"] or {}
            return out.error(int(error.get("code") or 500), str(error.get("message", "")), "upstream_error",
                             error.get("status"))
        chunks: list[bytes] = []
        for candidate in event.get("candidates") or ():
            index = candidate.get("index", 0)
            if index not in self._started:
                self._started.add(index)
                chunks.append(out.delta({"role": "assistant", "content": ""}, index=index))
            text, calls = _split((candidate.get("content") or {}).get("parts") or [])
            delta: dict[str, Any] = {}
            if text:
                delta["content"] = text
                self._produced.append(text)
            if calls:
                first = self._tools.get(index, 0)
                self._tools[index] = first + len(calls)
                delta["tool_calls"] = [{"index": first + i, **c} for i, c in enumerate(calls)]
            if delta:
                chunks.append(out.delta(delta, index=index))
            if reason := candidate.get("finishReason"):
                chunks.append(out.delta({}, finish_reason(reason, index in self._tools), index=index))
        if "usageMetadata" in event:
            self._metadata = event["usageMetadata"]
        return b"".join(chunks)

    def end(self) -> bytes:
        if not self._out.include_usage:
            return chat_out.DONE
        counted = usage_of(self._metadata)
        usage, reasoning = counted if counted else (self.usage() or Usage(), 0)
        return self._out.usage(usage, reasoning) + chat_out.DONE

    def usage(self) -> Usage | None:
        counted = usage_of(self._metadata)
        return counted[0] if counted else chat_out.counted_usage(self._call, "".join(self._produced))


class UsageWatcher:
    """Reads ``usageMetadata`` from a native stream passing through (the last one is cumulative)."""

    __slots__ = ("_call", "_metadata")

    def __init__(self, call: Call) -> None:
        self._call = call
        self._metadata: dict[str, Any] | None = None

    def observe(self, name: bytes, data: bytes) -> None:
        if b"usageMetadata" not in data:
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        for item in event if isinstance(event, list) else (event,):
            if isinstance(item, dict) and isinstance(item.get("usageMetadata"), dict):
                self._metadata = item["usageMetadata"]

    def usage(self) -> Usage | None:
        counted = usage_of(self._metadata)
        return counted[0] if counted else Usage(source="request")
