"""Which address and scheme a request gets behind proxies: the cases the gateway tests do not reach."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from polyrelay.proxies import TrustedProxies, network

TRUSTED = ["127.0.0.1", "10.0.0.0/8", "fd00::/8"]


def seen(peer: str, *headers: tuple[str, str]) -> tuple[Any, str]:
    """The (client, scheme) the app behind the wrapper sees for a request from ``peer``."""
    scope: dict[str, Any] = {}

    async def app(inner: dict[str, Any], receive: Any, send: Any) -> None:
        scope.update(inner)

    request = {"type": "http", "client": (peer, 5000), "scheme": "http",
               "headers": [(name.encode(), value.encode()) for name, value in headers]}
    asyncio.run(TrustedProxies(app, TRUSTED)(request, None, None))  # type: ignore[arg-type]
    return scope["client"], scope["scheme"]


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        ("127.0.0.1", [("x-forwarded-for", "203.0.113.7, 10.1.2.3")], "203.0.113.7"),  # a chain of trusted proxies
        ("127.0.0.1", [("x-forwarded-for", "203.0.113.7"), ("x-forwarded-for", "198.51.100.9")], "198.51.100.9"),
        ("127.0.0.1", [("x-forwarded-for", "10.0.0.1, 10.0.0.2")], "10.0.0.1"),  # every hop trusted: the first
        ("127.0.0.1", [("x-forwarded-for", "[2001:db8::1]:443")], "2001:db8::1"),
        ("127.0.0.1", [("x-real-ip", "198.51.100.4:8080")], "198.51.100.4"),
        ("127.0.0.1", [("x-forwarded-for", "198.51.100.9"), ("x-real-ip", "203.0.113.7")], "198.51.100.9"),
        ("::ffff:127.0.0.1", [("x-forwarded-for", "203.0.113.7")], "203.0.113.7"),  # a dual-stack socket's name
        ("fd00::5", [("x-forwarded-for", "203.0.113.7")], "203.0.113.7"),
    ],
    ids=["chain", "repeated-header", "all-trusted", "ipv6-with-port", "x-real-ip", "xff-over-real-ip",
         "ipv4-mapped-peer", "ipv6-peer"],
)
def test_a_trusted_peer_names_the_client(peer: str, headers: list[tuple[str, str]], client: str) -> None:
    assert seen(peer, *headers)[0] == (client, 0)


def test_a_header_without_an_address_makes_the_client_unknown() -> None:
    assert seen("127.0.0.1", ("x-forwarded-for", "unknown, 10.0.0.1"))[0] is None


def test_an_untrusted_peer_keeps_its_own_address_and_scheme() -> None:
    headers = (("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "https"))
    assert seen("127.0.0.2", *headers) == (("127.0.0.2", 5000), "http")


@pytest.mark.parametrize(("proto", "scheme"), [("https", "https"), ("http, HTTPS", "https"), ("ftp", "http")])
def test_the_scheme_is_the_nearest_proxys_when_it_is_http_or_https(proto: str, scheme: str) -> None:
    assert seen("127.0.0.1", ("x-forwarded-proto", proto)) == (("127.0.0.1", 5000), scheme)


def test_networks_are_normalised_and_garbage_is_refused() -> None:
    assert network(" 10.1.2.3/8 ") == "10.0.0.0/8"
    assert network("::1") == "::1/128"
    with pytest.raises(ValueError):
        network("localhost")
