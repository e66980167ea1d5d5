"""Ideogram (``Api-Key`` header): the caller's request goes upstream as it came.

Only the ``image_request`` JSON of the v1 endpoints may be rewritten, and only when
there is a reason: a channel that maps the model, or a prompt that arrived
percent-encoded (the reference page's example). The uploaded files are never
touched; a multipart body is spliced around them.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import aiohttp
import orjson

from polyrelay import kinds
from polyrelay import multipart
from polyrelay.billing.meter import Usage
from polyrelay.providers.base import Call, Reply, Target, UpstreamRequest
from polyrelay.providers.imaging import ImageAdaptor, json_object

MODEL_PREFIX = "ideogram-"  # polyrelay's model names: "ideogram-V_2", "ideogram-V_3-TURBO", ...
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_TEXT_FIELDS = ("prompt", "negative_prompt")


def percent_decoded(text: str) -> str:
    """Decode text that is unambiguously URL-encoded: it has %XX escapes and no whitespace.

    A real prompt of several words always has spaces, so "A%20serene%20beach" can only
    be an encoding artefact, while "50%20 off" (with a space) is left alone.
    """
    if _PERCENT_ESCAPE.search(text) is None or any(ch.isspace() for ch in text):
        return text
    return unquote(text)


def rewritten_request(image_request: dict[str, Any], call: Call, target: Target) -> dict[str, Any] | None:
    """The ``image_request`` to send upstream, or None when the caller's bytes can go as they are."""
    changes: dict[str, Any] = {}
    if target.channel.options.get("percent_decode_prompts", True):
        for field in _TEXT_FIELDS:
            value = image_request.get(field)
            if isinstance(value, str) and (decoded := percent_decoded(value)) != value:
                changes[field] = decoded
    mapped = target.upstream_model
    if mapped != call.model and mapped.startswith(MODEL_PREFIX) and "-" not in mapped[len(MODEL_PREFIX) :]:
        changes["model"] = mapped[len(MODEL_PREFIX) :]
    return {**image_request, **changes} if changes else None


class IdeogramAdaptor(ImageAdaptor):
    type = "ideogram"
    kinds = frozenset({kinds.IDEOGRAM})

    def build_request(self, call: Call, target: Target) -> UpstreamRequest:
        return UpstreamRequest(
            method="POST",
            url=self.url(target, call.path),
            headers={"Api-Key": target.key, "Content-Type": call.content_type, "Accept": "application/json"},
            body=self._body(call, target),
        )

    def _body(self, call: Call, target: Target) -> bytes | list[bytes | memoryview]:
        image_request = call.extra.get("image_request")
        if image_request is None or (changed := rewritten_request(image_request, call, target)) is None:
            return call.body
        if call.parts is None:
            return orjson.dumps({**(call.payload or {}), "image_request": changed})
        part = multipart.find(call.parts, "image_request")
        assert part is not None  # the family required it
        return multipart.splice(call.body, call.content_type, [(part, orjson.dumps(changed))], [])

    async def read_reply(self, call: Call, response: aiohttp.ClientResponse) -> Reply:
        body = await response.read()
        data = json_object(body) or {}
        images = data.get("data")
        return Reply(
            status=response.status,
            body=body,
            content_type=self.content_type(response),
            usage=Usage(images=len(images) if isinstance(images, list) else 0),
        )
