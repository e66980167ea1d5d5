"""The Responses API of the fake OpenAI upstream (``openai_upstream.create_app`` installs it).

Held to what the ``openai`` SDK sends and what OpenAI answers: unknown body fields are
refused (``unknown_parameter``), input items and tools are checked by type, a
``function_call_output`` must answer a call in the same input or in the previous
response, ``max_output_tokens`` below 16 is refused as OpenAI does. Replies are
``response`` objects; streams are the typed events (``event:`` name and ``type``, a
``sequence_number`` from 0, no ``[DONE]``). Responses are stored unless ``store`` is
false, so retrieve, delete, input items, cancel (background responses only) and
``previous_response_id`` work. A model whose name starts with "o" reasons: a reasoning
item comes first and its tokens are part of ``output_tokens``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web


REPLY = ["Hello", " from", " the", " fake", " upstream", "."]
TOOL_REPLY = "It is sunny in Paris."
INPUT_TOKENS = 12
CACHED_TOKENS = 2
REASONING_TOKENS = 3
TOOL_ARGUMENTS = '{"city":"Paris"}'

STORED = web.AppKey("responses", dict)
Check = Callable[[web.Request], "web.Response | None"]
_AUTHORIZED = web.AppKey("responses_authorized", Check)  # the whole fake's key check
_PARAMS = frozenset({
    "access_programs", "background", "background_options", "context_management", "conversation", "image", "include",
    "input", "instructions", "max_output_tokens", "max_tool_calls", "metadata", "model", "moderation",
    "parallel_tool_calls", "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store", "stream", "stream_options",
    "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation", "user",
})
_ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning", "item_reference")
_PART_TYPES = ("input_text", "input_image", "input_file", "output_text", "refusal")
_TOOL_TYPES = ("function", "web_search", "web_search_preview", "file_search", "code_interpreter", "image_generation",
               "computer_use_preview", "mcp", "local_shell", "custom")
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):032x}"


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _invalid(message: str, param: str | None, code: str = "invalid_value") -> web.Response:
    return _error(400, message, param, code)


def _items(input_: Any) -> list[dict[str, Any]] | web.Response:
    """The input as stored items (with ids), or the 400 OpenAI gives."""
    if isinstance(input_, str):
        return [{"id": _id("msg"), "type": "message", "role": "user", "status": "completed",
                 "content": [{"type": "input_text", "text": input_}]}]
    if not isinstance(input_, list):
        return _invalid("Invalid type for 'input': expected one of a string or an array of input items.", "input",
                        "invalid_type")
    items = []
    for i, item in enumerate(input_):
        kind = item.get("type", "message" if "role" in item else None) if isinstance(item, dict) else None
        if kind not in _ITEM_TYPES:
            return _invalid(f"Invalid value: {kind!r}. Supported values are: {', '.join(_ITEM_TYPES)}.",
                            f"input[{i}].type")
        if kind == "message":
            content = item.get("content")
            if isinstance(content, str):
                content = [{"type": "input_text" if item.get("role") != "assistant" else "output_text", "text": content}]
            for p, part in enumerate(content or ()):
                if part.get("type") not in _PART_TYPES:
                    return _invalid(f"Invalid value: {part.get('type')!r}.", f"input[{i}].content[{p}].type")
            items.append({"id": item.get("id") or _id("msg"), "type": "message", "role": item.get("role"),
                          "status": "completed", "content": content})
        elif kind in ("function_call", "function_call_output"):
            required = ("call_id", "name", "arguments") if kind == "function_call" else ("call_id", "output")
            for name in required:
                if name not in item:
                    return _invalid(f"Missing required parameter: 'input[{i}].{name}'.", f"input[{i}].{name}",
                                    "missing_required_parameter")
            items.append({"id": item.get("id") or _id("fc" if kind == "function_call" else "fco"), **item,
                          "status": "completed"})
        else:
            items.append(item)
    return items


def _check_tools(tools: Any) -> web.Response | None:
    for t, tool in enumerate(tools or ()):
        if tool.get("type") not in _TOOL_TYPES:
            return _invalid(f"Invalid value: {tool.get('type')!r}.", f"tools[{t}].type")
        if tool["type"] == "function":
            if "function" in tool:  # the chat shape: Responses flattens it
                return _error(400, "Unknown parameter: 'tools[0].function'.", f"tools[{t}].function",
                              "unknown_parameter")
            if not isinstance(tool.get("name"), str):
                return _invalid(f"Missing required parameter: 'tools[{t}].name'.", f"tools[{t}].name",
                                "missing_required_parameter")
    return None


def _output(body: dict[str, Any], items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The output items and output tokens for a request."""
    output: list[dict[str, Any]] = []
    reasoning = 0
    if body["model"].startswith("o"):
        output.append({"id": _id("rs"), "type": "reasoning", "summary": []})
        reasoning = REASONING_TOKENS
    last = items[-1] if items else {}
    if body.get("tools") and last.get("type") != "function_call_output":
        name = next(t["name"] for t in body["tools"] if t["type"] == "function")
        output.append({"id": _id("fc"), "type": "function_call", "status": "completed", "arguments": TOOL_ARGUMENTS,
                       "call_id": _id("call"), "name": name})
        return output, 8 + reasoning
    text = TOOL_REPLY if last.get("type") == "function_call_output" else "".join(REPLY)
    output.append({"id": _id("msg"), "type": "message", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]})
    return output, len(REPLY) + reasoning


def _response(body: dict[str, Any], id_: str, status: str, output: list[dict[str, Any]],
              usage: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": id_, "object": "response", "created_at": int(time.time()), "status": status,
        "background": bool(body.get("background")), "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None, "model": body["model"] + "-2025-01-01", "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "service_tier": "default", "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [], "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0), "truncation": "disabled", "usage": usage, "user": None,
        "metadata": body.get("metadata") or {},
    }


def _usage(output_tokens: int, reasoning: int) -> dict[str, Any]:
    return {"input_tokens": INPUT_TOKENS,
            "input_tokens_details": {"cached_tokens": CACHED_TOKENS, "cache_write_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": INPUT_TOKENS + output_tokens}


def _authorized(request: web.Request) -> web.Response | None:
    return request.app[_AUTHORIZED](request)


async def create(request: web.Request) -> web.StreamResponse:
    if (denied := _authorized(request)) is not None:
        return denied
    body = orjson.loads(await request.read())
    for name in body:
        if name not in _PARAMS:
            return _error(400, f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    if not isinstance(body.get("model"), str):
        return _invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    limit = body.get("max_output_tokens")
    if isinstance(limit, int) and limit < 16:
        return _invalid("Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got "
                        f"{limit} instead.", "max_output_tokens", "integer_below_min_value")
    if (refused := _check_tools(body.get("tools"))) is not None:
        return refused
    items = _items(body.get("input", []))
    if isinstance(items, web.Response):
        return items
    stored = request.app[STORED]
    known_calls = {item["call_id"] for item in items if item.get("type") == "function_call"}
    if (previous := body.get("previous_response_id")) is not None:
        if previous not in stored:
            return _error(404, f"Previous response with id '{previous}' not found.", "previous_response_id")
        known_calls |= {item["call_id"] for item in stored[previous][0]["output"] if item["type"] == "function_call"}
    for item in items:
        if item.get("type") == "function_call_output" and item["call_id"] not in known_calls:
            return _invalid(f"No tool call found for function call output with call_id {item['call_id']}.", "input")
    id_ = _id("resp")
    output, output_tokens = _output(body, items)
    reasoning = REASONING_TOKENS if body["model"].startswith("o") else 0
    if body.get("background"):
        response = _response(body, id_, "queued", [], None)
    else:
        response = _response(body, id_, "completed", output, _usage(output_tokens, reasoning))
        response["completed_at"] = response["created_at"]
    if body.get("store", True):
        stored[id_] = (response, items)
    if body.get("stream"):
        return await _stream(request, body, response)
    return web.Response(body=orjson.dumps(response), content_type="application/json")


async def _stream(request: web.Request, body: dict[str, Any], final: dict[str, Any]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    sequence = itertools.count()

    async def send(type_: str, **fields: Any) -> None:
        data = orjson.dumps({"type": type_, "sequence_number": next(sequence), **fields})
        await response.write(b"event: " + type_.encode() + b"\ndata: " + data + b"\n\n")

    started = {**final, "status": "in_progress", "output": [], "usage": None, "completed_at": None}
    await send("response.created", response=started)
    await send("response.in_progress", response=started)
    for index, item in enumerate(final["output"]):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            await send("response.output_item.added", output_index=index,
                       item={**item, "status": "in_progress", "content": []})
            empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            await send("response.content_part.added", item_id=item["id"], output_index=index, content_index=0,
                       part=empty)
            pieces = REPLY if text == "".join(REPLY) else [text]
            for piece in pieces:
                await send("response.output_text.delta", item_id=item["id"], output_index=index, content_index=0,
                           delta=piece, logprobs=[])
            await send("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                       text=text, logprobs=[])
            await send("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                       part={**empty, "text": text})
        elif item["type"] == "function_call":
            await send("response.output_item.added", output_index=index,
                       item={**item, "status": "in_progress", "arguments": ""})
            for piece in (item["arguments"][:8], item["arguments"][8:]):
                await send("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                           delta=piece)
            await send("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                       arguments=item["arguments"])
        else:
            await send("response.output_item.added", output_index=index, item=item)
        await send("response.output_item.done", output_index=index, item=item)
    await send("response.completed", response=final)
    await response.write_eof()
    return response


def _find(request: web.Request) -> tuple[dict[str, Any], list[dict[str, Any]]] | web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    id_ = request.match_info["id"]
    found = request.app[STORED].get(id_)
    if found is None:
        return _error(404, f"Response with id '{id_}' not found.")
    return found


async def retrieve(request: web.Request) -> web.Response:
    found = _find(request)
    if isinstance(found, web.Response):
        return found
    return web.Response(body=orjson.dumps(found[0]), content_type="application/json")


async def delete(request: web.Request) -> web.Response:
    found = _find(request)
    if isinstance(found, web.Response):
        return found
    del request.app[STORED][found[0]["id"]]
    return web.Response(body=orjson.dumps({"id": found[0]["id"], "object": "response.deleted", "deleted": True}),
                        content_type="application/json")


async def input_items(request: web.Request) -> web.Response:
    found = _find(request)
    if isinstance(found, web.Response):
        return found
    items = found[1] if request.query.get("order") == "asc" else found[1][::-1]
    items = items[: int(request.query.get("limit", 20))]
    page = {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": False}
    return web.Response(body=orjson.dumps(page), content_type="application/json")


async def cancel(request: web.Request) -> web.Response:
    found = _find(request)
    if isinstance(found, web.Response):
        return found
    response = found[0]
    if not response["background"]:
        return _invalid("Cannot cancel a synchronous response.", None)
    response["status"] = "cancelled"
    return web.Response(body=orjson.dumps(response), content_type="application/json")


def install(app: web.Application, authorized: Check) -> None:
    app[STORED] = {}
    app[_AUTHORIZED] = authorized
    app.router.add_post("/v1/responses", create)
    app.router.add_get("/v1/responses/{id}", retrieve)
    app.router.add_delete("/v1/responses/{id}", delete)
    app.router.add_get("/v1/responses/{id}/input_items", input_items)
    app.router.add_post("/v1/responses/{id}/cancel", cancel)
