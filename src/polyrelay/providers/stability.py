"""Stability AI (``Authorization: Bearer``): native v2beta/v1 paths pass through; sd3 serves the alias.

Native calls keep Stability's own negotiation: the caller's ``accept`` goes upstream,
and a raw-bytes answer comes back with its ``finish-reason`` and ``seed`` headers.
The DALL·E alias becomes a multipart ``stable-image/generate`` call with
``accept: application/json``, answered as OpenAI ``b64_json`` (the API returns bytes,
not URLs).
"""

from __future__ import annotations

from typing import Any

import aiohttp

from polyrelay import kinds
from polyrelay import multipart
from polyrelay.billing.meter import Usage
from polyrelay.errors import RelayError
from polyrelay.providers.base import Call, Reply, Target, UpstreamRequest
from polyrelay.providers.imaging import (
    OneImageAdaptor,
    alias_payload,
    closest_aspect_ratio,
    json_object,
    openai_images,
    parse_size,
)

ASPECT_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
_RELAYED_HEADERS = ("finish-reason", "seed")
# An upstream model name picks the v2beta endpoint; any other name goes to sd3 (as ``model`` when sd3*).
_ENDPOINTS = {"ultra": "ultra", "stable-image-ultra": "ultra", "core": "core", "stable-image-core": "core"}


def alias_form(payload: dict[str, Any], upstream_model: str) -> tuple[str, list[tuple[str, bytes, None, None]]]:
    """The v2beta endpoint and form fields for an OpenAI images request."""
    endpoint = _ENDPOINTS.get(upstream_model, "sd3")
    fields: dict[str, Any] = {"prompt": payload["prompt"], "output_format": payload.get("output_format") or "png"}
    if endpoint == "sd3" and upstream_model.startswith("sd3"):
        fields["model"] = upstream_model
    for name in ("negative_prompt", "seed", "style_preset"):
        if payload.get(name) is not None:
            fields[name] = payload[name]
    size = parse_size(payload.get("size"))
    if payload.get("aspect_ratio"):
        fields["aspect_ratio"] = payload["aspect_ratio"]
    elif size is not None:
        fields["aspect_ratio"] = closest_aspect_ratio(size, ASPECT_RATIOS)
    return endpoint, [(name, str(value).encode(), None, None) for name, value in fields.items()]


class StabilityAdaptor(OneImageAdaptor):
    type = "stability"
    kinds = frozenset({kinds.IMAGES, kinds.STABILITY})

    def build_request(self, call: Call, target: Target) -> UpstreamRequest:
        headers = {"Authorization": f"Bearer {target.key}"}
        if call.family == "openai":
            endpoint, fields = alias_form(alias_payload(call), target.upstream_model)
            body, content_type = multipart.encode(fields)
            headers.update({"Content-Type": content_type, "accept": "application/json"})
            return UpstreamRequest("POST", self.url(target, f"/v2beta/stable-image/generate/{endpoint}"), headers, body)
        headers.update({"Content-Type": call.content_type, "accept": call.extra.get("accept", "image/*")})
        return UpstreamRequest("POST", self.url(target, self._native_path(call, target)), headers,
                               self._native_body(call, target))

    def _native_path(self, call: Call, target: Target) -> str:
        if call.endpoint == "v1.text-to-image":  # the engine id is the model
            return f"/v1/generation/{target.upstream_model}/text-to-image"
        return call.path

    def _native_body(self, call: Call, target: Target) -> bytes | list[bytes | memoryview]:
        if call.endpoint != "v2beta.sd3" or target.upstream_model == call.model or call.parts is None:
            return call.body
        model = target.upstream_model.encode()
        part = multipart.find(call.parts, "model")
        if part is None:
            return multipart.splice(call.body, call.content_type, [], [("model", model)])
        return multipart.splice(call.body, call.content_type, [(part, model)], [])

    def upstream_error(self, call: Call, status: int, body: bytes) -> RelayError:
        error = super().upstream_error(call, status, body)
        error.final = error.code == "content_moderation"  # a 403 about the prompt, not our key
        return error

    async def read_reply(self, call: Call, response: aiohttp.ClientResponse) -> Reply:
        body = await response.read()
        content_type = self.content_type(response)
        if call.family == "openai":
            return self._alias_reply(call, body)
        data = json_object(body) if content_type.startswith("application/json") else None
        artifacts = data.get("artifacts") if data is not None else None
        images = len(artifacts) if isinstance(artifacts, list) else 1
        headers = {name: response.headers[name] for name in _RELAYED_HEADERS if name in response.headers}
        return Reply(response.status, body, content_type, Usage(images=images), headers)

    def _alias_reply(self, call: Call, body: bytes) -> Reply:
        data = json_object(body) or {}
        image = data.get("image")
        if not isinstance(image, str):
            raise RelayError(502, "Stability answered without an image.", type="upstream_error")
        item = {"b64_json": image, "revised_prompt": (call.payload or {}).get("prompt")}
        return Reply(200, openai_images([item]), "application/json", Usage(images=1))
