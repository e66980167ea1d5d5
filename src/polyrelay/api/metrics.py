"""``GET /metrics``: who may scrape; what is served is ``telemetry.exposition``'s.

Access: the admin key as ``Authorization: Bearer``, or a client address inside
``metrics.allow_unauthenticated_from`` (loopback by default), so a Prometheus on the same host
(or one the operator names) scrapes without a secret while the internet gets 401.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from polyrelay.api.admin.access import is_admin_key
from polyrelay.telemetry.exposition import Sources, render


def allowed(request: Request, admin_key: str | None, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """The admin key, or a client address inside one of ``networks``."""
    if is_admin_key(request, admin_key):
        return True
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def endpoint(admin_key: str | None, allow_from: list[str],
             sources: Callable[[], Sources | None]) -> Callable[[Request], Awaitable[Response]]:
    """The ``/metrics`` handler; ``sources`` is read per scrape (the app builds it in its lifespan)."""
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in allow_from]

    async def scrape(request: Request) -> Response:
        if not allowed(request, admin_key, networks):
            return JSONResponse({"error": {"code": "unauthenticated", "message": (
                "Send the admin key as 'Authorization: Bearer <key>', or scrape from an address in "
                "metrics.allow_unauthenticated_from.")}}, status_code=401)
        current = sources()
        if current is not None:
            await current.refresh()
        return Response(render(), media_type=CONTENT_TYPE_LATEST)

    return scrape
