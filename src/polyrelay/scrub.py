"""One scrubber for everything an upstream says back: our credentials never reach a caller, a log or a row.

Upstreams echo what they were sent: a refused key in an error message ("invalid key
Bearer sk-..."), in another letter case, or as the JWT a channel mints from its key
(Kling). Every such text passes through here with the channel's keys before anyone sees it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from polyrelay.keys import key_hint

_MIN_SECRET = 6  # shorter "keys" (test placeholders) would garble ordinary words
_CREDENTIALS = re.compile(
    r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{8,}"  # an Authorization value, whoever minted it
    r"|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # a JWT
)


def _secrets(keys: tuple[str, ...]) -> set[str]:
    """The keys and the halves of composite ones (Kling's ``accessKey|secretKey``): an upstream knows,
    and may echo, only a half."""
    halves = {half for key in keys if "|" in key for half in key.split("|")}
    return {k for k in (*keys, *halves) if len(k) >= _MIN_SECRET}


@lru_cache(maxsize=256)
def _pattern(keys: tuple[str, ...]) -> re.Pattern[str] | None:
    secrets = sorted(_secrets(keys), key=len, reverse=True)
    if not secrets:
        return None
    return re.compile("|".join(re.escape(k) for k in secrets), re.IGNORECASE)


def _hidden(match: re.Match[str]) -> str:
    if match.group(1):
        return f"{match.group(1)}{match.group(2)}***"
    return "***"


def scrub(text: str, keys: tuple[str, ...], *, credentials: bool = True) -> str:
    """``text`` with every one of ``keys`` (in any case) replaced by its hint and, unless
    ``credentials`` is off, any bearer value or JWT hidden (off for results, whose signed URLs
    may carry tokens of their own)."""
    if not text:
        return text
    pattern = _pattern(keys)
    if pattern is not None:
        text = pattern.sub(lambda m: key_hint(m.group(0)), text)
    return _CREDENTIALS.sub(_hidden, text) if credentials else text


def scrub_bytes(body: bytes, keys: tuple[str, ...]) -> bytes:
    if not body:
        return body
    text = body.decode("utf-8", "surrogateescape")
    cleaned = scrub(text, keys)
    return body if cleaned == text else cleaned.encode("utf-8", "surrogateescape")


def scrub_json(value: Any, keys: tuple[str, ...], *, credentials: bool = True) -> Any:
    """Every string in a parsed JSON value scrubbed (keys of objects included); see ``scrub``."""
    if isinstance(value, str):
        return scrub(value, keys, credentials=credentials)
    if isinstance(value, dict):
        return {scrub(k, keys, credentials=credentials): scrub_json(v, keys, credentials=credentials)
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_json(v, keys, credentials=credentials) for v in value]
    return value
