"""Google Gemini (``generativelanguage`` API) channels.

Two kinds of caller reach them: OpenAI-format callers (chat and embeddings, fully
translated by ``gemini_chat``) and Google-SDK callers on the native paths
(generateContent, countTokens, embedContent, batchEmbedContents: the body passes through
untouched; only the key and the model in the URL change, and the model named in a
batch's requests, which Google checks against the URL's).

Channel options: ``version`` (default ``v1beta``), ``safety_settings`` (a threshold
string for every category, or Gemini's own list), ``allow_private_image_hosts``.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import aiohttp
import orjson

from polyrelay import kinds
from polyrelay.billing import tokenizer
from polyrelay.billing.meter import Usage
from polyrelay.errors import RelayError, bad_request
from polyrelay.providers import gemini_chat
from polyrelay.providers.base import Adaptor, Call, Reply, ReplyStream, Services, Target, UpstreamRequest
from polyrelay.providers.image_parts import policy_for, prefetch
from polyrelay.providers.streams import ObservedStream, TranslatedStream

NATIVE_FAMILY = "gemini"
# google.rpc status -> (HTTP status, OpenAI error type) for OpenAI-format callers.
_STATUS = {
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "FAILED_PRECONDITION": (400, "invalid_request_error"),
    "OUT_OF_RANGE": (400, "invalid_request_error"),
    "UNAUTHENTICATED": (401, "authentication_error"),
    "PERMISSION_DENIED": (403, "permission_error"),
    "NOT_FOUND": (404, "invalid_request_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "INTERNAL": (500, "server_error"),
    "UNAVAILABLE": (503, "server_error"),
    "DEADLINE_EXCEEDED": (504, "server_error"),
}
_JSON = "application/json"


class GeminiAdaptor(Adaptor):
    type = "gemini"
    # chat and embeddings through gemini_chat; the native kinds pass through
    kinds = frozenset({kinds.CHAT, kinds.EMBEDDINGS, kinds.GEMINI, kinds.GEMINI_COUNT, kinds.GEMINI_EMBED})

    async def prepare(self, call: Call, target: Target, services: Services) -> None:
        if call.family != NATIVE_FAMILY and call.endpoint == "chat.completions":
            await prefetch(call, services.session, policy_for(target.channel.options, services.fetch_policy))

    def build_request(self, call: Call, target: Target) -> UpstreamRequest:
        options = target.channel.options
        model_url = f"{target.channel.base_url}/{options.get('version', 'v1beta')}/models/{target.upstream_model}"
        headers = {"x-goog-api-key": target.key, "Content-Type": _JSON}
        if call.family == NATIVE_FAMILY:
            url = f"{model_url}:{call.extra['action']}" + ("?alt=sse" if call.sse else "")
            return UpstreamRequest("POST", url, headers, _native_body(call, target.upstream_model))
        if call.endpoint == "chat.completions":
            body = gemini_chat.chat_request(call, options)
            url = model_url + (":streamGenerateContent?alt=sse" if call.stream else ":generateContent")
        elif call.endpoint == "embeddings":
            body = _embedding_request(call, target.upstream_model)
            url = model_url + ":batchEmbedContents"
        else:
            raise RelayError(400, f"Gemini channels do not serve {call.path}.", code="unsupported_endpoint")
        return UpstreamRequest("POST", url, headers, orjson.dumps(body))

    async def read_reply(self, call: Call, response: aiohttp.ClientResponse) -> Reply:
        body = await response.read()
        data = orjson.loads(body)
        if call.family == NATIVE_FAMILY:
            usage = gemini_chat.usage_of(data.get("usageMetadata") if isinstance(data, dict) else None)
            if usage is None and call.kind == kinds.GEMINI_EMBED:  # Google reports no tokens for embeddings
                prompt = tokenizer.count_text(call.model, "\n".join(_embedded_texts(call.payload or {})))
                return Reply(response.status, body, _JSON, Usage(prompt_tokens=prompt, source="counted"))
            return Reply(response.status, body, _JSON, usage[0] if usage else Usage(source="request"))
        if call.endpoint == "embeddings":
            return _embedding_reply(call, data)
        out, usage = gemini_chat.chat_reply(call, data)
        return Reply(response.status, out, _JSON, usage)

    def stream_reply(self, call: Call, response: aiohttp.ClientResponse) -> ReplyStream:
        if call.family == NATIVE_FAMILY:
            return ObservedStream(response, gemini_chat.UsageWatcher(call), sse=call.sse)
        return TranslatedStream(response, gemini_chat.ChatStream(call))

    def content_type(self, response: aiohttp.ClientResponse) -> str:
        return response.headers.get("Content-Type", "text/event-stream")

    def upstream_error(self, call: Call, status: int, body: bytes) -> RelayError:
        return gemini_error(status, body)


def gemini_error(status: int, body: bytes) -> RelayError:
    """Gemini's ``{"error":{code,message,status,details}}`` as a RelayError OpenAI's SDK classifies."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, list) and data:  # streamGenerateContent without alt=sse wraps it in an array
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        text = body[:500].decode("utf-8", "replace").strip()
        return RelayError(status, f"Upstream answered HTTP {status}" + (f": {text}" if text else "."),
                          type="upstream_error")
    rpc_status = str(error.get("status") or "")
    reasons = {d.get("reason") for d in error.get("details") or () if isinstance(d, dict)}
    if "API_KEY_INVALID" in reasons:
        # Gemini says 400 for a bad key; it is our credential, not the caller's request.
        rpc_status, status = "UNAUTHENTICATED", 401
    _, type_ = _STATUS.get(rpc_status, (status, "upstream_error"))
    return RelayError(status, str(error.get("message") or f"Upstream answered HTTP {status}."), type=type_,
                      code=rpc_status or None)


def _native_body(call: Call, upstream_model: str) -> bytes:
    """The caller's body, but for a batch whose requests name a mapped model: Google wants the URL's there."""
    if call.endpoint != "gemini.batchEmbedContents" or upstream_model == call.model:
        return call.body
    payload = call.payload or {}
    requests = [{**r, "model": f"models/{upstream_model}"} if isinstance(r, dict) and "model" in r else r
                for r in payload.get("requests") or ()]
    return orjson.dumps({**payload, "requests": requests})


def _embedded_texts(payload: dict[str, Any]) -> list[str]:
    """The texts of an embedContent or batchEmbedContents body."""
    requests = payload.get("requests") if isinstance(payload.get("requests"), list) else [payload]
    return [part["text"] for request in requests if isinstance(request, dict)
            for part in (request.get("content") or {}).get("parts") or () if isinstance(part, dict)
            and isinstance(part.get("text"), str)]


def _embedding_request(call: Call, model: str) -> dict[str, Any]:
    payload = call.payload or {}
    inputs = payload.get("input")
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise bad_request("Gemini channels embed text: 'input' must be a string or a list of strings.", param="input")
    extra = {"outputDimensionality": payload["dimensions"]} if isinstance(payload.get("dimensions"), int) else {}
    return {"requests": [{"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **extra} for t in texts]}


def _embedding_reply(call: Call, data: dict[str, Any]) -> Reply:
    payload = call.payload or {}
    as_base64 = payload.get("encoding_format") == "base64"
    items = []
    for index, embedding in enumerate(data.get("embeddings") or ()):
        values = embedding.get("values") or []
        vector: Any = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode() if as_base64 else values
        items.append({"object": "embedding", "index": index, "embedding": vector})
    # batchEmbedContents reports no token counts: count the input locally.
    prompt = tokenizer.count_prompt(call.model, payload.get("input"))
    body = {"object": "list", "data": items, "model": call.model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
    return Reply(200, orjson.dumps(body), _JSON, Usage(prompt_tokens=prompt, source="counted"))
