"""The caller's own address and scheme when polyrelay runs behind a reverse proxy.

A proxy connects from its own address; it names the client in ``X-Forwarded-For`` (or
``X-Real-IP``) and the client's scheme in ``X-Forwarded-Proto``. Anyone can send those
headers, so they are believed only from a peer in ``trusted_proxies``. The ASGI scope is
rewritten before anything reads it, so ``request.client`` and ``request.url.scheme`` are the
caller's everywhere: the IP fence, usage rows, the sign-in throttle, the session cookie.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_SCHEMES = frozenset({"http", "https"})


def network(cidr: str) -> str:
    """``cidr`` as a normalised network ("10.0.0.1" -> "10.0.0.1/32"); ValueError when it is none."""
    return str(ipaddress.ip_network(cidr.strip(), strict=False))


def address(text: str) -> Address | None:
    """The address in a header value or a peer name, without a port; IPv4-mapped IPv6 as IPv4."""
    text = text.strip()
    if text.startswith("["):  # "[v6]" or "[v6]:port"
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # "v4:port"
        text = text.partition(":")[0]
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


class TrustedProxies:
    """ASGI wrapper: a trusted peer's forwarding headers become the scope's client and scheme."""

    def __init__(self, app: ASGIApp, cidrs: Iterable[str]) -> None:
        self.app = app
        self._networks = [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._trusted_peer(scope):
            self._rewrite(scope)
        await self.app(scope, receive, send)

    def _trusted(self, candidate: Address) -> bool:
        return any(candidate in net for net in self._networks)

    def _client(self, forwarded_for: str | None, real_ip: str | None) -> str | None:
        """The right-most ``X-Forwarded-For`` hop that is not a trusted proxy (hops further left were
        written by the client, who may lie), else ``X-Real-IP``. "" when a header names no address
        (the client is unknown, so an IP fence refuses it); None when neither header was sent."""
        if forwarded_for is not None:
            hops = [address(hop) for hop in forwarded_for.split(",") if hop.strip()]
            for hop in reversed(hops):
                if hop is None:
                    return ""
                if not self._trusted(hop):
                    return str(hop)
            return str(hops[0]) if hops else ""  # every hop a trusted proxy: the first is the client
        if real_ip is not None:
            found = address(real_ip)
            return str(found) if found is not None else ""
        return None

    def _trusted_peer(self, scope: Scope) -> bool:
        peer = scope.get("client")
        found = address(peer[0]) if peer else None
        return found is not None and self._trusted(found)

    def _rewrite(self, scope: Scope) -> None:
        headers: dict[bytes, str] = {}
        for name, value in scope["headers"]:
            if name in (b"x-forwarded-for", b"x-real-ip", b"x-forwarded-proto"):
                text = value.decode("latin-1")
                headers[name] = headers[name] + "," + text if name in headers else text  # repeated headers: one list
        client = self._client(headers.get(b"x-forwarded-for"), headers.get(b"x-real-ip"))
        if client is not None:
            scope["client"] = (client, 0) if client else None
        scheme = headers.get(b"x-forwarded-proto", "").rpartition(",")[2].strip().lower()
        if scheme in _SCHEMES:  # the last value: the one the nearest (trusted) proxy wrote
            scope["scheme"] = scheme
