"""A small pipelined Redis client for calls on the request path.

redis-py's asyncio client spends ~100 µs of CPU per command in its own layers (pool, retries,
observability) and holds a pooled connection per command in flight. This client keeps one
connection per process, writes every command as it comes and matches replies in order, so
concurrent requests share one connection and the parsing is hiredis' C code: ~10 µs a call.
It does only what the hot path needs (commands, scripts by SHA); everything else uses redis-py.

Failures are the caller's to handle: a broken connection fails every command in flight with
``ConnectionError`` and the next command connects again; a command cannot hang longer than
the caller's own timeout, after which ``reset`` drops a connection that stopped answering.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

Arg = str | bytes | int


def _encode(args: Sequence[Arg]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()
            if future.done():  # its caller timed out; the reply still had to be read, in order
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError("the Redis connection was closed"))


class RedisPipe:
    def __init__(self, url: str, connect_timeout_s: float = 1.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        self._scheme = parts.scheme
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 6379
        self._path = unquote(parts.path) if parts.scheme == "unix" else ""
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        db = parts.path.strip("/") if parts.scheme != "unix" else ""
        query_db = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p).get("db")
        self._db = int(db or query_db or 0)
        self._connect_timeout_s = connect_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def call(self, *args: Arg) -> Any:
        """Send one command and wait for its reply; a Redis error reply is raised (hiredis.ReplyError)."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        future = asyncio.get_running_loop().create_future()
        protocol.waiting.append(future)
        assert protocol.transport is not None
        protocol.transport.write(_encode(args))
        return await future

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run ``script`` by its SHA, loading it once when Redis does not know it (first use, or a restarted Redis)."""
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except hiredis.ReplyError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
        await self.call("SCRIPT", "LOAD", script.source)
        return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)

    def reset(self) -> None:
        """Drop the connection (one that stopped answering); the next command connects again."""
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.abort()
        self._protocol = None

    async def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # concurrent first calls share one connection
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(self._connect_timeout_s):
                if self._scheme == "unix":
                    _, protocol = await loop.create_unix_connection(_Protocol, self._path)
                else:
                    context = ssl.create_default_context() if self._scheme == "rediss" else None
                    _, protocol = await loop.create_connection(_Protocol, self._host, self._port, ssl=context)
                self._protocol = protocol
                hello = []
                if self._password is not None:
                    auth: tuple[Arg, ...] = ("AUTH", self._username, self._password) if self._username else (
                        "AUTH", self._password)
                    hello.append(self.call(*auth))
                if self._db:
                    hello.append(self.call("SELECT", self._db))
                try:
                    await asyncio.gather(*hello)
                except BaseException:
                    self.reset()
                    raise
            return protocol


class Script:
    """A Lua script known by its SHA1, as EVALSHA needs it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
