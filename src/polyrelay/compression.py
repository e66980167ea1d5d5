"""Brotli or gzip for the console's files and the admin API's JSON, chosen from ``Accept-Encoding``.

Only whole bodies the console and ``/api/`` produce are compressed: the relay's ``/v1`` answers and
streams pass through untouched (they are the hot path, and a proxy or the SDK would have to buffer a
compressed stream). Static files are compressed once, at the highest levels, and kept; JSON is
compressed per answer at levels that cost well under a millisecond for a page of rows.
"""

from __future__ import annotations

import gzip

import brotli
from starlette.requests import Request
from starlette.responses import Response

BROTLI, GZIP = "br", "gzip"
# (brotli quality, gzip level): once per static file, and per dynamic answer.
_STATIC_LEVELS = (11, 9)
_DYNAMIC_LEVELS = (3, 6)


def negotiate(accept_encoding: str) -> str | None:
    """The best coding the client accepts (brotli over gzip), or None; ``q=0`` refuses a coding."""
    accepted: set[str] = set()
    for item in accept_encoding.lower().split(","):
        name, _, params = item.partition(";")
        quality = params.strip().removeprefix("q=").strip()
        if quality and _is_zero(quality):
            continue
        accepted.add(name.strip())
    for coding in (BROTLI, GZIP):
        if coding in accepted or "*" in accepted:
            return coding
    return None


def _is_zero(quality: str) -> bool:
    try:
        return float(quality) == 0
    except ValueError:
        return False


def compress(body: bytes, coding: str, *, static: bool = False) -> bytes:
    quality, level = _STATIC_LEVELS if static else _DYNAMIC_LEVELS
    if coding == BROTLI:
        return bytes(brotli.compress(body, quality=quality))
    return gzip.compress(body, compresslevel=level, mtime=0)


def compress_response(request: Request, response: Response, min_bytes: int) -> Response:
    """``response`` with its body compressed when it is whole, large enough and the client takes a coding."""
    body = getattr(response, "body", None)  # a streamed answer (CSV export) has none: sent as it is
    if (not isinstance(body, bytes) or len(body) < min_bytes or response.status_code < 200
            or response.status_code in (204, 304) or "content-encoding" in response.headers):
        return response
    vary = response.headers.get("vary")
    response.headers["vary"] = f"{vary}, Accept-Encoding" if vary else "Accept-Encoding"
    coding = negotiate(request.headers.get("accept-encoding", ""))
    if coding is None:
        return response
    response.body = compress(body, coding)
    response.headers["content-encoding"] = coding
    response.headers["content-length"] = str(len(response.body))
    return response
