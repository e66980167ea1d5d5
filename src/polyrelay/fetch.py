"""Fetching a caller-given URL without becoming an SSRF proxy.

Translations that need image bytes (Gemini ``inlineData``, Anthropic base64 blocks)
fetch ``image_url`` URLs themselves. A caller must not be able to make the gateway
reach its own network: only http(s); every host is resolved first and refused if
any address is not globally routable (loopback, private, link-local and cloud
metadata, CGNAT, multicast, reserved); the connection then goes to the checked
address (no second lookup an attacker's DNS could answer differently); redirects
are followed by hand and checked the same way; size and time are bounded.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp

T = TypeVar("T")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    allow_private: bool = False  # operator opt-in, e.g. an image server on the LAN (or tests)
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 15.0
    max_redirects: int = 3


class FetchError(Exception):
    """Why a URL was not fetched; safe to show the caller."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


async def _resolve(host: str, port: int, policy: FetchPolicy) -> IPAddress:
    try:
        return _check(ipaddress.ip_address(host), host, policy)
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchError(f"the host '{host}' could not be resolved") from exc
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if not addresses:
        raise FetchError(f"the host '{host}' could not be resolved")
    for address in addresses:  # every address: the connection could use any of them
        _check(address, host, policy)
    return addresses[0]


def _check(address: IPAddress, host: str, policy: FetchPolicy) -> IPAddress:
    if not policy.allow_private and not is_public(address):
        raise FetchError(f"the host '{host}' is not a public address, and this gateway does not fetch from private ones")
    return address


def _pinned(url: str, address: IPAddress) -> tuple[str, str]:
    """The URL rewritten to the checked address, and the Host header it needs."""
    parts = urlsplit(url)
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), parts.netloc.rsplit("@", 1)[-1]


async def fetch_image(session: aiohttp.ClientSession, url: str, policy: FetchPolicy) -> tuple[bytes, str]:
    """The bytes and media type of an image at a public http(s) URL."""
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await _fetch(session, url, policy)
    except TimeoutError:
        raise FetchError(f"fetching it took longer than {policy.timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise FetchError(f"fetching it failed ({type(exc).__name__})") from None


async def _fetch(session: aiohttp.ClientSession, url: str, policy: FetchPolicy) -> tuple[bytes, str]:
    async def read(response: aiohttp.ClientResponse) -> tuple[bytes, str]:
        body = bytearray()
        async for chunk in response.content.iter_any():
            body += chunk
            if len(body) > policy.max_bytes:
                raise FetchError(f"the image is larger than {policy.max_bytes} bytes")
        return bytes(body), _media_type(bytes(body[:16]), response.headers.get("Content-Type", ""))

    return await pinned_get(session, url, policy, read, headers={"Accept": "image/*"})


async def pinned_get(
    session: aiohttp.ClientSession, url: str, policy: FetchPolicy,
    read: Callable[[aiohttp.ClientResponse], Awaitable[T]], *, headers: dict[str, str] | None = None,
    allowed: Callable[[str], bool] | None = None,
) -> T:
    """GET ``url`` the safe way and ``read`` its 200 answer: every hop (redirects are followed by hand)
    must be http(s), pass ``allowed`` when given, and resolve to addresses the policy accepts; the
    connection goes to the checked address, so a second DNS answer cannot steer it elsewhere."""
    for _ in range(policy.max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError("only http and https URLs can be fetched")
        if allowed is not None and not allowed(url):
            raise FetchError("the URL is not on a host this fetch may reach")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = await _resolve(parts.hostname, port, policy)
        pinned, host_header = _pinned(url, address)
        extra = {"server_hostname": parts.hostname} if parts.scheme == "https" else {}
        async with session.get(
            pinned, headers={**(headers or {}), "Host": host_header}, allow_redirects=False, **extra
        ) as response:
            if response.status in _REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    raise FetchError(f"the server answered HTTP {response.status} without a Location")
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise FetchError(f"the server answered HTTP {response.status}")
            declared = response.content_length
            if declared is not None and declared > policy.max_bytes:
                raise FetchError(f"the response is larger than {policy.max_bytes} bytes")
            return await read(response)
    raise FetchError(f"more than {policy.max_redirects} redirects")


def _media_type(head: bytes, declared: str) -> str:
    declared = declared.split(";", 1)[0].strip().lower()
    if declared.startswith("image/"):
        return declared
    for magic, media_type in _IMAGE_MAGIC:
        if head.startswith(magic):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    raise FetchError(f"the URL does not serve an image (Content-Type '{declared or 'none'}')")


def same_provider(url: str, base_url: str) -> bool:
    """Whether ``url`` is on the channel's host or a sibling host of its domain (api.us1.bfl.ai
    for api.bfl.ai), so the channel key is never sent, nor a download made, elsewhere."""
    host, base = urlsplit(url).hostname or "", urlsplit(base_url).hostname or ""
    if not host or urlsplit(url).scheme not in ("http", "https"):
        return False
    if host == base:
        return True
    labels = base.split(".")
    if len(labels) < 2 or base.replace(".", "").isdigit():
        return False
    return host.endswith("." + ".".join(labels[-2:]))
