"""A wire-accurate fake of Anthropic's Messages API (``POST /v1/messages`` and ``/v1/messages/count_tokens``).

Shapes follow Anthropic's API reference: ``x-api-key`` and ``anthropic-version``
headers; a message object with content blocks, ``stop_reason`` and ``usage``
(including cache reads and writes); the SSE stream ``message_start``,
``content_block_start``, ``ping``, ``content_block_delta`` (``text_delta`` /
``input_json_delta``), ``content_block_stop``, ``message_delta`` (with usage),
``message_stop``; errors ``{"type":"error","error":{"type","message"}}`` (529 for
``overloaded_error``). Requests are validated strictly (required ``max_tokens``,
alternating roles, known block types, non-empty text, temperature <= 1, no unknown
top-level fields), so a translation that drifts from the wire format fails the tests.

The reply depends on the request, as in ``gemini_upstream``. Knobs: ``fail_with``; ``break_after``
(streams drop the connection after this many text deltas); ``echo`` (an HTTP status: every request is
refused with it, an ``invalid_request_error`` repeating the key it was sent, see ``tests.fakes.echo``).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.echo import echoed
from tests.fakes.server import KNOBS

CHAT_REPLY = ["Hello", " from", " fake", " Claude", "."]
TOOL_ANSWER = "It is sunny in Paris."
JSON_REPLY = '{"answer": 42}'
INPUT_TOKENS = 9
CACHE_READ = 3
CACHE_WRITE = 2
TOOL_ID = "toolu_01FakeToolUse"
KEYS = web.AppKey("anthropic_keys", set)

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
_TOP_LEVEL = {"model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences",
              "stream", "tools", "tool_choice", "metadata", "thinking", "service_tier", "output_config",
              "cache_control", "speed", "inference_geo", "container", "diagnostics"}
# What ``messages.count_tokens`` takes (the SDK sends these, never max_tokens or sampling fields).
_COUNT_TOP_LEVEL = {"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config",
                    "cache_control", "speed"}
_MEDIA = {"image/jpeg", "image/png", "image/gif", "image/webp"}


def error(status: int, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json",
                        headers={"request-id": "req_fake"})


def _validate(body: dict[str, Any]) -> str | None:
    for key in body:
        if key not in _TOP_LEVEL:
            return f"{key}: Extra inputs are not permitted"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    if isinstance(body.get("temperature"), (int, float)) and not 0 <= body["temperature"] <= 1:
        return "temperature: Input should be less than or equal to 1"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required"
    previous = None
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "system":  # the SDK's SystemMessageParam: a system prompt in place, outside the alternation
            continue
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user', 'assistant' or 'system'"
        if role == previous:
            return "messages: roles must alternate between \"user\" and \"assistant\""
        previous = role
        content = message.get("content")
        if isinstance(content, str):
            continue
        for j, block in enumerate(content):
            kind = block.get("type")
            where = f"messages.{i}.content.{j}"
            if kind == "text":
                if not block.get("text"):
                    return f"{where}: text content blocks must be non-empty"
            elif kind == "image":
                source = block.get("source") or {}
                if source.get("type") == "base64":
                    if source.get("media_type") not in _MEDIA:
                        return f"{where}.source.media_type: Input should be one of {sorted(_MEDIA)}"
                    base64.b64decode(source["data"], validate=True)
                elif source.get("type") != "url":
                    return f"{where}.source: unknown source type"
            elif kind == "tool_use":
                if role != "assistant" or not isinstance(block.get("input"), dict) or not block.get("id"):
                    return f"{where}: tool_use blocks need an id and an object input, in assistant turns"
            elif kind == "tool_result":
                if role != "user" or not block.get("tool_use_id"):
                    return f"{where}: tool_result blocks need a tool_use_id, in user turns"
            else:
                return f"{where}.type: unknown block type {kind!r}"
    for tool in body.get("tools") or ():
        if set(tool) - {"name", "description", "input_schema"} or "input_schema" not in tool:
            return "tools: each tool needs name and input_schema only"
    return None


def count_of(body: dict[str, Any]) -> int:
    """The fake's token count of a request: a word count of its text, 5 per tool definition, 85 per image."""
    words = len(str(body.get("system") or "").split()) + 5 * len(body.get("tools") or ())
    for message in body["messages"]:
        for block in _blocks(message["content"]):
            words += len(block["text"].split()) if block["type"] == "text" else 85 if block["type"] == "image" else 5
    return words


async def count_tokens(request: web.Request) -> web.Response:
    if request.headers.get("x-api-key") not in request.app[KEYS]:
        return error(401, "invalid x-api-key")
    if not request.headers.get("anthropic-version"):
        return error(400, "anthropic-version: header is required")
    body = orjson.loads(await request.read())
    for key in body:
        if key not in _COUNT_TOP_LEVEL:
            return error(400, f"{key}: Extra inputs are not permitted")
    if (problem := _validate({**body, "max_tokens": 1})) is not None:  # the same rules for messages and tools
        return error(400, problem)
    return web.Response(body=orjson.dumps({"input_tokens": count_of(body)}), content_type="application/json")


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _answer(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    last = _blocks(body["messages"][-1]["content"])
    system = body.get("system") or ""
    images = [b["source"] for m in body["messages"] for b in _blocks(m["content"]) if b["type"] == "image"]
    choice = (body.get("tool_choice") or {}).get("type", "auto")
    if any(b["type"] == "tool_result" for b in last):
        return [{"type": "text", "text": TOOL_ANSWER}], "end_turn"
    if body.get("tools") and choice != "none":
        name = body["tools"][0]["name"]
        return [{"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": TOOL_ID, "name": name, "input": {"city": "Paris"}}], "tool_use"
    if "JSON" in system:
        return [{"type": "text", "text": JSON_REPLY}], "end_turn"
    if images:
        sizes = ", ".join(f"{s['media_type']} {len(base64.b64decode(s['data']))} bytes" for s in images)
        return [{"type": "text", "text": f"I see {len(images)} image(s): {sizes}."}], "end_turn"
    if body["max_tokens"] == 2:
        return [{"type": "text", "text": "".join(CHAT_REPLY[:2])}], "max_tokens"
    return [{"type": "text", "text": "".join(CHAT_REPLY)}], "end_turn"


def _tokens(blocks: list[dict[str, Any]]) -> int:
    return sum(len(b["text"].split()) if b["type"] == "text" else 5 for b in blocks)


def _usage(output: int) -> dict[str, Any]:
    return {"input_tokens": INPUT_TOKENS, "cache_creation_input_tokens": CACHE_WRITE,
            "cache_read_input_tokens": CACHE_READ, "output_tokens": output, "service_tier": "standard"}


async def messages(request: web.Request) -> web.StreamResponse:
    if (status := request.app[KNOBS].get("echo")) is not None:
        return error(status, echoed(request))
    if request.headers.get("x-api-key") not in request.app[KEYS]:
        return error(401, "invalid x-api-key")
    if not request.headers.get("anthropic-version"):
        return error(400, "anthropic-version: header is required")
    if (status := request.app[KNOBS].get("fail_with")) is not None:
        return error(status, "Overloaded" if status == 529 else "Internal server error")
    body = orjson.loads(await request.read())
    if body.get("model") == "claude-rejects":
        return error(400, "max_tokens: 100000 > 8192, which is the maximum allowed number of output tokens")
    if (problem := _validate(body)) is not None:
        return error(400, problem)
    blocks, stop = _answer(body)
    message = {"id": "msg_01FakeMessage", "type": "message", "role": "assistant", "model": body["model"],
               "content": blocks, "stop_reason": stop, "stop_sequence": None, "usage": _usage(_tokens(blocks))}
    if body.get("stream"):
        return await _stream(request, message)
    return web.Response(body=orjson.dumps(message), content_type="application/json")


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def _stream(request: web.Request, message: dict[str, Any]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    start = {**message, "content": [], "stop_reason": None, "usage": _usage(1)}
    await response.write(_event("message_start", {"type": "message_start", "message": start}))
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opening = {"type": "text", "text": ""}
            words = block["text"].split(" ")
            deltas = [{"type": "text_delta", "text": w if i == 0 else " " + w} for i, w in enumerate(words)]
        else:
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            raw = orjson.dumps(block["input"]).decode()
            deltas = [{"type": "input_json_delta", "partial_json": raw[:5]},
                      {"type": "input_json_delta", "partial_json": raw[5:]}]
        await response.write(_event("content_block_start",
                                    {"type": "content_block_start", "index": index, "content_block": opening}))
        if index == 0:
            await response.write(_event("ping", {"type": "ping"}))
        for sent, delta in enumerate(deltas, 1):
            await response.write(_event("content_block_delta",
                                        {"type": "content_block_delta", "index": index, "delta": delta}))
            if sent == request.app[KNOBS].get("break_after"):
                request.transport.close()  # the upstream dies mid-answer: no message_stop
                return response
        await response.write(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    await response.write(_event("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": message["usage"]["output_tokens"]},
    }))
    await response.write(_event("message_stop", {"type": "message_stop"}))
    await response.write_eof()
    return response


def create_app(keys: set[str]) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[KEYS] = keys
    app[KNOBS] = {}
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    return app
