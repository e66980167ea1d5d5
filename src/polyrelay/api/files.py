"""``GET /files/{id}``: results polyrelay re-hosted (see ``store.files``), from disk or the object store.

No key is needed: links go to browsers and apps that hold none, and an id is the
SHA-256 of the content, so it cannot be guessed. The route stays served when
``files.rehost`` is turned off, so URLs handed out earlier keep working.

With ``files.backend: s3`` the object is streamed through this node (``files.serve:
stream``, ranges and HEAD answered here) or the caller is sent to a short-lived
presigned URL of the store (``redirect``). A store that cannot be reached is a 503 in
OpenAI's error format, a missing object a 404, on every node alike.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from polyrelay.api.openai import error_response
from polyrelay.errors import RelayError
from polyrelay.store.blobs import BlobStore, BlobUnavailable
from polyrelay.store.files import FileStore

# Content-addressed: a file id never changes what it serves.
_HEADERS = {
    "cache-control": "public, max-age=31536000, immutable",
    "x-content-type-options": "nosniff",
    # An SVG (Recraft's vectorize) could carry script; never run it on polyrelay's origin.
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox",
}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

STORE_UNAVAILABLE = "The file store is unavailable; try again shortly."


async def blob_response(request: Request, blobs: BlobStore, key: str, media_type: str,
                        headers: dict[str, str], redirect_s: int | None) -> Response | None:
    """The object as a response (file, stream or redirect), or None when it does not exist.

    Raises ``BlobUnavailable`` when the store cannot be reached.
    """
    path = blobs.local_path(key)
    if path is not None:
        return FileResponse(path, media_type=media_type, headers=headers)
    if redirect_s is not None:
        if await blobs.size(key) is None:  # a missing object is our 404, not the store's XML
            return None
        url = blobs.presigned_url(key, redirect_s)
        if url is not None:
            # Shared caches may keep the redirect for part of the URL's life, never past it.
            return RedirectResponse(url, 302, headers={"cache-control": f"public, max-age={redirect_s // 2}"})
    return await _stream(request, blobs, key, media_type, headers)


async def _stream(request: Request, blobs: BlobStore, key: str, media_type: str,
                  headers: dict[str, str]) -> Response | None:
    wanted = _RANGE.match(request.headers.get("range", "").strip())
    size = await blobs.size(key) if wanted or request.method == "HEAD" else None
    if (wanted or request.method == "HEAD") and size is None:
        return None
    headers = {**headers, "accept-ranges": "bytes"}
    if request.method == "HEAD":
        return Response(b"", media_type=media_type, headers={**headers, "content-length": str(size)})
    start, end = 0, None
    if wanted and size is not None and (wanted.group(1) or wanted.group(2)):
        first, last = wanted.group(1), wanted.group(2)
        start, end = (int(first), min(int(last or size - 1), size - 1)) if first else (max(0, size - int(last)), size - 1)
        if start >= size or end < start:
            return Response(b"", 416, headers={**headers, "content-range": f"bytes */{size}"})
    reader = await blobs.open(key, start, end)
    if reader is None:
        return None
    headers["content-length"] = str(reader.length)
    status = 200
    if end is not None:
        status = 206
        headers["content-range"] = f"bytes {reader.start}-{reader.start + reader.length - 1}/{reader.size}"
    return StreamingResponse(reader.chunks, status, headers=headers, media_type=media_type)


def redirect_seconds(store: FileStore) -> int | None:
    """How long a presigned redirect lives, or None when objects are streamed."""
    s3 = store.settings.s3
    return s3.presign_expires_s if store.settings.serve == "redirect" and s3 is not None else None


async def get_file(request: Request) -> Response:
    store: FileStore = request.app.state.files
    found = store.locate(request.path_params["file_id"])
    response = None
    try:
        if found is not None:
            response = await blob_response(request, store.blobs, *found, _HEADERS, redirect_seconds(store))
    except BlobUnavailable:
        return error_response(RelayError(503, STORE_UNAVAILABLE, type="server_error", code="file_store_unavailable",
                                         headers={"retry-after": "5"}))
    if response is None:
        return error_response(RelayError(404, "No such file.", code="file_not_found"))
    return response


def routes() -> list[BaseRoute]:
    return [Route("/files/{file_id}", get_file, methods=["GET", "HEAD"])]
