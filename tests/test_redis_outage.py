"""Redis is an optimisation, not a dependency: a gateway whose Redis is away starts, serves and limits locally."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.conftest import Gateway, free_port
from tests.fakes import openai_upstream
from tests.fakes.server import FakeServer

CALLER = "sk-pr-redis-outage-0123456789abcdef"
ADMIN = "admin-key-redis-outage-0123456789"
UPSTREAM_KEY = "sk-upstream-redis-outage"


def test_a_gateway_whose_redis_is_down_serves_with_per_process_limits(gateway_factory: Callable[..., Gateway]) -> None:
    upstream = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    try:
        gateway = gateway_factory({
            "redis_url": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
            "admin_key": ADMIN,
            "channels": [{"name": "openai", "type": "openai", "base_url": upstream.url, "keys": [UPSTREAM_KEY],
                          "models": ["gpt-4o-mini"]}],
            "tokens": [{"name": "caller", "key": CALLER, "rpm_limit": 2}],
        })
        chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
        statuses = [httpx.post(gateway.v1 + "/chat/completions", json=chat,
                               headers={"Authorization": f"Bearer {CALLER}"}, timeout=10).status_code
                    for _ in range(5)]
        # The limit holds in this process: 2 a minute (a minute boundary between the calls allows 2 more at most).
        assert statuses[:2] == [200, 200] and 429 in statuses and statuses.count(200) <= 4, statuses

        system = httpx.get(gateway.url + "/api/system", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10).json()
        assert system["redis"] == {"configured": True, "ok": False, "latency_ms": None, "limits_shared": False}
        # Ready says degraded (a balancer prefers nodes with shared limits); alive stays alive.
        ready = httpx.get(gateway.url + "/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        assert ready.json() == {"status": "degraded", "database": "ok", "redis": "down", "limits_shared": False}
        assert httpx.get(gateway.url + "/healthz", timeout=10).status_code == 200
        assert gateway.logs().count("rate limits: Redis at") == 1  # once per outage, not per request or probe
    finally:
        upstream.stop()
