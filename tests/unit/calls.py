"""A real ``Call`` as the OpenAI family builds it for a chat completion, for the translators' tests."""

from __future__ import annotations

from typing import Any

import orjson

from polyrelay.providers.base import Call


def chat_call(payload: dict[str, Any] | None, model: str, *, stream: bool = False,
              include_usage: bool = False) -> Call:
    return Call(family="openai", endpoint="chat.completions", path="/v1/chat/completions", model=model,
                body=orjson.dumps(payload or {}), content_type="application/json", request_id="req_unit",
                payload=payload, stream=stream, sse=stream, include_usage=include_usage)
