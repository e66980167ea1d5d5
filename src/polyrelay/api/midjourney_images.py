"""``GET /mj/image/{id}``: a Midjourney result image served through polyrelay (new-api's MjForwardUrlEnabled).

The image is fetched from the URL the task's own upstream result names (never a URL
the caller gives), with the size and time limits of ``midjourney.image_max_bytes`` /
``image_timeout_s`` and the SSRF rules of ``polyrelay/fetch.py`` (private addresses only
when the operator allows them, or when the image lives on the channel's own host),
then cached on disk, content-addressed:

    <image_cache_dir>/blobs/<2 hex>/<sha256 of the bytes>      the image
    <image_cache_dir>/urls/<2 hex>/<sha256 of the upstream URL> {"blob": ..., "type": ...}

The cache is bounded by ``image_cache_max_bytes``: when a new image pushes it over, the
least recently served blobs are deleted. Concurrent requests for one image share one
download. The route needs no key (image links end up in ``<img>`` tags), like new-api's.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from polyrelay.fetch import FetchError, FetchPolicy, fetch_image
from polyrelay.providers.base import TaskView


class ImageCache:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._total: int | None = None  # bytes of blobs, counted once, then kept up to date
        self._inflight: dict[str, asyncio.Future[tuple[Path, str]]] = {}

    def _pointer(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode()).hexdigest()
        return self.directory / "urls" / digest[:2] / digest

    def _blob(self, digest: str) -> Path:
        return self.directory / "blobs" / digest[:2] / digest

    def lookup(self, url: str) -> tuple[Path, str] | None:
        try:
            pointer = orjson.loads(self._pointer(url).read_bytes())
            blob = self._blob(str(pointer["blob"]))
            os.utime(blob)  # recently served: evicted last
            return blob, str(pointer["type"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def store(self, url: str, data: bytes, media_type: str) -> Path:
        digest = hashlib.sha256(data).hexdigest()
        blob = self._blob(digest)
        if not blob.exists():
            _atomic_write(blob, data)
            if self._total is not None:
                self._total += len(data)
        _atomic_write(self._pointer(url), orjson.dumps({"blob": digest, "type": media_type}))
        self._evict(keep=blob)
        return blob

    def _evict(self, keep: Path) -> None:
        blobs_dir = self.directory / "blobs"
        if self._total is None:
            self._total = sum(p.stat().st_size for p in blobs_dir.glob("*/*") if p.is_file())
        if self._total <= self.max_bytes:
            return
        blobs = sorted((p for p in blobs_dir.glob("*/*") if p.is_file() and p != keep), key=lambda p: p.stat().st_mtime)
        for blob in blobs:
            if self._total <= self.max_bytes:
                break
            try:
                size = blob.stat().st_size
                blob.unlink()
                self._total -= size
            except OSError:
                pass  # another process removed it first; pointers to it simply miss

    async def get(self, url: str, policy: FetchPolicy, session) -> tuple[Path, str]:  # type: ignore[no-untyped-def]
        hit = await asyncio.to_thread(self.lookup, url)
        if hit is not None:
            return hit
        running = self._inflight.get(url)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[tuple[Path, str]] = asyncio.get_running_loop().create_future()
        self._inflight[url] = future
        try:
            data, media_type = await fetch_image(session, url, policy)
            path = await asyncio.to_thread(self.store, url, data, media_type)
            future.set_result((path, media_type))
            return path, media_type
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._inflight.pop(url, None)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


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
        cache = state.mj_image_cache = ImageCache(Path(settings.image_cache_dir), settings.image_cache_max_bytes)
    return cache


async def serve(request: Request, task: TaskView, channel_base_url: str | None) -> Response | None:
    """The image response, or None when the task has no image (yet). Raises FetchError."""
    url = upstream_image_url(task, channel_base_url)
    if not url:
        return None
    settings = request.app.state.settings
    host = urlsplit(url).hostname
    own_host = bool(channel_base_url) and host == urlsplit(channel_base_url or "").hostname
    policy = FetchPolicy(
        allow_private=settings.allow_private_image_hosts or own_host,
        max_bytes=settings.midjourney.image_max_bytes,
        timeout_s=settings.midjourney.image_timeout_s,
    )
    path, media_type = await cache_for(request).get(url, policy, request.app.state.tasks.session)
    return FileResponse(path, media_type=media_type, headers={"cache-control": "public, max-age=86400"})


__all__ = ["FetchError", "ImageCache", "cache_for", "serve", "upstream_image_url"]
