"""The S3 backend of ``store.blobs``: a bucket on AWS S3, SeaweedFS, MinIO or any S3-compatible store.

Imported only when ``files.backend`` is ``s3``. The client is obstore (Rust's
``object_store``): its calls run on its own threads and are awaited here, so the
event loop never blocks on an upload or download; it imports in a few milliseconds and
costs a few MiB, where botocore costs a large fraction of a second and tens of MiB.

Credentials come from the environment only (``POLYRELAY_S3_ACCESS_KEY_ID`` /
``POLYRELAY_S3_SECRET_ACCESS_KEY``, else ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``,
and ``AWS_SESSION_TOKEN`` when set), never from the config file, and appear in no error
or log line: errors are reduced to their kind and the object's key.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import BaseError, NotFoundError, PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store

from polyrelay.store.blobs import BlobEntry, BlobReader, BlobStore, BlobUnavailable

if TYPE_CHECKING:
    from polyrelay.store.files import S3Settings

log = logging.getLogger("polyrelay.files")
_CHUNK = 256 * 1024
# obstore raises the builtin FileNotFoundError for a missing object, and OSError kinds for some transport failures.
_MISSING = (NotFoundError, FileNotFoundError)
_FAILED = (BaseError, OSError)


class S3ConfigError(Exception):
    """The bucket cannot be used as configured (missing, or the credentials are refused)."""


def credentials(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The store's credentials from the environment; polyrelay's own names win over AWS's."""
    env = os.environ if environ is None else environ
    key_id = env.get("POLYRELAY_S3_ACCESS_KEY_ID") or env.get("AWS_ACCESS_KEY_ID")
    secret = env.get("POLYRELAY_S3_SECRET_ACCESS_KEY") or env.get("AWS_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        raise S3ConfigError("files.backend is s3 but no credentials are set: export POLYRELAY_S3_ACCESS_KEY_ID and "
                            "POLYRELAY_S3_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
    found = {"access_key_id": key_id, "secret_access_key": secret}
    if token := env.get("POLYRELAY_S3_SESSION_TOKEN") or env.get("AWS_SESSION_TOKEN"):
        found["session_token"] = token
    return found


def connect(settings: S3Settings) -> S3Store:
    client: dict[str, Any] = {"timeout": f"{settings.timeout_s:g}s",
                              "connect_timeout": f"{settings.connect_timeout_s:g}s"}
    endpoint = settings.endpoint_url
    if endpoint and endpoint.startswith("http://"):
        client["allow_http"] = True
    # A store that is down should answer the caller within seconds, not after object_store's default 3 minutes.
    retry = {"max_retries": settings.retries, "retry_timeout": timedelta(seconds=settings.timeout_s),
             "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2), "base": 2}}
    return S3Store(settings.bucket, endpoint=endpoint, region=settings.region,
                   virtual_hosted_style_request=settings.addressing_style == "virtual",
                   client_options=client, retry_config=retry,  # type: ignore[arg-type]
                   **credentials())  # type: ignore[arg-type]


class S3Blobs:
    """Objects ``<prefix><key>`` in one bucket."""

    def __init__(self, store: S3Store, settings: S3Settings, prefix: str) -> None:
        self._store = store
        self._settings = settings
        self._prefix = prefix
        self.scratch = Path(tempfile.gettempdir())

    def _key(self, key: str) -> str:
        return self._prefix + key

    def _unavailable(self, action: str, key: str, exc: BaseException) -> BlobUnavailable:
        # obstore's messages name the endpoint and the key, never the credentials; its kind is enough here.
        where = f"{self._settings.endpoint_url or 'AWS S3'} bucket {self._settings.bucket!r}"
        log.warning("object store: %s of %r failed (%s) at %s", action, self._key(key), type(exc).__name__, where)
        return BlobUnavailable(f"the object store is unavailable ({type(exc).__name__})")

    async def check(self) -> None:
        where = f"bucket {self._settings.bucket!r} at {self._settings.endpoint_url or 'AWS S3'}"
        try:
            await obstore.list(self._store, prefix=self._prefix or None, chunk_size=1).__anext__()
        except StopAsyncIteration:
            pass
        except (PermissionDeniedError, UnauthenticatedError):
            raise S3ConfigError(f"the object store refused the credentials for {where}") from None
        except _FAILED as exc:
            if isinstance(exc, _MISSING) or "NoSuchBucket" in str(exc):
                raise S3ConfigError(f"{where} does not exist: create it first "
                                    "(polyrelay does not create buckets)") from None
            # Unreachable now: start anyway, files answer 503 until the store is back.
            log.warning("object store: %s is not reachable at start (%s); files are unavailable until it is",
                        where, type(exc).__name__)

    async def put(self, key: str, source: bytes | Path, media_type: str) -> None:
        attributes: dict[str, str] = {"Content-Type": media_type,
                                      "Cache-Control": "public, max-age=31536000, immutable"}
        if media_type == "image/svg+xml":  # on the store's own origin too, never rendered as a page
            attributes["Content-Disposition"] = "attachment"
        try:
            await obstore.put_async(self._store, self._key(key), source, attributes=attributes)  # type: ignore[arg-type]
        except _FAILED as exc:
            raise self._unavailable("upload", key, exc) from None
        finally:
            if isinstance(source, Path):
                source.unlink(missing_ok=True)

    async def get(self, key: str) -> bytes | None:
        try:
            result = await obstore.get_async(self._store, self._key(key))
            return bytes(await result.bytes_async())
        except _MISSING:
            return None
        except _FAILED as exc:
            raise self._unavailable("download", key, exc) from None

    async def size(self, key: str) -> int | None:
        try:
            return int((await obstore.head_async(self._store, self._key(key)))["size"])
        except _MISSING:
            return None
        except _FAILED as exc:
            raise self._unavailable("lookup", key, exc) from None

    async def open(self, key: str, start: int = 0, end: int | None = None) -> BlobReader | None:
        options: dict[str, Any] = {}
        if start or end is not None:
            options["range"] = (start, end + 1) if end is not None else {"offset": start}
        try:
            result = await obstore.get_async(self._store, self._key(key), options=options or None)  # type: ignore[arg-type]
        except _MISSING:
            return None
        except _FAILED as exc:
            raise self._unavailable("download", key, exc) from None
        first, stop = result.range
        return BlobReader(int(result.meta["size"]), first, stop - first, self._chunks(result, key))

    async def _chunks(self, result: Any, key: str) -> AsyncIterator[memoryview]:
        try:
            async for chunk in result.stream(min_chunk_size=_CHUNK):
                yield memoryview(chunk)
        except _FAILED as exc:
            raise self._unavailable("download", key, exc) from None

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self._store, self._key(key))
        except _MISSING:
            pass
        except _FAILED as exc:
            raise self._unavailable("delete", key, exc) from None

    async def list(self, prefix: str) -> list[BlobEntry]:
        entries = []
        try:
            async for batch in obstore.list(self._store, prefix=self._key(prefix)):
                for meta in batch:
                    entries.append(BlobEntry(meta["path"][len(self._prefix):], int(meta["size"]),
                                             meta["last_modified"]))
        except _FAILED as exc:
            raise self._unavailable("listing", prefix, exc) from None
        return entries

    def local_path(self, key: str) -> Path | None:
        return None

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return obstore.sign(self._store, "GET", self._key(key), timedelta(seconds=expires_s))

    def scoped(self, namespace: str) -> BlobStore:
        return S3Blobs(self._store, self._settings, f"{self._prefix}{namespace.strip('/')}/")


def open_bucket(settings: S3Settings, namespace: str) -> S3Blobs:
    """The bucket's objects under ``<files.s3.prefix><namespace>/``."""
    prefix = settings.prefix.strip("/")
    return S3Blobs(connect(settings), settings, f"{prefix}/" if prefix else "").scoped(namespace)  # type: ignore[return-value]
