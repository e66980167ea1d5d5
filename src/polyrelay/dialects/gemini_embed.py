"""Gemini ``embedContent`` and ``batchEmbedContents`` callers on any embeddings channel, through OpenAI embeddings.

``outputDimensionality`` becomes ``dimensions``; ``taskType`` and ``title`` are hints OpenAI
embeddings have no field for and are not sent (the vectors stay valid, only tuned less
for the task). Only text can be embedded this way: other parts are refused.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson

from polyrelay import kinds
from polyrelay.billing.meter import Usage
from polyrelay.dialects.base import Dialect
from polyrelay.dialects.gemini_request import check_fields, field, object_of
from polyrelay.errors import bad_request
from polyrelay.providers.base import Call

BATCH = "gemini.batchEmbedContents"
_BATCH_FIELDS = frozenset({"requests"})
_REQUEST_FIELDS = frozenset({"model", "content", "taskType", "title", "outputDimensionality"})


def embeddings_request(call: Call) -> dict[str, Any]:
    """The OpenAI embeddings request for ``call``'s embedContent or batchEmbedContents body."""
    payload = call.payload or {}
    if call.endpoint == BATCH:
        check_fields(payload, _BATCH_FIELDS, "")
        requests = payload.get("requests")
        if not isinstance(requests, list) or not requests:
            raise bad_request("* BatchEmbedContentsRequest.requests: requests is not specified", param="requests")
        items = [_one(object_of(r, f"requests[{i}]"), f"requests[{i}]", call.model) for i, r in enumerate(requests)]
    else:
        items = [_one(payload, "", call.model)]
    dimensions = {dimension for _, dimension in items}
    if len(dimensions) > 1:
        raise bad_request("Every request of a batch must ask for the same outputDimensionality on this model's "
                          "channels.", param="requests")
    body: dict[str, Any] = {"model": call.model, "input": [text for text, _ in items], "encoding_format": "float"}
    if (dimension := dimensions.pop()) is not None:
        body["dimensions"] = dimension
    return body


def _one(request: dict[str, Any], where: str, model: str) -> tuple[str, int | None]:
    check_fields(request, _REQUEST_FIELDS, where)
    named = request.get("model")
    if named is not None and named not in (f"models/{model}", model):
        raise bad_request(f"Model {named} does not match the URL's model models/{model}.", param=f"{where}.model")
    content = object_of(request.get("content"), f"{where}.content")
    texts = []
    for p, part in enumerate(field(content, "parts") or ()):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise bad_request(f"{where}.content.parts[{p}]: only text can be embedded on this model's channels.",
                              param=f"{where}.content")
        texts.append(part["text"])
    if not texts:
        raise bad_request(f"{where}.content must hold at least one text part.".lstrip("."), param=f"{where}.content")
    dimension = field(request, "outputDimensionality")
    if dimension is not None and (not isinstance(dimension, int) or dimension <= 0):
        raise bad_request("outputDimensionality must be a positive integer.", param=f"{where}.output_dimensionality")
    return "\n".join(texts), dimension


def _values(embedding: Any) -> list[float]:
    if isinstance(embedding, str):  # an upstream that answered base64 anyway
        raw = base64.b64decode(embedding)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return embedding if isinstance(embedding, list) else []


def embeddings_reply(call: Call, pivot: dict[str, Any]) -> dict[str, Any]:
    items = sorted((item for item in pivot.get("data") or () if isinstance(item, dict)),
                   key=lambda item: item.get("index", 0))
    vectors = [{"values": _values(item.get("embedding"))} for item in items]
    if call.endpoint == BATCH:
        return {"embeddings": vectors}
    if len(vectors) != 1:
        raise ValueError(f"the embeddings pivot answered {len(vectors)} vectors for one content")
    return {"embedding": vectors[0]}


class GeminiEmbedDialect(Dialect):
    kind = kinds.GEMINI_EMBED
    via = kinds.EMBEDDINGS

    def request(self, call: Call) -> dict[str, Any]:
        return embeddings_request(call)

    def reply(self, call: Call, pivot: dict[str, Any], usage: Usage | None) -> bytes:
        return orjson.dumps(embeddings_reply(call, pivot))
