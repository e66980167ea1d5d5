"""The caller's request as the relay pipeline sees it: parsed just enough to route and bill."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any

from polyrelay.multipart import Part


@dataclass(slots=True)
class Call:
    """One caller request, built by an API family and handed to the relay pipeline."""

    family: str  # "openai", later "midjourney", "ideogram", ...
    endpoint: str  # "chat.completions", "embeddings", "audio.speech", ...
    path: str  # protocol path the adaptor targets, e.g. "/v1/chat/completions"
    model: str
    body: bytes
    content_type: str
    request_id: str
    client_ip: str = ""
    payload: dict[str, Any] | None = None  # the parsed JSON body, when the body is JSON
    stream: bool = False  # the reply is streamed to the caller as it arrives
    sse: bool = False  # ... and it is a server-sent-event stream whose usage we read
    include_usage: bool = False  # the caller itself asked for the usage chunk
    images: int = 0  # images the call asks for (estimates only; billing counts the reply)
    characters: int = 0  # input characters (text-to-speech)
    max_output_tokens: int | None = None
    parts: list[Part] | None = None  # the parts of a multipart body, with their byte spans
    extra: dict[str, Any] = field(default_factory=dict)


# A random per-process prefix plus a counter: unique across processes and restarts,
# and far cheaper than a uuid4 per request.
_REQUEST_PREFIX = secrets.token_hex(6)
_request_counter = itertools.count(1)


def new_request_id() -> str:
    return f"req_{_REQUEST_PREFIX}{next(_request_counter):010x}"
