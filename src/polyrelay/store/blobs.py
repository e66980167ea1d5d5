"""Where polyrelay keeps bytes it serves later: one small interface, a local-disk and an S3 backend.

Re-hosted results (``store.files``) and the Midjourney image cache
(``api.midjourney_images``) only use ``BlobStore``: on one machine the bytes live in a
directory; with N nodes in an S3-compatible bucket (``store.s3blobs``, imported only
when ``files.backend`` is ``s3``) that every node reads and writes.

Keys are relative, ``/``-separated paths (``ab/<sha256>.png``). A backend that cannot
be reached raises ``BlobUnavailable``, which callers turn into a 503 in their API's
error format; a missing object is ``None``, never an exception.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

_CHUNK = 256 * 1024


class BlobUnavailable(Exception):
    """The object store could not be reached or refused the request; the message names no secret."""


@dataclass(frozen=True)
class BlobEntry:
    key: str
    size: int
    modified: datetime  # last write, or last read on the local disk (see ``LocalBlobs``)


@dataclass
class BlobReader:
    """An object opened for reading: its total size and the requested bytes, streamed."""

    size: int
    start: int
    length: int
    chunks: AsyncIterator[bytes | memoryview]


class BlobStore(Protocol):
    scratch: Path  # where callers stage a file they then ``put`` by path

    async def check(self) -> None:
        """Fail when the store is misconfigured (no bucket, refused credentials); called once at start."""

    async def put(self, key: str, source: bytes | Path, media_type: str) -> None:
        """Store ``source`` under ``key``, atomically; a ``Path`` is consumed (moved or deleted)."""

    async def get(self, key: str) -> bytes | None:
        """The whole object (small ones only, e.g. a pointer), or None."""

    async def size(self, key: str) -> int | None:
        """The object's size, or None when it does not exist."""

    async def open(self, key: str, start: int = 0, end: int | None = None) -> BlobReader | None:
        """Bytes ``start`` to ``end`` (inclusive; None: to the end), or None when the object does not exist."""

    async def delete(self, key: str) -> None: ...

    async def list(self, prefix: str) -> list[BlobEntry]: ...

    def local_path(self, key: str) -> Path | None:
        """The object as a file of this machine, when the backend is a directory (served with sendfile)."""

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A URL that serves the object to anyone for ``expires_s`` seconds, when the backend has such URLs."""

    def scoped(self, namespace: str) -> BlobStore:
        """The same store with keys under ``namespace/`` (S3); a local store is given its own directory instead."""


class LocalBlobs:
    """A directory: ``<root>/<key>``. Writes are atomic (a temporary file, then ``os.replace``).

    A read marks the file recently used (its mtime), so a cache that evicts the oldest
    entries first evicts the least recently served ones.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.scratch = self.root  # same filesystem: staging then moving is a rename

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"bad key {key!r}")
        return path

    async def check(self) -> None:
        pass  # directories are made on the first write: a node that never re-hosts needs none

    async def put(self, key: str, source: bytes | Path, media_type: str) -> None:
        await asyncio.to_thread(_install, source, self._path(key), self.root)

    async def get(self, key: str) -> bytes | None:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except OSError:
            return None

    async def size(self, key: str) -> int | None:
        return await asyncio.to_thread(_touched_size, self._path(key))

    async def open(self, key: str, start: int = 0, end: int | None = None) -> BlobReader | None:
        path = self._path(key)
        size = await asyncio.to_thread(_touched_size, path)
        if size is None:
            return None
        last = size - 1 if end is None else min(end, size - 1)
        return BlobReader(size, start, max(0, last - start + 1), _read(path, start, last - start + 1))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def list(self, prefix: str) -> list[BlobEntry]:
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> list[BlobEntry]:
        entries = []
        for path in (self.root / prefix).rglob("*"):
            try:
                stat = path.stat()
            except OSError:
                continue  # removed meanwhile
            if path.is_file() and not path.name.startswith("."):
                entries.append(BlobEntry(path.relative_to(self.root).as_posix(), stat.st_size,
                                         datetime.fromtimestamp(stat.st_mtime, timezone.utc)))
        return entries

    def local_path(self, key: str) -> Path | None:
        return self._path(key) if _touched_size(self._path(key)) is not None else None  # about to be served

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None

    def scoped(self, namespace: str) -> BlobStore:
        return LocalBlobs(self.root / namespace)


def _touched_size(path: Path) -> int | None:
    try:
        os.utime(path)  # recently used: evicted last
        return path.stat().st_size
    except OSError:
        return None


async def _read(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        await asyncio.to_thread(handle.seek, start)
        while length > 0:
            chunk = await asyncio.to_thread(handle.read, min(_CHUNK, length))
            if not chunk:
                break
            length -= len(chunk)
            yield chunk
    finally:
        handle.close()


def _install(source: bytes | Path, final: Path, root: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, bytes):
        handle = tempfile.NamedTemporaryFile(dir=final.parent, prefix=".part-", delete=False)
        with handle:
            handle.write(source)
        source = Path(handle.name)
    try:
        os.chmod(source, 0o644)
        os.replace(source, final)  # atomic: a reader sees the whole file or none
    except BaseException:
        source.unlink(missing_ok=True)
        raise
