"""What the image adaptors (ideogram, flux, recraft, stability) share.

They all answer one JSON or binary reply per call (never a stream), bill per image
returned, and describe upstream errors whose shapes differ only in where the message
sits. The DALL·E-format aliases also share the OpenAI images response and the
``size`` -> aspect-ratio conversion; those whose upstream makes one image per request
share how ``n`` images become ``n`` jobs.
"""

from __future__ import annotations

import math
import time
from typing import Any

import aiohttp
import orjson

from polyrelay.billing.meter import Usage
from polyrelay.errors import RelayError, bad_request
from polyrelay.providers.base import Adaptor, Call, Reply, ReplyStream, Target


def json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def error_message(data: dict[str, Any] | None) -> str | None:
    """The human message of any of the error shapes image upstreams use."""
    if data is None:
        return None
    error = data.get("error")
    if isinstance(error, str):
        return error
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    errors = data.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(str(item) for item in errors)
    for key in ("message", "detail"):
        value = data.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value:  # FastAPI validation errors (BFL)
            return "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in value)
    return None


class ImageAdaptor(Adaptor):
    """Base of the synchronous image protocols: one complete reply, errors kept in the upstream's shape."""

    result_url_keys = frozenset({"url"})  # OpenAI-shaped data[].url, Ideogram's data[].url, Recraft's image.url

    def stream_reply(self, call: Call, response: aiohttp.ClientResponse) -> ReplyStream:
        raise RuntimeError(f"the {self.type} adaptor never streams; the family must not set call.stream")

    def upstream_error(self, call: Call, status: int, body: bytes) -> RelayError:
        data = json_object(body)
        message = error_message(data)
        if message is None:
            text = body[:500].decode("utf-8", "replace").strip()
            message = f"Upstream answered HTTP {status}" + (f": {text}" if text else ".")
        code = None
        if data is not None:
            code = data.get("reject_reason") or data.get("name") or data.get("code")
        error = RelayError(status, message, type="upstream_error", code=str(code) if code else None)
        # Only a JSON body is in the protocol's own error shape and worth relaying verbatim.
        return error.with_raw(self.type, body) if data is not None else error

    def url(self, target: Target, path: str) -> str:
        return target.channel.base_url + path


class OneImageAdaptor(ImageAdaptor):
    """An upstream that makes one image per request (BFL, Stability): an alias call for ``n``
    images runs ``n`` jobs, and the caller gets every image that came back."""

    def jobs(self, call: Call) -> int:
        return call.images if call.family == "openai" else 1

    def merged(self, call: Call, replies: list[Reply]) -> Reply:
        data = [item for reply in replies for item in (json_object(reply.body) or {}).get("data", [])]
        images = sum(reply.usage.images for reply in replies if reply.usage is not None)
        return Reply(200, openai_images(data), "application/json", Usage(images=images))


def openai_images(data: list[dict[str, Any]]) -> bytes:
    """The OpenAI images response that DALL·E-format callers (and the OpenAI SDK) expect."""
    return orjson.dumps({"created": int(time.time()), "data": data})


def alias_payload(call: Call) -> dict[str, Any]:
    """The OpenAI images request of an alias call, with the checks every alias shares."""
    payload = call.payload or {}
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise bad_request("You must provide a prompt.", param="prompt")
    return payload


def parse_size(size: Any) -> tuple[int, int] | None:
    """``"1024x768"`` -> (1024, 768); None when absent or not of that form."""
    if not isinstance(size, str):
        return None
    width, _, height = size.lower().partition("x")
    if not (width.isdigit() and height.isdigit()) or not int(width) or not int(height):
        return None
    return int(width), int(height)


def closest_aspect_ratio(size: tuple[int, int], allowed: tuple[str, ...]) -> str:
    """The allowed ``"W:H"`` ratio nearest to a pixel size (compared on a log scale)."""
    wanted = math.log(size[0] / size[1])

    def distance(ratio: str) -> float:
        w, h = (int(x) for x in ratio.split(":"))
        return abs(math.log(w / h) - wanted)

    return min(allowed, key=distance)
