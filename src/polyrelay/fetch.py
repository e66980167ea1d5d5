"""Every request polyrelay makes to a URL it did not configure, without becoming an SSRF proxy.

Caller-given image URLs (Gemini ``inlineData``, Anthropic base64 blocks, Midjourney
images), provider result URLs (re-hosting) and callbacks (``notifyHook``) all go through
``pinned_request``. A caller must not be able to make the gateway reach its own
network: only http(s); every host is resolved once and refused if any address is not
globally routable (loopback, private, link-local and cloud metadata, CGNAT, multicast,
reserved, and IPv6 forms that embed such an IPv4 address); the connection then goes to
the checked address (no second lookup an attacker's DNS could answer differently);
redirects are followed by hand and checked the same way (callbacks follow none);
size and time are bounded.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

import aiohttp

T = TypeVar("T")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d (:: and ::1 decode to 0.0.0.x)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix: the IPv4 is the last 32 bits
# RFC 8215 local-use NAT64: not globally reachable (IANA), and where the IPv4 sits depends on the prefix
# length each network picked, so no decoding can vouch for it: refused whatever it embeds.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the operating system gives ``host``: what an ordinary connection would use."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    allow_private: bool = False  # operator opt-in, e.g. an image server on the LAN (or tests)
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 15.0
    max_redirects: int = 3  # 0: a redirect answer is an error, never followed
    resolve: Resolver = system_resolve  # the one lookup per hop; a parameter so tests can play a rebinding DNS


class FetchError(Exception):
    """Why a URL was not fetched; safe to show the caller."""


class Refused(FetchError):
    """The URL may never be fetched under this policy (scheme, port, host, address): retrying is pointless."""


class Unresolvable(FetchError):
    """The host has no address right now (DNS failure): it may have one later."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4): where a connection to it ends."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _IPV4_COMPATIBLE or address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """Whether ``address``, or the IPv4 address it embeds, is globally routable unicast."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64 or address.is_site_local:
            return False
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not address.is_multicast


async def _resolve(host: str, port: int, policy: FetchPolicy) -> IPAddress:
    """The address to connect to: ``host`` resolved once, every answer checked."""
    try:
        return _check(ipaddress.ip_address(host), host, policy)
    except ValueError:
        pass
    try:
        answers = await policy.resolve(host, port)
    except OSError as exc:
        raise Unresolvable(f"the host '{host}' could not be resolved") from exc
    addresses = [ipaddress.ip_address(answer.split("%", 1)[0]) for answer in answers]
    if not addresses:
        raise Unresolvable(f"the host '{host}' could not be resolved")
    for address in addresses:  # every address: the connection could use any of them
        _check(address, host, policy)
    return addresses[0]


def _check(address: IPAddress, host: str, policy: FetchPolicy) -> IPAddress:
    if not policy.allow_private and not is_public(address):
        raise Refused(f"the host '{host}' is not a public address, and this gateway does not fetch from private ones")
    return address


def _http_target(url: str) -> tuple[SplitResult, str, int]:
    """The parts, host and port of an http(s) URL; anything else is refused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("only http and https URLs can be fetched")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Refused("the URL's port is not a number from 0 to 65535") from None
    return parts, parts.hostname, port


def _pinned(parts: SplitResult, address: IPAddress) -> tuple[str, str]:
    """The URL rewritten to the checked address, and the Host header it needs."""
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), parts.netloc.rsplit("@", 1)[-1]


async def check_public_url(url: str, policy: FetchPolicy) -> None:
    """Refuse an http(s) URL someone else will fetch (an upstream) if its host is, or resolves to, an
    address the policy refuses. That fetcher resolves the name again, so this cannot pin: it stops the
    plain cases (literals, names pointing inside). A name that does not resolve here is let through:
    the fetcher, using the same DNS, fails on it too."""
    _, host, port = _http_target(url)
    if policy.allow_private:
        return
    try:
        async with asyncio.timeout(policy.timeout_s):
            await _resolve(host, port, policy)
    except (Unresolvable, TimeoutError):
        return


async def pinned_request(
    session: aiohttp.ClientSession, method: str, url: str, policy: FetchPolicy,
    read: Callable[[aiohttp.ClientResponse], Awaitable[T]], *, headers: Mapping[str, str] | None = None,
    body: bytes | None = None, allowed: Callable[[str], bool] | None = None,
) -> T:
    """Send ``method url`` (with ``body``) the safe way and ``read`` its 2xx answer, all within
    ``policy.timeout_s``. Every hop must be http(s), pass ``allowed`` when given, and resolve to
    addresses the policy accepts; the connection goes to the checked address, so a second DNS answer
    cannot steer it elsewhere. Redirects (at most ``policy.max_redirects``) are followed by hand; a 303,
    or a 301/302 after a method other than GET/HEAD, continues as a GET without the body, as browsers do.
    Raises FetchError (``Refused`` when the URL may never be fetched)."""
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await _follow(session, method, url, policy, read, dict(headers or {}), body, allowed)
    except TimeoutError:
        raise FetchError(f"fetching it took longer than {policy.timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise FetchError(f"fetching it failed ({type(exc).__name__})") from None


async def _follow(
    session: aiohttp.ClientSession, method: str, url: str, policy: FetchPolicy,
    read: Callable[[aiohttp.ClientResponse], Awaitable[T]], headers: dict[str, str], body: bytes | None,
    allowed: Callable[[str], bool] | None,
) -> T:
    for _ in range(policy.max_redirects + 1):
        parts, host, port = _http_target(url)
        if allowed is not None and not allowed(url):
            raise Refused("the URL is not on a host this fetch may reach")
        pinned, host_header = _pinned(parts, await _resolve(host, port, policy))
        extra = {"server_hostname": host} if parts.scheme == "https" else {}
        async with session.request(
            method, pinned, headers={**headers, "Host": host_header}, data=body, allow_redirects=False, **extra
        ) as response:
            if response.status in _REDIRECTS:
                url = _redirect_target(url, response)
                if response.status == 303 or (response.status in (301, 302) and method not in ("GET", "HEAD")):
                    method, body = "GET", None
                continue
            if not 200 <= response.status < 300:
                raise FetchError(f"the server answered HTTP {response.status}")
            declared = response.content_length
            if declared is not None and declared > policy.max_bytes:
                raise FetchError(f"the response is larger than {policy.max_bytes} bytes")
            return await read(response)
    raise FetchError(f"more than {policy.max_redirects} redirects")


def _redirect_target(url: str, response: aiohttp.ClientResponse) -> str:
    location = response.headers.get("Location")
    if not location:
        raise FetchError(f"the server answered HTTP {response.status} without a Location")
    return urljoin(url, location)


async def fetch_image(session: aiohttp.ClientSession, url: str, policy: FetchPolicy) -> tuple[bytes, str]:
    """The bytes and media type of an image at a public http(s) URL."""

    async def read(response: aiohttp.ClientResponse) -> tuple[bytes, str]:
        body = bytearray()
        async for chunk in response.content.iter_any():
            body += chunk
            if len(body) > policy.max_bytes:
                raise FetchError(f"the image is larger than {policy.max_bytes} bytes")
        return bytes(body), _media_type(bytes(body[:16]), response.headers.get("Content-Type", ""))

    return await pinned_request(session, "GET", url, policy, read, headers={"Accept": "image/*"})


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
