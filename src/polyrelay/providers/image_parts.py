"""Image parts of OpenAI chat messages, as bytes for protocols that want them inline.

``prefetch`` runs before the first channel is tried and fetches every http(s) image
once (concurrently, SSRF-checked); the synchronous translators then read data:
URIs and the fetched images through ``inline``. A failure is a 400 that names the
message part, because the caller can fix it and no other channel would do better.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import replace
from collections.abc import Iterator
from typing import Any

import aiohttp

from polyrelay.errors import bad_request
from polyrelay.providers.base import Call
from polyrelay.fetch import FetchError, FetchPolicy, fetch_image

_FETCHED = "fetched_images"  # call.extra key: url -> (media type, base64 data)


def image_parts(messages: Any) -> Iterator[tuple[str, str]]:
    """(where, url) of every image part, ``where`` as the caller would name it."""
    if not isinstance(messages, list):
        return
    for m, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for p, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                yield f"messages[{m}].content[{p}].image_url", url if isinstance(url, str) else ""


async def prefetch(call: Call, session: aiohttp.ClientSession, policy: FetchPolicy) -> None:
    fetched: dict[str, tuple[str, str]] = call.extra.setdefault(_FETCHED, {})
    wanted: dict[str, str] = {}
    for where, url in image_parts((call.payload or {}).get("messages")):
        if url.startswith(("http://", "https://")) and url not in fetched:
            wanted.setdefault(url, where)
    if not wanted:
        return
    results = await asyncio.gather(*(fetch_image(session, url, policy) for url in wanted), return_exceptions=True)
    for (url, where), result in zip(wanted.items(), results):
        if isinstance(result, FetchError):
            raise bad_request(f"The image at {where} could not be used: {result}.", param=where, code="invalid_image_url")
        if isinstance(result, BaseException):
            raise result
        body, media_type = result
        fetched[url] = (media_type, base64.b64encode(body).decode("ascii"))


def inline(call: Call, url: str, where: str) -> tuple[str, str]:
    """(media type, base64 data) of a data: URI or an already fetched URL."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise bad_request(f"The image at {where} must be a base64 data: URI such as "
                              "'data:image/png;base64,...'.", param=where, code="invalid_image_url")
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(f"The image at {where} is not valid base64.", param=where,
                              code="invalid_image_url") from None
        return media_type, data
    fetched = call.extra.get(_FETCHED, {}).get(url)
    if fetched is None:
        raise bad_request(f"The image at {where} must be an http(s) URL or a data: URI.", param=where,
                          code="invalid_image_url")
    return fetched


def policy_for(options: dict[str, Any], default: FetchPolicy) -> FetchPolicy:
    """The operator's policy, unless the channel's ``allow_private_image_hosts`` overrides it."""
    allow = options.get("allow_private_image_hosts")
    return default if allow is None else replace(default, allow_private=bool(allow))
