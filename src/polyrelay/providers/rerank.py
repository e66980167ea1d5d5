"""Rerank upstreams: Jina's ``POST /v1/rerank`` and Cohere's ``POST /v2/rerank``, both ``Authorization: Bearer``.

Callers speak Jina's shape (polyrelay's ``/v1/rerank``), which many self-hosted servers
copy (vLLM, LocalAI): a ``jina`` channel gets the caller's body as it came, the
model rewritten when mapped, and its reply goes back byte for byte. A ``cohere`` channel
gets the request in Cohere v2's shape (documents as plain strings, no ``return_documents``)
and its reply is translated back, the documents put back from the request when asked for.

Usage: Jina reports ``usage.total_tokens`` (billed as prompt tokens). Cohere bills
``meta.billed_units.search_units`` (one query over up to 100 documents), each billed as
one ``per_request``; it reports no tokens, so a per-token price counts them locally.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import aiohttp
import orjson

from polyrelay import kinds
from polyrelay.billing import tokenizer
from polyrelay.billing.meter import Usage
from polyrelay.errors import RelayError
from polyrelay.providers.base import Adaptor, Call, Reply, ReplyStream, Target, UpstreamRequest
from polyrelay.providers.imaging import error_message, json_object

# Options of a Cohere v2 request that mean the same in Jina's (the family checked the rest).
_COHERE_OPTIONS = ("top_n", "max_tokens_per_doc", "priority")


def document_texts(payload: dict[str, Any]) -> list[str]:
    """The documents' texts; ``api.openai`` made sure each is a string or a ``{"text": ...}`` object."""
    return [doc if isinstance(doc, str) else doc["text"] for doc in payload["documents"]]


def counted_usage(call: Call, payload: dict[str, Any]) -> Usage:
    """Tokens of the query and documents by the local tokenizer, for upstreams that report none."""
    texts = [payload["query"], *document_texts(payload)]
    return Usage(prompt_tokens=sum(tokenizer.count_text(call.model, text) for text in texts), source="counted")


class RerankAdaptor(Adaptor):
    """What both rerank protocols share: the request line, one JSON reply, and the error bodies."""

    kinds = frozenset({kinds.RERANK})
    path: str  # the upstream's rerank path

    def build_request(self, call: Call, target: Target) -> UpstreamRequest:
        return UpstreamRequest(
            method="POST",
            url=target.channel.base_url + self.path,
            headers={"Authorization": f"Bearer {target.key}", "Content-Type": "application/json"},
            body=self.body(call, target),
        )

    @abstractmethod
    def body(self, call: Call, target: Target) -> bytes: ...

    @abstractmethod
    def reply(self, call: Call, status: int, body: bytes, data: dict[str, Any]) -> Reply:
        """The caller's reply to the upstream's successful JSON ``data`` (``body`` as received)."""

    async def read_reply(self, call: Call, response: aiohttp.ClientResponse) -> Reply:
        body = await response.read()
        data = json_object(body)
        if data is None or not isinstance(data.get("results"), list):
            raise ValueError("a reply without a 'results' array")
        return self.reply(call, response.status, body, data)

    def stream_reply(self, call: Call, response: aiohttp.ClientResponse) -> ReplyStream:
        raise RuntimeError(f"the {self.type} adaptor never streams; the family must not set call.stream")

    def upstream_error(self, call: Call, status: int, body: bytes) -> RelayError:
        message = error_message(json_object(body))
        if message is None:
            text = body[:500].decode("utf-8", "replace").strip()
            message = f"Upstream answered HTTP {status}" + (f": {text}" if text else ".")
        # Both answer some malformed requests with 422 (FastAPI, Cohere) where OpenAI's clients expect 400.
        status = 400 if status == 422 else status
        return RelayError(status, message, type="invalid_request_error" if status < 500 else "upstream_error")


class JinaAdaptor(RerankAdaptor):
    type = "jina"
    path = "/v1/rerank"

    def body(self, call: Call, target: Target) -> bytes:
        if target.upstream_model == call.model:
            return call.body
        return orjson.dumps({**(call.payload or {}), "model": target.upstream_model})

    def reply(self, call: Call, status: int, body: bytes, data: dict[str, Any]) -> Reply:
        reported = data.get("usage")
        tokens = reported.get("total_tokens", reported.get("prompt_tokens")) if isinstance(reported, dict) else None
        usage = Usage(prompt_tokens=int(tokens)) if isinstance(tokens, int) else counted_usage(call, call.payload or {})
        return Reply(status=status, body=body, content_type="application/json", usage=usage)


class CohereAdaptor(RerankAdaptor):
    type = "cohere"
    path = "/v2/rerank"

    def body(self, call: Call, target: Target) -> bytes:
        payload = call.payload or {}
        request = {"model": target.upstream_model, "query": payload["query"], "documents": document_texts(payload)}
        request.update({name: payload[name] for name in _COHERE_OPTIONS if name in payload})
        return orjson.dumps(request)

    def reply(self, call: Call, status: int, body: bytes, data: dict[str, Any]) -> Reply:
        payload = call.payload or {}
        texts = document_texts(payload)
        with_documents = payload.get("return_documents", True)  # Jina's default
        results = []
        for result in data["results"]:
            index = result.get("index") if isinstance(result, dict) else None
            if not isinstance(index, int) or not 0 <= index < len(texts):
                raise ValueError(f"a result with the index {index!r} of no document")
            item: dict[str, Any] = {"index": index, "relevance_score": result.get("relevance_score")}
            if with_documents:
                item["document"] = {"text": texts[index]}
            results.append(item)
        billed = (data.get("meta") or {}).get("billed_units") or {}
        usage = counted_usage(call, payload)
        if isinstance(billed.get("input_tokens"), (int, float)):
            usage = Usage(prompt_tokens=int(billed["input_tokens"]))
        usage.search_units = int(billed.get("search_units") or 0)
        answer = {"id": data.get("id"), "model": call.model, "results": results,
                  "usage": {"total_tokens": usage.prompt_tokens}}
        return Reply(status=status, body=orjson.dumps(answer), content_type="application/json", usage=usage)
