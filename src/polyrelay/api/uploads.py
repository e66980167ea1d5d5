"""What the image API families share: checks on uploads before any relay.

Every check here runs before the relay pipeline, so a refused request costs nothing
and reaches no upstream: missing parts and bad JSON (400), files that are not
JPEG/PNG/WEBP by their bytes (400), files over the provider's limit (413).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from polyrelay.relay.routing import routes
from polyrelay import imagefiles, multipart
from polyrelay.errors import RelayError, bad_request
from polyrelay.multipart import Part

LIMIT_OPTION = "max_upload_bytes"  # channel option overriding a family's default upload limit


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"'{what}' is not valid JSON: {exc}.", param=what) from None
    if not isinstance(value, dict):
        raise bad_request(f"'{what}' must be a JSON object.", param=what)
    return value


def require(parts: list[Part], name: str) -> Part:
    part = multipart.find(parts, name)
    if part is None:
        raise bad_request(f"The multipart field '{name}' is required.", param=name)
    return part


def text(body: bytes, parts: list[Part], name: str) -> str | None:
    part = multipart.find(parts, name)
    return part.value(body).decode("utf-8", "replace").strip() if part is not None else None


def count(value: Any, name: str, default: int = 1) -> int:
    """A positive integer field (``num_images``, ``n``, ``samples``) used for the reservation."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise bad_request(f"'{name}' must be an integer.", param=name) from None
    if number < 1:
        raise bad_request(f"'{name}' must be at least 1.", param=name)
    return number


def upload_limit(request: Request, kind: str, model: str, default: int) -> int:
    """The largest limit among the channels that could serve ``model`` (their ``max_upload_bytes``
    option, else the provider's documented limit), so no serving channel is refused an upload
    it accepts."""
    channels = [c for group in routes(request.app.state.relay.snapshot, kind, model) for c in group]
    return max((int(c.options.get(LIMIT_OPTION, default)) for c in channels), default=default)


def too_large(what: str, limit: int) -> RelayError:
    return RelayError(413, f"'{what}' is larger than the {limit} bytes this provider accepts.",
                      code="payload_too_large", param=what)


def check_image(body: bytes, part: Part, limit: int, max_pixels: int | None = None) -> None:
    """Size first (413), then the content: JPEG, PNG or WEBP by magic bytes, whatever the filename says."""
    size = part.end - part.start
    if size > limit:
        raise too_large(part.name, limit)
    data = memoryview(body)[part.start : part.end]  # a view: a 10 MB upload is not copied to be checked
    if imagefiles.sniff(data) is None:
        raise bad_request(f"'{part.name}' must be a JPEG, PNG or WEBP image.", param=part.name,
                          code="unsupported_image_type")
    if max_pixels is not None and (dims := imagefiles.dimensions(data)) is not None and dims[0] * dims[1] > max_pixels:
        raise RelayError(413, f"'{part.name}' has {dims[0]}x{dims[1]} pixels; at most {max_pixels} are accepted.",
                         code="payload_too_large", param=part.name)
