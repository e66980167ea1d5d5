"""The relay's own HTTP/1.1 client against real loopback servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from polyrelay.relay.upstream import Timeouts, UpstreamClient

FAST = Timeouts(connect=2.0, total=5.0, read=5.0)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def _response(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient()
    yield upstream
    await upstream.close()


async def test_keep_alive_reuses_one_connection(client: UpstreamClient) -> None:
    connections = 0
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                seen.append(await _read_request(reader))
            except asyncio.IncompleteReadError:
                break
            writer.write(_response(b"pong"))
            await writer.drain()

    server, url = await _serve(handler)
    async with server:
        for _ in range(3):
            response = await client.request("POST", url + "/v1/x?a=1", {"Authorization": "Bearer k"}, b"ping", FAST)
            assert (response.status, await response.read()) == (200, b"pong")
    assert connections == 1
    assert seen[0].startswith(b"POST /v1/x?a=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Authorization: Bearer k\r\n" in seen[0] and seen[0].endswith(b"\r\n\r\nping")


async def test_a_connection_the_upstream_dropped_while_idle_is_replaced(client: UpstreamClient) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        # Promise keep-alive, then hang up: the pooled connection is dead on its next use.
        writer.write(_response(b"once"))
        await writer.drain()
        writer.close()

    server, url = await _serve(handler)
    async with server:
        for _ in range(3):
            response = await client.request("GET", url + "/", {}, None, FAST)
            assert await response.read() == b"once"
    assert connections == 3


async def test_silence_after_the_headers_times_out(client: UpstreamClient) -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.close()

    server, url = await _serve(handler)
    async with server:
        response = await client.request("GET", url + "/", {}, None, Timeouts(connect=2, total=None, read=0.2))
        chunks = response.content.iter_any()
        assert await chunks.__anext__() == b"first"
        with pytest.raises(asyncio.TimeoutError):
            await chunks.__anext__()
        release.set()


async def test_no_answer_within_the_total_time_times_out(client: UpstreamClient) -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await release.wait()
        writer.close()

    server, url = await _serve(handler)
    async with server:
        with pytest.raises(asyncio.TimeoutError):
            await client.request("GET", url + "/", {}, None, Timeouts(connect=2, total=0.2, read=5))
        release.set()


async def test_chunked_gzip_body_arrives_decoded(client: UpstreamClient) -> None:
    payload = b"data: hello\n\n" * 1000
    packed = gzip.compress(payload)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(packed), 100):
            piece = packed[start : start + 100]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server, url = await _serve(handler)
    async with server:
        response = await client.request("GET", url + "/", {}, None, FAST)
        assert await response.read() == payload


async def test_a_large_body_survives_backpressure(client: UpstreamClient) -> None:
    body = bytes(range(256)) * 40_000  # 10 MB, far more than the reader buffers before pausing

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_response(body))
        await writer.drain()

    server, url = await _serve(handler)
    async with server:
        response = await client.request("GET", url + "/", {}, None, FAST)
        received = bytearray()
        async for chunk in response.content.iter_any():
            received += chunk
            await asyncio.sleep(0)  # a slow caller: let the pause/resume cycle run
        assert bytes(received) == body


async def test_refused_connection_is_an_aiohttp_connection_error(client: UpstreamClient) -> None:
    server, url = await _serve(lambda reader, writer: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.request("GET", url + "/", {}, None, FAST)


async def test_header_injection_is_refused(client: UpstreamClient) -> None:
    with pytest.raises(aiohttp.ClientError):
        await client.request("GET", "http://127.0.0.1:9/", {"X-Evil": "a\r\nHost: other"}, None, FAST)
