"""``GET /files/{id}``: results polyrelay re-hosted (see ``store.files``), streamed from disk.

No key is needed: links go to browsers and apps that hold none, and an id is the
SHA-256 of the content, so it cannot be guessed. The route stays served when
``files.rehost`` is turned off, so URLs handed out earlier keep working.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from polyrelay.api.openai import error_response
from polyrelay.errors import RelayError
from polyrelay.store.files import FileStore

# Content-addressed: a file id never changes what it serves.
_HEADERS = {
    "cache-control": "public, max-age=31536000, immutable",
    "x-content-type-options": "nosniff",
    # An SVG (Recraft's vectorize) could carry script; never run it on polyrelay's origin.
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox",
}


async def get_file(request: Request) -> Response:
    store: FileStore = request.app.state.files
    found = store.path_of(request.path_params["file_id"])
    if found is None:
        return error_response(RelayError(404, "No such file.", code="file_not_found"))
    path, media_type = found
    return FileResponse(path, media_type=media_type, headers=_HEADERS)


def routes() -> list[BaseRoute]:
    return [Route("/files/{file_id}", get_file, methods=["GET", "HEAD"])]
