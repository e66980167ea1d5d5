"""Reading an OpenAI chat request, for the adaptors that translate it into another protocol.

Small, shared readers so the Gemini and Anthropic translations agree on what a
message, a content part, a tool call or a stop list means.
"""

from __future__ import annotations

from typing import Any

import orjson

from polyrelay.errors import bad_request


def parts_of(content: Any) -> list[dict[str, Any]]:
    """A message's content as a list of parts (a plain string is one text part)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if isinstance(content, list):
        return [part for part in content if isinstance(part, dict)]
    raise bad_request("A message 'content' must be a string or a list of content parts.", param="messages")


def text_of(content: Any) -> str:
    """The text of a content (system prompts, tool results): text parts joined."""
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in parts_of(content) if part.get("type") == "text")


def image_url_of(part: dict[str, Any]) -> str:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    return url if isinstance(url, str) else ""


def arguments_of(function: dict[str, Any], where: str) -> dict[str, Any]:
    """A tool call's JSON ``arguments`` string as the object other protocols want."""
    raw = function.get("arguments")
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request(f"The arguments of {where} are not valid JSON.", param=where) from None
    return value if isinstance(value, dict) else {"value": value}


def stop_list(stop: Any) -> list[str] | None:
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list):
        return [s for s in stop if isinstance(s, str)] or None
    return None


def max_output_tokens(payload: dict[str, Any]) -> int | None:
    value = payload.get("max_completion_tokens")
    if value is None:  # absent or null: the older name counts
        value = payload.get("max_tokens")
    return value if isinstance(value, int) and value > 0 else None


def tool_names_by_id(messages: list[Any]) -> dict[str, str]:
    """tool_call_id -> function name, from the assistant turns that made the calls."""
    names: dict[str, str] = {}
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "assistant":
            for call in message.get("tool_calls") or ():
                if isinstance(call, dict) and isinstance(call.get("id"), str):
                    names[call["id"]] = (call.get("function") or {}).get("name", "")
    return names


def messages_of(payload: dict[str, Any]) -> list[dict[str, Any]]:
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list.", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{index}] must be an object.", param=f"messages[{index}]")
    return messages
