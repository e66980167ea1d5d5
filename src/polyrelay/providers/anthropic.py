"""Anthropic (Claude Messages API) channels.

OpenAI-format chat callers are translated by ``anthropic_chat``; Claude-SDK callers
on the native ``/v1/messages`` and ``/v1/messages/count_tokens`` paths pass through untouched
except the key, the mapped model name and the ``anthropic-version``/``anthropic-beta`` headers they sent.

Channel options: ``version`` (``anthropic-version`` when the caller sent none, default
``2023-06-01``), ``beta`` (an ``anthropic-beta`` value), ``default_max_tokens`` (4096),
``image_urls`` (``fetch``, the default: polyrelay downloads http(s) images and sends
base64, which every Anthropic-compatible upstream accepts; ``pass``: send URL sources),
``allow_private_image_hosts``.
"""

from __future__ import annotations

import aiohttp
import orjson

from polyrelay import kinds
from polyrelay.errors import RelayError
from polyrelay.providers import anthropic_chat
from polyrelay.providers.base import Adaptor, Call, Reply, ReplyStream, Services, Target, UpstreamRequest
from polyrelay.providers.image_parts import policy_for, prefetch
from polyrelay.providers.streams import ObservedStream, TranslatedStream

NATIVE_FAMILY = "anthropic"
DEFAULT_VERSION = "2023-06-01"
_JSON = "application/json"


def _fetches_images(target: Target) -> bool:
    return target.channel.options.get("image_urls", "fetch") != "pass"


class AnthropicAdaptor(Adaptor):
    type = "anthropic"
    kinds = frozenset({kinds.CHAT, kinds.CLAUDE, kinds.CLAUDE_COUNT})  # chat through anthropic_chat

    async def prepare(self, call: Call, target: Target, services: Services) -> None:
        if call.family != NATIVE_FAMILY and call.endpoint == "chat.completions" and _fetches_images(target):
            await prefetch(call, services.session, policy_for(target.channel.options, services.fetch_policy))

    def build_request(self, call: Call, target: Target) -> UpstreamRequest:
        options = target.channel.options
        headers = {
            "x-api-key": target.key,
            "anthropic-version": call.extra.get("anthropic-version") or options.get("version", DEFAULT_VERSION),
            "Content-Type": _JSON,
        }
        if beta := call.extra.get("anthropic-beta") or options.get("beta"):
            headers["anthropic-beta"] = beta
        url = f"{target.channel.base_url}/v1/messages"
        if call.kind == kinds.CLAUDE_COUNT:
            url += "/count_tokens"
        if call.family == NATIVE_FAMILY:
            body = call.body
            if target.upstream_model != call.model and call.payload is not None:
                body = orjson.dumps({**call.payload, "model": target.upstream_model})
            return UpstreamRequest("POST", url, headers, body)
        if call.endpoint != "chat.completions":
            raise RelayError(400, f"Anthropic channels do not serve {call.path}.", code="unsupported_endpoint")
        payload = anthropic_chat.chat_request(call, options, target.upstream_model, _fetches_images(target))
        return UpstreamRequest("POST", url, headers, orjson.dumps(payload))

    async def read_reply(self, call: Call, response: aiohttp.ClientResponse) -> Reply:
        body = await response.read()
        data = orjson.loads(body)
        if call.family == NATIVE_FAMILY:
            counter = anthropic_chat.UsageCounter()
            counter.add(data.get("usage"))
            return Reply(response.status, body, _JSON, counter.usage() if counter.seen else None)
        out, usage = anthropic_chat.chat_reply(call, data)
        return Reply(response.status, out, _JSON, usage)

    def stream_reply(self, call: Call, response: aiohttp.ClientResponse) -> ReplyStream:
        if call.family == NATIVE_FAMILY:
            return ObservedStream(response, anthropic_chat.UsageWatcher())
        return TranslatedStream(response, anthropic_chat.ChatStream(call))

    def content_type(self, response: aiohttp.ClientResponse) -> str:
        return response.headers.get("Content-Type", "text/event-stream")

    def upstream_error(self, call: Call, status: int, body: bytes) -> RelayError:
        return anthropic_error(status, body)


def anthropic_error(status: int, body: bytes) -> RelayError:
    """``{"type":"error","error":{"type","message"}}`` as a RelayError; the HTTP status is kept
    (529 overloaded stays 529: the pipeline fails over on it, the OpenAI SDK reads it as a server error)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        text = body[:500].decode("utf-8", "replace").strip()
        return RelayError(status, f"Upstream answered HTTP {status}" + (f": {text}" if text else "."),
                          type="upstream_error")
    kind = str(error.get("type") or "")
    _, type_ = anthropic_chat.ERROR_TYPES.get(kind, (status, "upstream_error"))
    return RelayError(status, str(error.get("message") or f"Upstream answered HTTP {status}."), type=type_,
                      code=kind or None)
