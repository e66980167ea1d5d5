"""Re-hosting provider results: download once, keep content-addressed, serve as ``/files/{id}``.

Provider result URLs expire (Ideogram and Recraft after about a day). With
``files.rehost`` on, polyrelay downloads each result URL of a reply once, stores the
bytes under their SHA-256 in ``files.dir`` and hands the caller its own URL instead.
The id is ``<sha256>.<ext>``: unguessable without the content, and the extension
names the media type the file is served with.

Downloads are bounded (``max_bytes``, ``timeout_s``) and only made from the
provider's own hosts: the channel's base-URL host or a sibling of its domain (as for
BFL's regional hosts), or hosts the operator lists per channel type. Every redirect
hop is checked the same way, and addresses are resolved and pinned as for any URL
polyrelay fetches (private addresses only with ``allow_private_image_hosts``).

A URL that may not or cannot be re-hosted (foreign host, too large, not an image or
video, upstream error) is left as it is: the caller still gets the provider's
working, if expiring, URL, and the call the provider already charged for succeeds.
So is a file the store cannot take (the object store is down): it is logged.

Where the bytes live is ``files.backend`` (``store.blobs``): a local directory, or an
S3-compatible bucket shared by every node. File URLs are built from
``files.public_base_url`` (the balancer's or CDN's address), so every node hands out
the same URL for the same file.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import tempfile
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from polyrelay.fetch import FetchError, FetchPolicy, pinned_request, same_provider
from polyrelay.store.blobs import BlobStore, BlobUnavailable, LocalBlobs
from polyrelay.store.snapshot import ChannelRecord

log = logging.getLogger("polyrelay.files")

# Media types polyrelay stores, and the extension that names them in a file id.
MEDIA_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "svg": "image/svg+xml",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mov": "video/quicktime",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
}
_EXTENSIONS = {media_type: ext for ext, media_type in MEDIA_TYPES.items()}
_EXTENSIONS.update({"image/jpg": "jpg", "audio/mp3": "mp3", "audio/x-wav": "wav", "audio/wave": "wav"})
FILE_ID = re.compile(r"^([0-9a-f]{64})\.([a-z0-9]{2,4})$")
_CHUNK = 256 * 1024


class S3Settings(BaseModel):
    """``files.s3``: the bucket. Credentials come from the environment only (see ``store.s3blobs``)."""

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = Field(
        default=None, description="The store's URL, e.g. http://seaweedfs:8333; empty: AWS S3 of the region.")
    bucket: str = Field(min_length=1)
    region: str = "us-east-1"
    prefix: str = Field(default="", description="Key prefix for everything polyrelay stores in the bucket.")
    addressing_style: Literal["path", "virtual"] = Field(
        default="path", description="path: <endpoint>/<bucket>/<key> (SeaweedFS, MinIO); virtual: <bucket>.<host>.")
    presign_expires_s: int = Field(default=300, ge=1, le=7 * 24 * 3600, description="Lifetime of redirect URLs.")
    timeout_s: float = Field(default=60.0, gt=0, description="Time for one store request, a streamed body included.")
    connect_timeout_s: float = Field(default=3.0, gt=0)
    retries: int = Field(default=2, ge=0, description="Retries of a failed store request (with back-off).")


class FileSettings(BaseModel):
    """The ``files:`` section of the config file."""

    model_config = ConfigDict(extra="forbid")

    rehost: bool = Field(default=False, description="Replace provider result URLs by polyrelay's own /files/ URLs.")
    backend: Literal["local", "s3"] = Field(
        default="local", description="local: files.dir on this machine; s3: a bucket shared by every node.")
    dir: Path = Field(default=Path("./data/files"), description="Where re-hosted files are kept (backend local).")
    s3: S3Settings | None = None
    serve: Literal["stream", "redirect"] = Field(
        default="stream", description="s3: stream objects through polyrelay, or redirect to a presigned URL.")
    max_bytes: int = Field(default=50 * 1024 * 1024, gt=0, description="Larger results are not re-hosted.")
    timeout_s: float = Field(default=60.0, gt=0, description="Time for one download, redirects included.")
    max_redirects: int = Field(default=3, ge=0)
    public_base_url: str | None = Field(
        default=None, description="Scheme and host callers reach polyrelay at (the balancer's or CDN's URL); "
        "default http://<host>:<port>. Required with backend s3 and rehost."
    )
    hosts: dict[str, list[str]] = Field(
        default={}, description="Channel type -> extra result hosts ('cdn.example.com' or '*.example.com')."
    )

    @model_validator(mode="after")
    def _s3_complete(self) -> FileSettings:
        if self.backend == "s3" and self.s3 is None:
            raise ValueError("files.backend s3 needs files.s3 with at least a bucket (and endpoint_url off AWS)")
        if self.backend == "s3" and self.rehost and not self.public_base_url:
            # Otherwise each node would hand out its own address, and a node's address is no file's home.
            raise ValueError("files.backend s3 with rehost needs files.public_base_url (the balancer's or CDN's "
                             "URL), so every node builds the same URL for a file")
        return self


def open_blobs(settings: FileSettings, namespace: str, local_dir: Path) -> BlobStore:
    """Where one kind of file lives: ``local_dir``, or ``<prefix><namespace>/`` in the bucket."""
    if settings.backend == "s3" and settings.s3 is not None:
        from polyrelay.store.s3blobs import open_bucket  # its client loads only on nodes that use S3

        return open_bucket(settings.s3, namespace)
    return LocalBlobs(local_dir)


def media_type_of(head: bytes, declared: str) -> str | None:
    """The stored media type of a download: the declared one if polyrelay knows it, else sniffed."""
    declared = declared.split(";", 1)[0].strip().lower()
    if declared in _EXTENSIONS:
        return MEDIA_TYPES[_EXTENSIONS[declared]]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:10] == b"qt" else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


def _host_listed(host: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        pattern = pattern.strip().lower()
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def provider_host(url: str, channel: ChannelRecord, listed: list[str]) -> bool:
    """Whether ``url`` is on the channel's own host, a sibling of its domain, or a host listed for its type."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    return same_provider(url, channel.base_url) or _host_listed(parts.hostname.lower(), listed)


class FileStore:
    """The content-addressed files and the downloads that fill them."""

    def __init__(self, settings: FileSettings, public_base_url: str, allow_private: bool = False) -> None:
        self.settings = settings
        self.blobs = open_blobs(settings, "files", Path(settings.dir))
        self.public_base_url = public_base_url.rstrip("/")
        self._policy = FetchPolicy(allow_private=allow_private, max_bytes=settings.max_bytes,
                                   timeout_s=settings.timeout_s, max_redirects=settings.max_redirects)

    async def start(self) -> None:
        """Check the backend once (a missing bucket or refused credentials stop the start)."""
        await self.blobs.check()

    def namespace(self, name: str, local_dir: Path) -> BlobStore:
        """Another kind of file in the same backend (the Midjourney image cache)."""
        return open_blobs(self.settings, name, local_dir)

    # -- serving ---------------------------------------------------------------------

    @staticmethod
    def locate(file_id: str) -> tuple[str, str] | None:
        """The key and media type behind an id, or None for a malformed id."""
        match = FILE_ID.match(file_id)
        if match is None or match.group(2) not in MEDIA_TYPES:
            return None
        return _key(file_id), MEDIA_TYPES[match.group(2)]

    def url_of(self, file_id: str) -> str:
        return f"{self.public_base_url}/files/{file_id}"

    # -- re-hosting ------------------------------------------------------------------

    async def rehost_json(
        self, body: bytes, keys: frozenset[str], channel: ChannelRecord, session: aiohttp.ClientSession
    ) -> bytes:
        """``body`` with the URL values under ``keys`` replaced by polyrelay URLs; unchanged when none was."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        rehosted = await self.rehost_data(data, keys, channel, session)
        return body if rehosted is data else orjson.dumps(rehosted)

    async def rehost_data(
        self, data: Any, keys: frozenset[str], channel: ChannelRecord, session: aiohttp.ClientSession
    ) -> Any:
        """A copy of parsed JSON with the URLs under ``keys`` re-hosted; ``data`` itself when none was."""
        urls: set[str] = set()
        _collect(data, keys, urls)
        if not urls:
            return data
        ordered = sorted(urls)
        results = await asyncio.gather(*(self.rehost_url(url, channel, session) for url in ordered))
        replaced = {url: new for url, new in zip(ordered, results) if new is not None}
        return _replace(data, keys, replaced) if replaced else data

    async def rehost_url(self, url: str, channel: ChannelRecord, session: aiohttp.ClientSession) -> str | None:
        """polyrelay's URL for the file at ``url``, or None (logged) when it is not re-hosted."""
        listed = self.settings.hosts.get(channel.type, [])
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                file_id = await self._download(url, channel, listed, session)
        except TimeoutError:
            reason = f"the download took longer than {self.settings.timeout_s:g} s"
        except (FetchError, BlobUnavailable) as exc:
            reason = str(exc)
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # ValueError: e.g. a malformed port
            reason = f"the download failed ({type(exc).__name__})"
        else:
            return self.url_of(file_id)
        log.warning("result of channel %r not re-hosted, its URL is kept: %s (%s)", channel.name, reason,
                    urlsplit(url).hostname)
        return None

    async def _download(self, url: str, channel: ChannelRecord, listed: list[str],
                        session: aiohttp.ClientSession) -> str:
        return await pinned_request(session, "GET", url, self._policy, self._save,
                                    allowed=lambda hop: provider_host(hop, channel, listed))

    async def _save(self, response: aiohttp.ClientResponse) -> str:
        """Stream the body to a temporary file while hashing it, then store it under its content address."""
        scratch = self.blobs.scratch
        await asyncio.to_thread(scratch.mkdir, parents=True, exist_ok=True)
        digest, size, head = hashlib.sha256(), 0, b""
        handle = tempfile.NamedTemporaryFile(dir=scratch, prefix=".part-", delete=False)
        temporary = Path(handle.name)
        try:
            with handle:
                async for chunk in response.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > self._policy.max_bytes:
                        raise FetchError(f"the file is larger than {self._policy.max_bytes} bytes")
                    if len(head) < 16:
                        head += chunk[: 16 - len(head)]
                    digest.update(chunk)
                    handle.write(chunk)
            media_type = media_type_of(head, response.headers.get("Content-Type", ""))
            if media_type is None:
                raise FetchError("the URL does not serve an image, video or audio file")
            file_id = f"{digest.hexdigest()}.{_EXTENSIONS[media_type]}"
            key = _key(file_id)
            if await self.blobs.size(key) is None:
                await self.blobs.put(key, temporary, media_type)  # consumes the temporary file
            return file_id
        finally:
            temporary.unlink(missing_ok=True)  # the same content again: the one copy is kept


def _key(file_id: str) -> str:
    return f"{file_id[:2]}/{file_id}"  # as <dir>/<2 hex>/<id> on disk: a directory never grows too large


def _collect(node: Any, keys: frozenset[str], urls: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str) and value.startswith(("http://", "https://")):
                urls.add(value)
            else:
                _collect(value, keys, urls)
    elif isinstance(node, list):
        for value in node:
            _collect(value, keys, urls)


def _replace(node: Any, keys: frozenset[str], replaced: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: replaced.get(value, value) if key in keys and isinstance(value, str)
                else _replace(value, keys, replaced) for key, value in node.items()}
    if isinstance(node, list):
        return [_replace(value, keys, replaced) for value in node]
    return node
