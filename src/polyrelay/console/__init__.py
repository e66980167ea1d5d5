"""The web console: one HTML document at ``/`` and its static files under ``/console/``.

The console is plain HTML, CSS and ES modules (no build step); it talks only to the
REST API under ``/api/``. Files are read once, at the first request, and served from
memory with an ETag, so a reload costs one 304 per file; each file's brotli and gzip forms are
made once, when first asked for (``polyrelay.compression``). Every answer carries a strict
Content-Security-Policy: the console has no inline script or style and loads nothing
from elsewhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay import compression

STATIC = Path(__file__).parent / "static"

CSP = ("default-src 'self'; img-src 'self' data: http: https:; media-src 'self' http: https:; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
_SECURITY = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "same-origin"}


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    media_type: str
    etag: str


@cache
def _encoded(name: str, coding: str) -> tuple[bytes, str]:
    """The file compressed with ``coding``, and its ETag (a different body needs a different tag)."""
    file = _files()[name]
    return compression.compress(file.body, coding, static=True), f'{file.etag[:-1]}-{coding}"'


@cache
def _files() -> dict[str, _File]:
    """Every servable file by its path under static/; files of other types are not served."""
    found: dict[str, _File] = {}
    for path in sorted(STATIC.rglob("*")):
        media_type = _TYPES.get(path.suffix)
        if path.is_file() and media_type is not None:
            body = path.read_bytes()
            etag = f'"{hashlib.sha256(body).hexdigest()[:20]}"'
            found[path.relative_to(STATIC).as_posix()] = _File(body, media_type, etag)
    return found


def _serve(request: Request, name: str) -> Response:
    file = _files().get(name)
    if file is None:
        return Response("Not found", status_code=404, media_type="text/plain", headers=_SECURITY)
    body, etag = file.body, file.etag
    coding = compression.negotiate(request.headers.get("accept-encoding", ""))
    if coding is not None:
        body, etag = _encoded(name, coding)
    # no-cache: the browser keeps the file but asks each time, so an upgrade is seen at once.
    headers = {**_SECURITY, "etag": etag, "cache-control": "no-cache", "vary": "Accept-Encoding"}
    if coding is not None:
        headers["content-encoding"] = coding
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=file.media_type, headers=headers)


async def index(request: Request) -> Response:
    return _serve(request, "index.html")


async def static_file(request: Request) -> Response:
    return _serve(request, request.path_params["path"])


def routes() -> list[BaseRoute]:
    return [Route("/", index, methods=["GET"]), Route("/console/{path:path}", static_file, methods=["GET"])]
