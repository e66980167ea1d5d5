"""What the translators' tests share: a real chat ``Call`` as the OpenAI family builds it, and an SSE reader."""

from __future__ import annotations

from typing import Any

import orjson

from polyrelay.providers.base import Call


def chat_call(payload: dict[str, Any] | None, model: str, *, stream: bool = False,
              include_usage: bool = False) -> Call:
    return Call(family="openai", endpoint="chat.completions", path="/v1/chat/completions", model=model,
                body=orjson.dumps(payload or {}), content_type="application/json", request_id="req_unit",
                payload=payload, stream=stream, sse=stream, include_usage=include_usage)


def sse_events(raw: bytes) -> list[Any]:
    """The JSON objects (or ``"[DONE]"``) of an OpenAI SSE byte string."""
    out: list[Any] = []
    for block in raw.split(b"\n\n"):
        if not block:
            continue
        assert block.startswith(b"data: "), block
        data = block[6:]
        out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out
