"""``GET /mj/image/{id}``: a Midjourney result image served through polyrelay (new-api's MjForwardUrlEnabled).

The image is fetched from the URL the task's own upstream result names (never a URL
the caller gives), with the size and time limits of ``midjourney.image_max_bytes`` /
``image_timeout_s`` and the SSRF rules of ``polyrelay/fetch.py`` (private addresses only
when the operator allows them, or when the image lives on the channel's own host),
then cached, content-addressed, in the files backend (``store.blobs``): under
``midjourney.image_cache_dir`` on the local disk, or under ``mj-images/`` in the bucket,
where every node finds what another cached:

    blobs/<2 hex>/<sha256 of the bytes>      the image
    urls/<2 hex>/<sha256 of the upstream URL> {"blob": ..., "type": ...}

The cache is bounded by ``image_cache_max_bytes``: when a new image pushes it over, the
oldest blobs are deleted (least recently served on disk; first stored in a bucket,
where reads leave no trace). Concurrent requests for one image share one download. A
cache that cannot be reached (the object store is down) is skipped: the image is
downloaded and served all the same. The route needs no key (image links end up in
``<img>`` tags), like new-api's.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.files import blob_response, redirect_seconds
from polyrelay.fetch import FetchError, FetchPolicy, fetch_image
from polyrelay.providers.base import TaskView
from polyrelay.store.blobs import BlobStore, BlobUnavailable

log = logging.getLogger("polyrelay.midjourney")
_HEADERS = {"cache-control": "public, max-age=86400"}


@dataclass(frozen=True)
class Downloaded:
    data: bytes
    media_type: str


class ImageCache:
    def __init__(self, blobs: BlobStore, max_bytes: int) -> None:
        self.blobs = blobs
        self.max_bytes = max_bytes
        self._total: int | None = None  # bytes of blobs as this process counts them, listed when it matters
        self._inflight: dict[str, asyncio.Future[Downloaded]] = {}

    @staticmethod
    def _pointer(url: str) -> str:
        digest = hashlib.sha256(url.encode()).hexdigest()
        return f"urls/{digest[:2]}/{digest}"

    @staticmethod
    def _blob(digest: str) -> str:
        return f"blobs/{digest[:2]}/{digest}"

    async def lookup(self, url: str) -> tuple[str, str] | None:
        """The cached blob's key and media type (it may have been evicted since), or None."""
        raw = await self.blobs.get(self._pointer(url))
        try:
            pointer = orjson.loads(raw or b"")
            return self._blob(str(pointer["blob"])), str(pointer["type"])
        except (ValueError, KeyError, TypeError):
            return None

    async def store(self, url: str, data: bytes, media_type: str) -> None:
        digest = hashlib.sha256(data).hexdigest()
        blob = self._blob(digest)
        if await self.blobs.size(blob) is None:
            await self.blobs.put(blob, data, media_type)
            if self._total is not None:
                self._total += len(data)
        await self.blobs.put(self._pointer(url), orjson.dumps({"blob": digest, "type": media_type}),
                             "application/json")
        await self._evict(keep=blob)

    async def _evict(self, keep: str) -> None:
        if self._total is not None and self._total <= self.max_bytes:
            return
        # Listed, not trusted: other processes and nodes add to the same cache.
        blobs = sorted(await self.blobs.list("blobs"), key=lambda entry: entry.modified)
        self._total = sum(entry.size for entry in blobs)
        for entry in blobs:
            if self._total <= self.max_bytes:
                break
            if entry.key != keep:
                await self.blobs.delete(entry.key)  # pointers to it simply miss, and download again
                self._total -= entry.size

    async def download(self, url: str, policy: FetchPolicy, session: aiohttp.ClientSession) -> Downloaded:
        """Fetch the image and cache it; concurrent calls for one URL share one download."""
        running = self._inflight.get(url)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Downloaded] = asyncio.get_running_loop().create_future()
        self._inflight[url] = future
        try:
            data, media_type = await fetch_image(session, url, policy)
            image = Downloaded(data, media_type)
            try:
                await self.store(url, data, media_type)
            except (BlobUnavailable, OSError) as exc:  # served all the same, cached next time
                log.warning("Midjourney image not cached: %s", exc)
            future.set_result(image)
            return image
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._inflight.pop(url, None)


def upstream_image_url(task: TaskView, channel_base_url: str | None) -> str:
    """The image URL the task's upstream result names (relative ones against the channel's base)."""
    url = (task.result or {}).get("imageUrl") or ""
    if not isinstance(url, str) or not url:
        return ""
    if not urlsplit(url).scheme and channel_base_url:
        url = urljoin(channel_base_url.rstrip("/") + "/", url.lstrip("/"))
    return url


def cache_for(request: Request) -> ImageCache:
    state = request.app.state
    cache = getattr(state, "mj_image_cache", None)
    if cache is None:
        settings = state.settings.midjourney
        blobs = state.files.namespace("mj-images", Path(settings.image_cache_dir))
        cache = state.mj_image_cache = ImageCache(blobs, settings.image_cache_max_bytes)
    return cache


async def serve(request: Request, task: TaskView, channel_base_url: str | None) -> Response | None:
    """The image response, or None when the task has no image (yet). Raises FetchError."""
    url = upstream_image_url(task, channel_base_url)
    if not url:
        return None
    settings = request.app.state.settings
    cache = cache_for(request)
    try:
        hit = await cache.lookup(url)
        if hit is not None:
            response = await blob_response(request, cache.blobs, *hit, _HEADERS, redirect_seconds(request.app.state.files))
            if response is not None:
                return response
    except BlobUnavailable:
        pass  # logged by the store; the image is downloaded instead
    host = urlsplit(url).hostname
    own_host = bool(channel_base_url) and host == urlsplit(channel_base_url or "").hostname
    policy = FetchPolicy(
        allow_private=settings.allow_private_image_hosts or own_host,
        max_bytes=settings.midjourney.image_max_bytes,
        timeout_s=settings.midjourney.image_timeout_s,
    )
    image = await cache.download(url, policy, request.app.state.tasks.session)
    return Response(image.data, media_type=image.media_type, headers=_HEADERS)


__all__ = ["FetchError", "ImageCache", "cache_for", "serve", "upstream_image_url"]
