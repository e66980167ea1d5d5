"""A wire-accurate fake of the OpenAI REST API (the parts polyrelay relays).

Shapes follow the official OpenAPI spec: chat completions (JSON and SSE chunks with
the include_usage chunk), completions, embeddings (float and base64), images,
speech (binary), transcriptions/translations (json, verbose_json, text, srt, vtt), moderations.

Knobs, in the ``app[KNOBS]`` dict (``FakeServer.knobs``), set before or during a test:
- ``fail_with``: answer every request with this HTTP status and an OpenAI error body.
- ``omit_usage``: never report usage (like some OpenAI-compatible servers).
- ``hold_stream``: a threading.Event; chat and completion streams send their first
  chunk, then wait for it before sending the rest (to observe time to first byte).
- ``reply_with``: ``(content_type, body)``; non-streamed chat completions answer HTTP 200
  with exactly this (a proxy's HTML page, truncated JSON, JSON of the wrong shape).
- ``hold_reply``: a threading.Event; non-streamed chat completions wait for it (30 s at
  most) before answering, and set ``knobs["reply_held"]`` (a threading.Event) when they
  start waiting (a slow upstream; a caller that leaves before the answer).
- ``break_after``: chat streams drop the connection after this many content chunks.
- ``echo``: an HTTP status; every request is refused with it, the error message (and a
  ``WWW-Authenticate`` header) repeating the key it was sent (``tests.fakes.echo``).
- ``echo_in_stream``: chat streams answer 200, one content chunk, then an error event
  ``data: {"error": {...}}`` repeating the key (as some OpenAI-compatible servers do).
The model ``slow-stream`` streams a chunk every 20 ms for a long time; when the
client goes away, ``knobs["stream_cancelled"]`` (a threading.Event) is set.
Chat with ``tools`` answers one tool call (streamed as OpenAI does: id and name first, then
the arguments in pieces), and ``TOOL_ANSWER`` once the last message is its ``tool`` result;
images (``image_url`` parts) are described in the reply; the model ``fake-reasoner`` thinks
aloud first, DeepSeek-style (``reasoning_content``).
The Responses API (``/v1/responses`` and its stored-response calls) is ``tests/fakes/openai_responses.py``.
Multipart requests are parsed and kept in ``app[FORMS]`` (field name -> bytes for
files, str for text fields), so tests can compare what arrived upstream.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import threading
import time
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.forms import read_form
from tests.fakes import openai_responses
from tests.fakes.echo import echoed
from tests.fakes.server import KNOBS

CHAT_REPLY = ["Hello", " from", " the", " fake", " upstream", "."]
PROMPT_TOKENS = 12
COMPLETION_TOKENS = len(CHAT_REPLY)
EMBEDDING_DIM = 8
SPEECH_BYTES = b"ID3" + bytes(range(256)) * 64  # a fake MP3, 16 KiB
TRANSCRIPT = "The quick brown fox jumps over the lazy dog."
AUDIO_SECONDS = 7.25
TOOL_ANSWER = "It is sunny in Paris."
TOOL_CALL_ID = "call_abc123"
REASONER = "fake-reasoner"
REASONING = ["The user", " greets me."]


KEYS = web.AppKey("keys", set)
FORMS = web.AppKey("forms", list)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error(status: int, message: str, type_: str, code: str | None = None) -> web.Response:
    return _json({"error": {"message": message, "type": type_, "param": None, "code": code}}, status)


def _authorized(request: web.Request) -> web.Response | None:
    if (status := request.app[KNOBS].get("echo")) is not None:
        refusal = error(status, echoed(request), "invalid_request_error", "invalid_api_key")
        refusal.headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{echoed(request)}"'
        return refusal
    keys: set[str] = request.app[KEYS]
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer ") or auth[7:] not in keys:
        return error(401, f"Incorrect API key provided: {auth[7:]}.", "invalid_request_error", "invalid_api_key")
    if (status := request.app[KNOBS].get("fail_with")) is not None:
        return error(status, "The server had an error while processing your request.", "server_error")
    return None


def _usage(app: web.Application, prompt: int, completion: int) -> dict[str, Any] | None:
    if app[KNOBS].get("omit_usage"):
        return None
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


async def _form(request: web.Request) -> dict[str, bytes | str]:
    """The multipart fields (bytes for files, str for text), also kept in app[FORMS] for tests."""
    form = await read_form(request)
    fields = {f.name: f.data if f.filename is not None else f.text for f in form.fields}
    request.app[FORMS].append(fields)
    return fields


async def _hold(request: web.Request) -> None:
    """Wait for the ``hold_stream`` knob's event, if the test set one."""
    gate: threading.Event | None = request.app[KNOBS].get("hold_stream")
    if gate is not None:
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 30)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    if (denied := _authorized(request)) is not None:
        return denied
    body = orjson.loads(await request.read())
    model = body["model"]
    if model == "upstream-rejects":
        return error(400, "Invalid value for 'temperature'.", "invalid_request_error", "invalid_value")
    created = int(time.time())
    if body.get("stream"):
        return await _chat_stream(request, body, created)
    knobs = request.app[KNOBS]
    if (gate := knobs.get("hold_reply")) is not None:
        knobs["reply_held"].set()
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 30)
    if (canned := knobs.get("reply_with")) is not None:
        content_type, raw = canned
        return web.Response(body=raw, status=200, headers={"Content-Type": content_type})
    if (tool := _tool_called(body)) is not None:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": TOOL_CALL_ID,
                    "type": "function",
                    "function": {"name": tool, "arguments": '{"city":"Paris"}'},
                }
            ],
            "refusal": None,
        }
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": "".join(_text_reply(body)), "refusal": None}
        finish = "stop"
    if model == REASONER:
        message["reasoning_content"] = "".join(REASONING)
    data: dict[str, Any] = {
        "id": "chatcmpl-fake123",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
    }
    if (usage := _usage(request.app, PROMPT_TOKENS, COMPLETION_TOKENS)) is not None:
        data["usage"] = usage
    return _json(data)


def _tool_called(body: dict[str, Any]) -> str | None:
    """The tool the reply calls: the first one offered, unless the last message is a tool's result."""
    tools, messages = body.get("tools"), body.get("messages") or [{}]
    if not tools or body.get("tool_choice") == "none" or messages[-1].get("role") == "tool":
        return None
    return str(tools[0]["function"]["name"])


def _text_reply(body: dict[str, Any]) -> list[str]:
    messages = body.get("messages") or [{}]
    if messages[-1].get("role") == "tool":
        return [TOOL_ANSWER]
    images = [part["image_url"]["url"] for m in messages if isinstance(m.get("content"), list)
              for part in m["content"] if part.get("type") == "image_url"]
    if images:
        described = [f"{url.split(';')[0][5:]} {len(base64.b64decode(url.split(',', 1)[1]))} bytes"
                     if url.startswith("data:") else url for url in images]
        return [f"I see {len(images)} image(s): ", ", ".join(described), "."]
    return CHAT_REPLY


def _chunk(model: str, created: int, delta: dict[str, Any], finish: str | None, with_usage: bool) -> bytes:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-fake123",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage:
        chunk["usage"] = None
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def _chat_stream(request: web.Request, body: dict[str, Any], created: int) -> web.StreamResponse:
    model = body["model"]
    include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and not request.app[KNOBS].get("omit_usage")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    pieces = _text_reply(body) if model != "slow-stream" else ["tick "] * 2000
    tool = _tool_called(body)
    try:
        await response.write(_chunk(model, created, {"role": "assistant", "content": ""}, None, include_usage))
        if model == REASONER:
            for thought in REASONING:
                await response.write(_chunk(model, created, {"reasoning_content": thought}, None, include_usage))
        if tool is not None:
            return await _tool_stream(request, response, body, created, tool, include_usage)
        if request.app[KNOBS].get("echo_in_stream"):
            refusal = {"error": {"message": echoed(request), "type": "invalid_request_error", "code": "invalid_api_key"}}
            await response.write(b"data: " + orjson.dumps(refusal) + b"\n\n")
            await response.write_eof()
            return response
        await _hold(request)
        for sent, piece in enumerate(pieces, 1):
            if model == "slow-stream":
                await asyncio.sleep(0.02)
            await response.write(_chunk(model, created, {"content": piece}, None, include_usage))
            if sent == request.app[KNOBS].get("break_after"):
                request.transport.close()  # the upstream dies mid-answer: no finish, no [DONE]
                return response
        await response.write(_chunk(model, created, {}, "stop", include_usage))
        if include_usage:
            usage_chunk = {
                "id": "chatcmpl-fake123",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": _usage(request.app, PROMPT_TOKENS, len(pieces)),
            }
            await response.write(b"data: " + orjson.dumps(usage_chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        request.app[KNOBS]["stream_cancelled"].set()
        raise
    await response.write_eof()
    return response


async def _tool_stream(request: web.Request, response: web.StreamResponse, body: dict[str, Any], created: int,
                       tool: str, include_usage: bool) -> web.StreamResponse:
    """A tool call as OpenAI streams it: id, name and empty arguments first, then the arguments in pieces."""
    model = body["model"]
    opening = {"index": 0, "id": TOOL_CALL_ID, "type": "function", "function": {"name": tool, "arguments": ""}}
    await response.write(_chunk(model, created, {"tool_calls": [opening]}, None, include_usage))
    for piece in ('{"city"', ':"Paris"}'):
        delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        await response.write(_chunk(model, created, delta, None, include_usage))
    await response.write(_chunk(model, created, {}, "tool_calls", include_usage))
    if include_usage:
        usage_chunk = {"id": "chatcmpl-fake123", "object": "chat.completion.chunk", "created": created, "model": model,
                       "system_fingerprint": "fp_fake", "choices": [],
                       "usage": _usage(request.app, PROMPT_TOKENS, COMPLETION_TOKENS)}
        await response.write(b"data: " + orjson.dumps(usage_chunk) + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def completions(request: web.Request) -> web.StreamResponse:
    if (denied := _authorized(request)) is not None:
        return denied
    body = orjson.loads(await request.read())
    if body.get("stream"):
        return await _completion_stream(request, body, int(time.time()))
    data: dict[str, Any] = {
        "id": "cmpl-fake123",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{"text": "".join(CHAT_REPLY), "index": 0, "logprobs": None, "finish_reason": "stop"}],
    }
    if (usage := _usage(request.app, PROMPT_TOKENS, COMPLETION_TOKENS)) is not None:
        data["usage"] = usage
    return _json(data)


def _completion_chunk(model: str, created: int, text: str, finish: str | None, with_usage: bool) -> bytes:
    chunk: dict[str, Any] = {
        "id": "cmpl-fake123",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage:
        chunk["usage"] = None
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def _completion_stream(request: web.Request, body: dict[str, Any], created: int) -> web.StreamResponse:
    model = body["model"]
    asked = bool((body.get("stream_options") or {}).get("include_usage"))
    include_usage = asked and not request.app[KNOBS].get("omit_usage")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    await response.write(_completion_chunk(model, created, CHAT_REPLY[0], None, include_usage))
    await _hold(request)
    for piece in CHAT_REPLY[1:]:
        await response.write(_completion_chunk(model, created, piece, None, include_usage))
    await response.write(_completion_chunk(model, created, "", "stop", include_usage))
    if include_usage:
        usage_chunk = {
            "id": "cmpl-fake123",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [],
            "usage": _usage(request.app, PROMPT_TOKENS, COMPLETION_TOKENS),
        }
        await response.write(b"data: " + orjson.dumps(usage_chunk) + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def embedding_vector(index: int) -> list[float]:
    return [round(0.125 * (index + 1) * (i + 1), 6) for i in range(EMBEDDING_DIM)]


async def embeddings(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    body = orjson.loads(await request.read())
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or not 1 <= dimensions <= EMBEDDING_DIM):
        return error(400, f"Invalid value for 'dimensions': {dimensions}.", "invalid_request_error", "invalid_value")
    for index, _ in enumerate(inputs):
        vector = embedding_vector(index)[: dimensions or EMBEDDING_DIM]
        value: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": value})
    usage = {"prompt_tokens": 5 * len(inputs), "total_tokens": 5 * len(inputs)}
    return _json({"object": "list", "data": data, "model": body["model"], "usage": usage})


def _image_data(n: int, response_format: str) -> list[dict[str, Any]]:
    if response_format == "b64_json":
        return [{"b64_json": base64.b64encode(b"\x89PNG fake %d" % i).decode(), "revised_prompt": "a cat"} for i in range(n)]
    return [{"url": f"https://images.example/fake-{i}.png", "revised_prompt": "a cat"} for i in range(n)]


async def image_generations(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    body = orjson.loads(await request.read())
    n = int(body.get("n") or 1)
    return _json({"created": int(time.time()), "data": _image_data(n, body.get("response_format", "url"))})


async def image_multipart(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    form = await _form(request)
    if "image" not in form:
        return error(400, "Missing required parameter: 'image'.", "invalid_request_error")
    n = int(form.get("n") or 1)
    return _json({"created": int(time.time()), "data": _image_data(n, str(form.get("response_format") or "url"))})


async def speech(request: web.Request) -> web.StreamResponse:
    if (denied := _authorized(request)) is not None:
        return denied
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
    await response.prepare(request)
    for offset in range(0, len(SPEECH_BYTES), 4096):
        await response.write(SPEECH_BYTES[offset : offset + 4096])
    await response.write_eof()
    return response


async def transcriptions(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    form = await _form(request)
    if "file" not in form:
        return error(400, "Missing required parameter: 'file'.", "invalid_request_error")
    response_format = str(form.get("response_format") or "json")
    if response_format == "json":
        return _json({"text": TRANSCRIPT})
    if response_format == "verbose_json":
        return _json(
            {
                "task": "transcribe",
                "language": "english",
                "duration": AUDIO_SECONDS,
                "text": TRANSCRIPT,
                "segments": [{"id": 0, "start": 0.0, "end": AUDIO_SECONDS, "text": TRANSCRIPT}],
            }
        )
    if response_format == "text":
        return web.Response(text=TRANSCRIPT + "\n", content_type="text/plain")
    if response_format in ("srt", "vtt"):
        stamp = "00:00:07,250" if response_format == "srt" else "00:00:07.250"
        start = "00:00:00,000" if response_format == "srt" else "00:00:00.000"
        head = "" if response_format == "srt" else "WEBVTT\n\n"
        return web.Response(text=f"{head}1\n{start} --> {stamp}\n{TRANSCRIPT}\n", content_type="text/plain")
    return error(400, f"Invalid response_format {response_format!r}.", "invalid_request_error")


# Moderation models the fake knows, by the name a request may use, and the snapshot each resolves to.
MODERATION_MODELS = {
    "omni-moderation-latest": "omni-moderation-2024-09-26",
    "omni-moderation-2024-09-26": "omni-moderation-2024-09-26",
    "text-moderation-latest": "text-moderation-007",
    "text-moderation-stable": "text-moderation-007",
}
MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                         "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
                         "sexual/minors", "violence", "violence/graphic")
FLAGGED_WORD = "kill"  # text containing it is flagged for violence


def _moderation_result(texts: list[str], images: int) -> dict[str, Any]:
    violent = any(FLAGGED_WORD in text.lower() for text in texts)
    kinds = ["text"] * bool(texts) + ["image"] * bool(images)
    return {
        "flagged": violent,
        "categories": {name: violent and name == "violence" for name in MODERATION_CATEGORIES},
        "category_scores": {name: 0.91 if violent and name == "violence" else 0.0001 for name in MODERATION_CATEGORIES},
        "category_applied_input_types": {name: kinds if name in ("violence", "sexual", "self-harm") else kinds[:1]
                                         for name in MODERATION_CATEGORIES},
    }


async def moderations(request: web.Request) -> web.Response:
    """``input`` a string, strings (one result each) or text/image_url parts (one result for all)."""
    if (denied := _authorized(request)) is not None:
        return denied
    body = orjson.loads(await request.read())
    if unknown := set(body) - {"input", "model"}:
        return error(400, f"Unrecognized request argument supplied: {sorted(unknown)[0]}", "invalid_request_error")
    model = body.get("model", "omni-moderation-latest")
    if model not in MODERATION_MODELS:
        return error(404, f"The model `{model}` does not exist or you do not have access to it.",
                     "invalid_request_error", "model_not_found")
    value = body.get("input")
    if value is None:
        return error(400, "Missing required parameter: 'input'.", "invalid_request_error")
    if isinstance(value, str):
        results = [_moderation_result([value], 0)]
    elif isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        results = [_moderation_result([item], 0) for item in value]
    elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        texts = [item["text"] for item in value if item.get("type") == "text" and isinstance(item.get("text"), str)]
        images = [item for item in value if item.get("type") == "image_url"
                  and isinstance((item.get("image_url") or {}).get("url"), str)]
        if len(texts) + len(images) != len(value):
            return error(400, "Invalid value for 'input': each part must be a text or image_url object.",
                         "invalid_request_error")
        if images and not model.startswith("omni-"):
            return error(400, f"The model `{model}` does not support image inputs.", "invalid_request_error")
        results = [_moderation_result(texts, len(images))]
    else:
        return error(400, "Invalid type for 'input'.", "invalid_request_error")
    return _json({"id": "modr-fake123", "model": MODERATION_MODELS[model], "results": results})


def create_app(keys: set[str]) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[KEYS] = keys
    app[FORMS] = []
    app[KNOBS] = {"stream_cancelled": threading.Event(), "reply_held": threading.Event()}
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/images/generations", image_generations)
    app.router.add_post("/v1/images/edits", image_multipart)
    app.router.add_post("/v1/images/variations", image_multipart)
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/translations", transcriptions)
    openai_responses.install(app, _authorized)
    app.router.add_post("/v1/moderations", moderations)
    app.router.add_get("/v1/models", list_models)
    return app


LISTED_MODELS = ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]


async def list_models(request: web.Request) -> web.Response:
    """OpenAI's model list: ``{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}``."""
    if (refused := _authorized(request)) is not None:
        return refused
    return _json({"object": "list", "data": [{"id": name, "object": "model", "created": 1_700_000_000,
                                              "owned_by": "system"} for name in LISTED_MODELS]})
