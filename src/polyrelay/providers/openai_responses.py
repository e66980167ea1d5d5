"""What the OpenAI pass-through needs to relay the Responses API natively: usage from its typed stream.

A Responses stream reports usage once, inside the ``response`` of its terminal event
(``response.completed``, ``.incomplete`` or ``.failed``), and has no usage-only chunk to
strip, so it is relayed untouched through an ``ObservedStream`` with this watcher, not
through the chat ``EventStream``.
"""

from __future__ import annotations

from typing import Any

import orjson

from polyrelay.billing import tokenizer
from polyrelay.billing.meter import Usage
from polyrelay.providers.base import Call

# In ``Call.extra``: the HTTP method of a call about a stored response (GET, DELETE); absent means POST.
METHOD = "http_method"

_TERMINAL = frozenset({b"response.completed", b"response.incomplete", b"response.failed"})
_DELTAS = frozenset({b"response.output_text.delta", b"response.function_call_arguments.delta",
                     b"response.refusal.delta"})


def counted_prompt(call: Call) -> int:
    """Prompt tokens of a Responses request by local count, for a stream cut before its usage."""
    payload = call.payload or {}
    input_ = payload.get("input")
    prompt = tokenizer.count_messages(call.model, input_) if isinstance(input_, list) else tokenizer.count_text(
        call.model, input_ if isinstance(input_, str) else "")
    instructions = payload.get("instructions")
    return prompt + tokenizer.count_text(call.model, instructions if isinstance(instructions, str) else "")


def usage_of(response: Any) -> Usage | None:
    """Usage of a ``response`` object: output tokens include reasoning tokens, input ones the cached."""
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details") or {}
    return Usage(prompt_tokens=int(usage.get("input_tokens") or 0), completion_tokens=int(usage.get("output_tokens") or 0),
                 cached_tokens=int(details.get("cached_tokens") or 0))


class ResponsesUsageWatcher:
    """Reads usage from a native Responses stream passing through; counts what was produced if it never came.

    Only the terminal event is parsed as it passes; delta events are kept raw and parsed
    only for a stream that ended without usage (a caller who left), as the chat stream does.
    """

    __slots__ = ("_call", "_usage", "_deltas")

    def __init__(self, call: Call) -> None:
        self._call = call
        self._usage: Usage | None = None
        self._deltas: list[bytes] = []

    def observe(self, name: bytes, data: bytes) -> None:
        if name in _DELTAS:
            self._deltas.append(data)
        elif name in _TERMINAL or (not name and b'"response.' in data):  # a server that sends no event names
            self._read(data)

    def _read(self, data: bytes) -> None:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        type_ = str(event.get("type") or "").encode() if isinstance(event, dict) else b""
        if type_ in _TERMINAL:
            self._usage = usage_of(event.get("response")) or self._usage
        elif type_ in _DELTAS:
            self._deltas.append(data)

    def usage(self) -> Usage | None:
        if self._usage is not None:
            return self._usage
        produced = []
        for data in self._deltas:
            delta = orjson.loads(data).get("delta")
            produced.append(delta if isinstance(delta, str) else "")
        return Usage(prompt_tokens=counted_prompt(self._call),
                     completion_tokens=tokenizer.count_text(self._call.model, "".join(produced)),
                     source="counted")
