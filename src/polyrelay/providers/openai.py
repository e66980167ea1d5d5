"""OpenAI-compatible upstreams (OpenAI, DeepSeek, vLLM, Ollama, ...): pass-through.

The caller's body goes upstream as it came, except the model name when the channel
maps it and ``stream_options.include_usage`` on streams so every stream can be billed.
Replies come back byte for byte; only the usage-only chunk a caller did not ask for
is removed from streams.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from polyrelay import kinds, multipart
from polyrelay.billing import tokenizer
from polyrelay.billing.meter import Usage
from polyrelay.errors import RelayError
from polyrelay.providers.base import Adaptor, Call, Reply, ReplyStream, Services, Target, UpstreamRequest
from polyrelay.providers.openai_responses import METHOD, ResponsesUsageWatcher
from polyrelay.providers.streams import ObservedStream
from polyrelay.scrub import scrub_bytes
from polyrelay.store.snapshot import ChannelRecord

# Only whisper models answer verbose_json, which carries the duration we bill by.
_DURATION_MODELS = ("whisper",)
_CUE_END = re.compile(rb"--> (\d+):(\d{2}):(\d{2})[.,](\d{3})")


def usage_from_openai(data: dict[str, Any]) -> Usage | None:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    if usage.get("type") == "duration":  # transcription models billed by audio length
        return Usage(seconds=float(usage.get("seconds") or 0))
    prompt = usage.get("prompt_tokens", usage.get("input_tokens")) or 0
    completion = usage.get("completion_tokens", usage.get("output_tokens")) or 0
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    return Usage(
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


def _error_fields(body: bytes) -> tuple[str | None, str | None, str | None, str | None]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None, None, None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, str):
        return error, None, None, None
    if not isinstance(error, dict):
        return None, None, None, None
    message = error.get("message")
    code = error.get("code")
    return (
        str(message) if message is not None else None,
        error.get("type"),
        str(code) if code is not None else None,
        error.get("param"),
    )


def _counted_prompt(call: Call) -> int:
    payload = call.payload or {}
    if "messages" in payload:
        return tokenizer.count_messages(call.model, payload.get("messages") or [])
    return tokenizer.count_prompt(call.model, payload.get("prompt", payload.get("input")))


def _completion_text(choices: list[Any]) -> str:
    """The generated text of chat or completion choices (messages, deltas or plain text)."""
    pieces: list[str] = []
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            pieces.append(choice["text"])
        message = choice.get("message") or choice.get("delta") or {}
        if isinstance(message.get("content"), str):
            pieces.append(message["content"])
        for tool_call in message.get("tool_calls") or ():
            function = tool_call.get("function") or {}
            pieces.append((function.get("name") or "") + (function.get("arguments") or ""))
    return "".join(pieces)


def _moderated_text(value: Any) -> str:
    """The text of a moderation input (a string, strings, or text and image parts), for billing by token."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return ""
    return "\n".join(item if isinstance(item, str) else str(item.get("text") or "") for item in value
                     if isinstance(item, (str, dict)))


_CHANNEL_KEYS = "channel_keys"  # in ``Call.extra``: the keys of the channel answering now


def _without_echoes(call: Call, body: bytes) -> bytes:
    """``body`` scrubbed of our keys when it carries an error: OpenAI-compatible servers (one-api, vLLM...)
    also refuse with HTTP 200 or inside a stream, and some repeat the key they were sent."""
    if b'"error"' not in body:
        return body
    return scrub_bytes(body, call.extra.get(_CHANNEL_KEYS, ()))


# Kinds whose successful answer is always a JSON object (speech is audio bytes, transcripts may be text).
_JSON_KINDS = frozenset({kinds.CHAT, kinds.COMPLETIONS, kinds.EMBEDDINGS, kinds.IMAGES, kinds.IMAGE_EDITS,
                         kinds.MODERATIONS, kinds.RESPONSES})


class OpenAIAdaptor(Adaptor):
    type = "openai"
    kinds = frozenset({kinds.CHAT, kinds.COMPLETIONS, kinds.EMBEDDINGS, kinds.IMAGES, kinds.IMAGE_EDITS, kinds.AUDIO,
                       kinds.MODERATIONS, kinds.RESPONSES})

    async def prepare(self, call: Call, target: Target, services: Services) -> None:
        call.extra[_CHANNEL_KEYS] = target.channel.keys  # for ``_without_echoes``

    def speaks(self, kind: str, channel: ChannelRecord) -> bool:
        # Many OpenAI-compatible servers lack the Responses API: ``responses: false`` has it bridged through chat.
        if kind == kinds.RESPONSES and channel.options.get("responses") is False:
            return False
        return kind in self.kinds

    def build_request(self, call: Call, target: Target) -> UpstreamRequest:
        url = target.channel.base_url + call.path
        headers = {"Authorization": f"Bearer {target.key}"}
        if (method := call.extra.get(METHOD)) is not None:  # about a stored response: no body
            return UpstreamRequest(method=method, url=url, headers=headers)
        headers["Content-Type"] = call.content_type
        return UpstreamRequest(method="POST", url=url, headers=headers, body=self._body(call, target))

    def _body(self, call: Call, target: Target) -> bytes | list[bytes | memoryview]:
        if call.parts is not None:
            return self._multipart_body(call, target)
        payload = call.payload
        if payload is None:
            return call.body
        changed = False
        if target.upstream_model != call.model:
            payload = {**payload, "model": target.upstream_model}
            changed = True
        if (call.sse and target.channel.options.get("stream_usage", True) and not call.include_usage
                and call.kind != kinds.RESPONSES):  # a Responses stream always ends with its usage
            payload = {**payload, "stream_options": {**(payload.get("stream_options") or {}), "include_usage": True}}
            changed = True
        return orjson.dumps(payload) if changed else call.body

    def _multipart_body(self, call: Call, target: Target) -> bytes | list[bytes | memoryview]:
        parts = call.parts or []
        replace: list[tuple[multipart.Part, bytes]] = []
        append: list[tuple[str, bytes]] = []
        mapped = target.upstream_model != call.model
        model = multipart.find(parts, "model")
        if mapped and model is not None:
            replace.append((model, target.upstream_model.encode()))
        wants_duration = call.endpoint.startswith("audio.") and target.upstream_model.startswith(_DURATION_MODELS)
        response_format = multipart.find(parts, "response_format")
        if wants_duration and call.extra.get("response_format") in ("json", "text"):
            if response_format is not None:
                replace.append((response_format, b"verbose_json"))
        if wants_duration and response_format is None:
            append.append(("response_format", b"verbose_json"))
        if mapped and model is None:
            # The caller relied on the default model (dall-e-2, whisper-1), which is mapped: say so upstream,
            # or the upstream would run its own default instead of the mapped model.
            append.append(("model", target.upstream_model.encode()))
        if not replace and not append:
            return call.body
        return multipart.splice(call.body, call.content_type, replace, append)

    async def read_reply(self, call: Call, response: aiohttp.ClientResponse) -> Reply:
        body = await response.read()
        content_type = self.content_type(response)
        if call.endpoint.startswith("audio."):
            return self._transcription_reply(call, response.status, body, content_type)
        usage: Usage | None = None
        if not content_type.startswith("application/json") and call.kind in _JSON_KINDS:
            raise ValueError(f"a {content_type or 'untyped'} body where JSON was expected")  # e.g. a proxy's HTML page
        if content_type.startswith("application/json"):
            body = _without_echoes(call, body)
            data = orjson.loads(body)
            usage = usage_from_openai(data)
            if call.endpoint.startswith("images."):
                usage = Usage(images=len(data.get("data") or ()), source="upstream")
            elif usage is None and call.endpoint in ("chat.completions", "completions", "embeddings"):
                completion = tokenizer.count_text(call.model, _completion_text(data.get("choices") or []))
                usage = Usage(prompt_tokens=_counted_prompt(call), completion_tokens=completion, source="counted")
            elif usage is None and call.kind == kinds.MODERATIONS:  # OpenAI reports no usage for moderations
                text = _moderated_text((call.payload or {}).get("input"))
                usage = Usage(prompt_tokens=tokenizer.count_text(call.model, text), source="counted")
        return Reply(status=response.status, body=body, content_type=content_type, usage=usage)

    def _transcription_reply(self, call: Call, status: int, body: bytes, content_type: str) -> Reply:
        """Bill transcriptions by audio seconds; answer in the format the caller asked for."""
        requested = call.extra.get("response_format", "json")
        if content_type.startswith("application/json"):
            data = orjson.loads(body)
            usage = usage_from_openai(data) or Usage()
            if "duration" in data:
                usage = Usage(seconds=float(data["duration"] or 0))
            if requested == "json" and "segments" in data:
                # We asked for verbose_json to learn the duration; the caller asked for json.
                body = orjson.dumps({"text": data.get("text", "")})
            elif requested == "text" and "segments" in data:
                body, content_type = str(data.get("text", "")).encode() + b"\n", "text/plain; charset=utf-8"
            return Reply(status=status, body=body, content_type=content_type, usage=usage)
        cue_ends = _CUE_END.findall(body)  # srt and vtt: the last cue ends at the audio's length
        seconds = 0.0
        if cue_ends:
            h, m, s, ms = (int(x) for x in cue_ends[-1])
            seconds = h * 3600 + m * 60 + s + ms / 1000
        return Reply(status=status, body=body, content_type=content_type, usage=Usage(seconds=seconds))

    def stream_reply(self, call: Call, response: aiohttp.ClientResponse) -> ReplyStream:
        if call.sse and call.kind == kinds.RESPONSES:
            return ObservedStream(response, ResponsesUsageWatcher(call))
        if call.sse:
            return EventStream(call, response)
        return ByteStream(call, response)

    def upstream_error(self, call: Call, status: int, body: bytes) -> RelayError:
        message, type_, code, param = _error_fields(body)
        if message is None:
            text = body[:500].decode("utf-8", "replace").strip()
            message = f"Upstream answered HTTP {status}" + (f": {text}" if text else ".")
        return RelayError(status, message, type=type_ or "upstream_error", code=code, param=param)


class ByteStream(ReplyStream):
    """Binary bodies (speech audio) forwarded chunk by chunk; billed by input characters."""

    def __init__(self, call: Call, response: aiohttp.ClientResponse) -> None:
        self._call = call
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk

    def usage(self) -> Usage | None:
        return Usage(characters=self._call.characters, source="request")


class EventStream(ReplyStream):
    """Server-sent events forwarded event by event, reading usage on the way.

    Only events that mention usage are parsed. If the stream ends without a usage
    event (an upstream that ignores ``include_usage``, or a caller that hung up), the
    text produced so far is counted locally instead.
    """

    def __init__(self, call: Call, response: aiohttp.ClientResponse) -> None:
        self._call = call
        self._response = response
        self._events: list[bytes] = []
        self._usage: Usage | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pending = b""
        async for chunk in self._response.content.iter_any():
            pending += chunk
            cut = _last_event_end(pending)
            if cut == 0:
                continue
            complete, pending = pending[:cut], pending[cut:]
            out = self._inspect(complete)
            if out:
                yield out
        if pending:
            yield self._inspect(pending)

    def _inspect(self, events: bytes) -> bytes:
        """Pass ``events`` on, reading the usage event among them (the last one, if several)."""
        events = _without_echoes(self._call, events)
        self._events.append(events)
        at = max(events.rfind(b'"usage":{'), events.rfind(b'"usage": {'))
        if at < 0:
            return events
        start, end = _event_bounds(events, at)
        data = _event_data(events[start:end])
        if data is None or (usage := usage_from_openai(data)) is None:
            return events
        self._usage = usage
        if not self._call.include_usage and not data.get("choices"):
            return events[:start] + events[end:]  # the usage-only chunk we asked for on the caller's behalf
        return events

    def usage(self) -> Usage | None:
        if self._usage is not None:
            return self._usage
        produced: list[str] = []
        for events in self._events:
            for event in re.split(rb"\n\n|\r\n\r\n", events):
                data = _event_data(event)
                if data is not None:
                    produced.append(_completion_text(data.get("choices") or []))
        return Usage(
            prompt_tokens=_counted_prompt(self._call),
            completion_tokens=tokenizer.count_text(self._call.model, "".join(produced)),
            source="counted",
        )


def _event_bounds(events: bytes, at: int) -> tuple[int, int]:
    """Start and end offsets of the blank-line-terminated event containing offset ``at``."""
    lf, crlf = events.rfind(b"\n\n", 0, at), events.rfind(b"\r\n\r\n", 0, at)
    start = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
    lf, crlf = events.find(b"\n\n", at), events.find(b"\r\n\r\n", at)
    ends = ([lf + 2] if lf >= 0 else []) + ([crlf + 4] if crlf >= 0 else [])
    return start, min(ends, default=len(events))


def _last_event_end(buffer: bytes) -> int:
    """Offset just past the last complete event (blank-line terminated), or 0."""
    lf = buffer.rfind(b"\n\n")
    crlf = buffer.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def _event_data(event: bytes) -> dict[str, Any] | None:
    lines = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None
    payload = b"\n".join(lines)
    if payload == b"[DONE]":
        return None
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None
