"""SSRF-safe fetching of ``image_url`` parts: refused addresses, redirects, limits; and the opt-in end to end."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import openai
import pytest

from polyrelay import fetch
from polyrelay.fetch import FetchError, FetchPolicy, fetch_image
from tests.conftest import Gateway
from tests.fakes import image_server
from tests.fakes.chat_providers import CALLER, Upstreams, config, upstreams
from tests.fakes.image_server import PNG
from tests.fakes.server import FakeServer

OPEN = FetchPolicy(allow_private=True)


@pytest.fixture(scope="module")
def images() -> Iterator[FakeServer]:
    server = FakeServer(image_server.create_app()).start()
    yield server
    server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.100.100.200", "0.0.0.0",
     "224.0.0.251", "240.0.0.1", "::1", "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1", "::ffff:169.254.169.254"],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not fetch.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert fetch.is_public(ipaddress.ip_address(address))


async def test_loopback_refused_by_default_even_by_name(images: FakeServer, session: aiohttp.ClientSession) -> None:
    port = images.url.rsplit(":", 1)[1]
    for url in (images.url + "/cat.png", f"http://localhost:{port}/cat.png", f"http://[::1]:{port}/cat.png"):
        with pytest.raises(FetchError, match="not a public address"):
            await fetch_image(session, url, FetchPolicy())
    assert not images.requests


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x.png", "gopher://x", "http:///nohost"])
async def test_only_http_and_https(session: aiohttp.ClientSession, url: str) -> None:
    with pytest.raises(FetchError, match="only http and https"):
        await fetch_image(session, url, OPEN)


async def test_allowed_private_fetch_and_sniffing(images: FakeServer, session: aiohttp.ClientSession) -> None:
    assert await fetch_image(session, images.url + "/cat.png", OPEN) == (PNG, "image/png")
    assert await fetch_image(session, images.url + "/untyped", OPEN) == (PNG, "image/png")
    with pytest.raises(FetchError, match="does not serve an image"):
        await fetch_image(session, images.url + "/page.html", OPEN)


async def test_redirects_are_limited(images: FakeServer, session: aiohttp.ClientSession) -> None:
    assert (await fetch_image(session, images.url + "/redirect?hops=3", OPEN))[0] == PNG
    with pytest.raises(FetchError, match="more than 3 redirects"):
        await fetch_image(session, images.url + "/redirect?hops=4", OPEN)


async def test_every_redirect_hop_is_checked(
    images: FakeServer, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend 127.0.0.1 is a public host whose redirect points into the private network (127.0.0.2).
    monkeypatch.setattr(fetch, "is_public", lambda address: str(address) == "127.0.0.1")
    port = images.url.rsplit(":", 1)[1]
    assert (await fetch_image(session, images.url + "/redirect", FetchPolicy()))[0] == PNG
    with pytest.raises(FetchError, match="'127.0.0.2' is not a public address"):
        await fetch_image(session, images.url + f"/to?url=http://127.0.0.2:{port}/cat.png", FetchPolicy())


async def test_size_and_time_limits(images: FakeServer, session: aiohttp.ClientSession) -> None:
    with pytest.raises(FetchError, match="larger than 1048576 bytes"):
        await fetch_image(session, images.url + "/huge.png", FetchPolicy(allow_private=True, max_bytes=1 << 20))
    with pytest.raises(FetchError, match="longer than 0.2 s"):
        await fetch_image(session, images.url + "/stall", FetchPolicy(allow_private=True, timeout_s=0.2))


@pytest.fixture(scope="module")
def permissive(gateway_factory: Callable[..., Gateway]) -> Iterator[tuple[Gateway, Upstreams]]:
    with upstreams() as up:
        yield gateway_factory(config(up, allow_private_image_hosts=True)), up


@pytest.mark.parametrize("model", ["gemini-1.5-flash", "claude-3-5-haiku"])
def test_operator_may_allow_private_image_hosts(permissive: tuple[Gateway, Upstreams], model: str) -> None:
    gateway, up = permissive
    client = openai.OpenAI(api_key=CALLER, base_url=gateway.v1, max_retries=0)
    completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": up.images.url + "/redirect?hops=2"}},
    ]}])
    assert completion.choices[0].message.content == f"I see 1 image(s): image/png {len(PNG)} bytes."
    with pytest.raises(openai.BadRequestError, match=r"messages\[0\]\.content\[0\]\.image_url .*not serve an image"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": up.images.url + "/page.html"}}]}])
