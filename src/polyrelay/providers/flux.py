"""Black Forest Labs (FLUX) behind the DALL·E-format ``/v1/images/generations``.

BFL answers a submit with a receipt ``{id, polling_url}``; the image exists only once
``get_result`` says Ready. So ``read_reply`` keeps the receipt and ``follow_up`` polls
on the pipeline's pooled session until the result, a moderation verdict, or the
channel's deadline. Options: ``poll_interval_s`` (default 0.5), ``poll_timeout_s``
(default 300), ``max_download_bytes`` for ``response_format=b64_json`` (default 20 MB).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import orjson

from polyrelay.fetch import same_provider
from polyrelay import kinds
from polyrelay.billing.meter import Usage
from polyrelay.errors import RelayError
from polyrelay.providers.base import Call, Reply, Target, UpstreamRequest
from polyrelay.providers.imaging import (
    OneImageAdaptor,
    alias_payload,
    json_object,
    openai_images,
    parse_size,
)

# OpenAI-request fields BFL understands as they are (images.md: the alias's extra fields).
_PASSED = ("aspect_ratio", "steps", "prompt_upsampling", "seed", "guidance", "safety_tolerance", "output_format",
           "raw", "image_prompt", "input_image")
WAITING = frozenset({"Pending", "Queued", "Processing"})  # BFL statuses; shared with the native family
MODERATED = frozenset({"Request Moderated", "Content Moderated"})
_TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


def bfl_headers(key: str) -> dict[str, str]:
    return {"x-key": key, "accept": "application/json"}


def bfl_body(payload: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": payload["prompt"]}
    body.update({name: payload[name] for name in _PASSED if payload.get(name) is not None})
    size = parse_size(payload.get("size"))
    if size is not None and "aspect_ratio" not in body:
        body["width"], body["height"] = size
    return body


class FluxAdaptor(OneImageAdaptor):
    type = "flux"
    kinds = frozenset({kinds.IMAGES})  # the DALL·E-format alias; BFL's own API is FluxTasks

    def _headers(self, target: Target) -> dict[str, str]:
        return bfl_headers(target.key)

    def build_request(self, call: Call, target: Target) -> UpstreamRequest:
        return UpstreamRequest(
            method="POST",
            url=self.url(target, f"/v1/{target.upstream_model}"),
            headers={**self._headers(target), "Content-Type": "application/json"},
            body=orjson.dumps(bfl_body(alias_payload(call))),
        )

    async def read_reply(self, call: Call, response: aiohttp.ClientResponse) -> Reply:
        """The submit receipt; ``follow_up`` turns it into the image."""
        return Reply(status=response.status, body=await response.read(), content_type="application/json", usage=None)

    async def follow_up(self, call: Call, target: Target, reply: Reply, session: aiohttp.ClientSession) -> Reply:
        receipt = json_object(reply.body) or {}
        task_id = receipt.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise RelayError(502, "BFL accepted the request but returned no task id.", type="upstream_error")
        result = await self._poll(call, target, self._poll_url(target, receipt, task_id), session)
        sample = result.get("sample")
        if not isinstance(sample, str) or not sample:
            raise RelayError(502, "BFL reported Ready without an image.", type="upstream_error")
        item: dict[str, Any] = {"revised_prompt": result.get("prompt") or (call.payload or {}).get("prompt")}
        if (call.payload or {}).get("response_format") == "b64_json":
            item["b64_json"] = base64.b64encode(await self._download(target, sample, session)).decode()
        else:
            item["url"] = sample
        return Reply(status=200, body=openai_images([item]), content_type="application/json", usage=Usage(images=1))

    def _poll_url(self, target: Target, receipt: dict[str, Any], task_id: str) -> str:
        polling_url = receipt.get("polling_url")
        # BFL's global endpoint hands out regional polling URLs; follow them only on BFL's own hosts.
        if isinstance(polling_url, str) and same_provider(polling_url, target.channel.base_url):
            return polling_url
        return self.url(target, f"/v1/get_result?id={task_id}")

    async def _poll(self, call: Call, target: Target, url: str, session: aiohttp.ClientSession) -> dict[str, Any]:
        options = target.channel.options
        interval = float(options.get("poll_interval_s", 0.5))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(options.get("poll_timeout_s", 300))
        timeout = aiohttp.ClientTimeout(total=target.channel.timeout_s, sock_connect=target.channel.connect_timeout_s)
        while True:
            try:
                async with session.get(url, headers=self._headers(target), timeout=timeout) as response:
                    status, body = response.status, await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise RelayError(502, f"Polling BFL failed ({type(exc).__name__}).", type="upstream_error") from None
            if status >= 400 and status not in _TRANSIENT_STATUSES:
                raise self.upstream_error(call, status, body)
            data = json_object(body) or {}
            state = data.get("status")
            if status < 400 and state == "Ready":
                return data.get("result") or {}
            if state in MODERATED:
                raise RelayError(400, f"BFL refused the request: {state}.", code="content_policy_violation")
            if status < 400 and state not in WAITING:
                raise RelayError(502, f"BFL could not make the image (status {state!r}).", type="upstream_error",
                                 code="upstream_task_failed")
            if loop.time() + interval > deadline:
                raise RelayError(504, "BFL did not finish the image in time.", type="upstream_error", code="timeout")
            await asyncio.sleep(interval)

    async def _download(self, target: Target, url: str, session: aiohttp.ClientSession) -> bytes:
        if not same_provider(url, target.channel.base_url) and not target.channel.options.get("download_any_host"):
            raise RelayError(502, "BFL's result is hosted outside BFL's domain; ask for response_format=url.",
                             type="upstream_error")
        limit = int(target.channel.options.get("max_download_bytes", 20_000_000))
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=target.channel.timeout_s)) as response:
                if response.status >= 400:
                    raise RelayError(502, f"Downloading BFL's result failed (HTTP {response.status}).",
                                     type="upstream_error")
                data = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > limit:
                        break
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise RelayError(502, f"Downloading BFL's result failed ({type(exc).__name__}).",
                             type="upstream_error") from None
        if len(data) > limit:
            raise RelayError(502, "BFL's result is larger than this channel downloads.", type="upstream_error")
        return bytes(data)
