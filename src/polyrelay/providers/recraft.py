"""Recraft (``Authorization: Bearer``): native paths pass through; the DALL·E alias is nearly native.

Recraft's generations endpoint already takes an OpenAI-like body and answers
``{created, data:[{image_id, url|b64_json}]}``, which OpenAI clients read as is. The
alias only drops the OpenAI fields Recraft does not know (``quality``, ``user``, the
DALL·E ``style`` values) and sets the upstream model name.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from polyrelay import kinds
from polyrelay.billing.meter import Usage
from polyrelay.providers.base import Call, Reply, Target, UpstreamRequest
from polyrelay.providers.imaging import ImageAdaptor, alias_payload, json_object

GENERATIONS = "/v1/images/generations"
_RECRAFT_FIELDS = frozenset({
    "prompt", "n", "style", "style_id", "substyle", "model", "response_format", "size", "negative_prompt",
    "controls", "text_layout", "random_seed", "artistic_level",
})
_DALLE_STYLES = frozenset({"vivid", "natural"})


def recraft_body(payload: dict[str, Any], model: str) -> dict[str, Any]:
    body = {name: value for name, value in payload.items() if name in _RECRAFT_FIELDS}
    if body.get("style") in _DALLE_STYLES:
        del body["style"]
    body["model"] = model
    return body


def images_in(data: dict[str, Any]) -> int:
    """Images in a Recraft answer: ``data`` lists for generations, one ``image`` for the tools."""
    if isinstance(data.get("data"), list):
        return len(data["data"])
    return 1 if isinstance(data.get("image"), dict) else 0


class RecraftAdaptor(ImageAdaptor):
    type = "recraft"
    kinds = frozenset({kinds.IMAGES, kinds.RECRAFT})

    def build_request(self, call: Call, target: Target) -> UpstreamRequest:
        body = call.body
        if call.family == "openai":  # the DALL·E-format alias
            body = orjson.dumps(recraft_body(alias_payload(call), target.upstream_model))
        elif call.payload is not None and target.upstream_model != call.model:
            body = orjson.dumps({**call.payload, "model": target.upstream_model})
        path = GENERATIONS if call.family == "openai" else call.path
        return UpstreamRequest(
            method="POST",
            url=self.url(target, path),
            headers={"Authorization": f"Bearer {target.key}", "Content-Type": call.content_type},
            body=body,
        )

    async def read_reply(self, call: Call, response: aiohttp.ClientResponse) -> Reply:
        body = await response.read()
        data = json_object(body) or {}
        return Reply(
            status=response.status, body=body, content_type=self.content_type(response),
            usage=Usage(images=images_in(data)),
        )
