"""Which processes form one cluster: the namespace of their shared state in Redis.

Processes share rate-limit counters and sign-in failures when they share the namespace. It is
the ``cluster_id`` setting when set; else it is derived from the database URL, normalised so
that every way of writing the same database gives the same id: the host resolved (``localhost``
and ``127.0.0.1`` agree), the default port filled in, the password, driver and query dropped, an
SQLite path made absolute. A derived id still changes when DNS answers differently, so
multi-node deployments should set ``cluster_id`` explicitly (docs/configuration.md).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket

from sqlalchemy.engine import make_url

from polyrelay.config import Settings

_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}


def cluster_id(settings: Settings) -> str:
    """The explicit ``cluster_id``, else one derived from ``database_url``."""
    return settings.cluster_id or derived_cluster_id(settings.database_url)


def derived_cluster_id(database_url: str) -> str:
    return hashlib.sha256(canonical_database(database_url).encode()).hexdigest()[:12]


def canonical_database(database_url: str) -> str:
    """One spelling of the database ``database_url`` names (no password)."""
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        path = url.database or ""
        if path and path != ":memory:" and not path.startswith("file:"):
            path = os.path.realpath(path)  # relative to the working directory, as SQLite opens it
        return f"sqlite:{path}"
    host = url.host or str(url.query.get("host") or "localhost")  # libpq's ?host= (a socket directory)
    port = url.port or _DEFAULT_PORTS.get(backend, 0)
    return f"{backend}://{url.username or ''}@{_canonical_host(host)}:{port}/{url.database or ''}"


def _canonical_host(host: str) -> str:
    if host.startswith("/"):
        return host
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:  # no resolver now: the name as written (lower case) is the best left
        return host.lower()
    addresses = {ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos}
    if addresses and all(address.is_loopback for address in addresses):
        return "loopback"
    return str(min(addresses, key=lambda a: (a.version, int(a)))) if addresses else host.lower()
