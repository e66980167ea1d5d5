"""Accounts and exact money: concurrency proof, ledger == balance == usage logs, YAML mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, wait_until
from tests.fakes import openai_upstream
from tests.fakes.server import FakeServer

UPSTREAM_KEY = "sk-upstream-accounts"
ADMIN_KEY = "admin-key-accounts-0123456789"
BUYER_KEY = "sk-buyer-0123456789abcdef"
LEGACY_KEY = "sk-legacy-0123456789abcdef"
PER_CALL = 10_000  # micro-USD: 0.01 USD per call
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    server = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    yield server
    server.stop()


def config(upstream: FakeServer) -> dict[str, Any]:
    return {
        "admin_key": ADMIN_KEY,
        "snapshot_refresh_s": 0.2,
        "channels": [{"name": "main", "base_url": upstream.url, "keys": [UPSTREAM_KEY],
                      "models": ["per-call", "gpt-4o-mini"]}],
        "users": [{"name": "buyer", "balance_usd": 0.5}],  # covers exactly 50 calls
        "tokens": [
            {"name": "buyer-key", "key": BUYER_KEY, "user": "buyer"},
            {"name": "legacy", "key": LEGACY_KEY, "quota_usd": 0.02},  # no user: one is made for it
        ],
        "prices": {"per-call": {"per_request": 0.01}, "gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}},
    }


def money(gateway: Gateway, user: str) -> tuple[int, int, int, int]:
    """(users.balance_micros, sum of ledger, sum of ledger top-ups, sum of usage-log costs) of one user."""
    uid = gateway.query("SELECT id FROM users WHERE name = :n", n=user)[0].id
    balance = gateway.query("SELECT balance_micros FROM users WHERE id = :u", u=uid)[0].balance_micros
    ledger = gateway.query("SELECT COALESCE(SUM(amount_micros), 0) AS s FROM ledger WHERE user_id = :u", u=uid)[0].s
    topups = gateway.query(
        "SELECT COALESCE(SUM(amount_micros), 0) AS s FROM ledger WHERE user_id = :u AND kind = 'topup'", u=uid)[0].s
    logged = gateway.query("SELECT COALESCE(SUM(cost_micros), 0) AS s FROM usage_logs WHERE user_id = :u", u=uid)[0].s
    return int(balance), int(ledger), int(topups), int(logged)


async def _burst(gateway: Gateway, key: str, n: int, model: str = "per-call") -> list[int]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=gateway.v1, timeout=60, limits=limits) as client:

        async def one(_: int) -> int:
            response = await client.post(
                "/chat/completions", json={"model": model, "messages": HI, "max_tokens": 16},
                headers={"Authorization": f"Bearer {key}"},
            )
            return response.status_code

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_200_concurrent_requests_cannot_overdraw_a_balance_for_50(
    gateway_factory: Callable[..., Gateway], upstream: FakeServer
) -> None:
    gateway = gateway_factory(config(upstream))
    statuses = asyncio.run(_burst(gateway, BUYER_KEY, 200))
    served = statuses.count(200)
    assert set(statuses) <= {200, 429}
    # Per-request prices make every estimate exact, so the tolerance is 0 here: exactly 50.
    assert served <= 50 + 1
    assert served >= 49  # and the balance is not left unused
    assert wait_until(
        lambda: gateway.query("SELECT COUNT(*) AS n FROM usage_logs WHERE token_name = 'buyer-key'")[0].n == 200,
        what="every usage-log row",
    )
    balance, ledger, topups, logged = wait_until(
        lambda: (m := money(gateway, "buyer"))[0] == 500_000 - served * PER_CALL and m, what="the settled balance"
    )
    assert balance >= 0  # documented tolerance for per-request prices: none
    assert ledger == balance  # the ledger sums to the balance
    assert topups - logged == balance  # and the usage logs account for every charge
    charges = gateway.query("SELECT COUNT(*) AS n FROM ledger WHERE kind = 'charge'")[0].n
    assert charges == served
    # After the burst, nothing is left: the next call is refused with OpenAI's insufficient_quota.
    response = httpx.post(gateway.v1 + "/chat/completions", json={"model": "per-call", "messages": HI},
                          headers={"Authorization": f"Bearer {BUYER_KEY}"}, timeout=20)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"


def test_token_priced_burst_stays_within_one_estimate(
    gateway_factory: Callable[..., Gateway], upstream: FakeServer
) -> None:
    """Token prices: the reservation is an estimate, the settlement the real usage; the books still agree."""
    gateway = gateway_factory(config(upstream))
    admin = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20)
    user = admin.post("/api/users", json={"name": "tiny", "balance_micros": 300}).json()
    key = admin.post("/api/tokens", json={"name": "tiny-key", "user_id": user["id"]}).json()["key"]
    statuses = asyncio.run(_burst(gateway, key, 100, model="gpt-4o-mini"))
    assert set(statuses) <= {200, 429} and 200 in statuses and 429 in statuses
    wait_until(lambda: gateway.query("SELECT COUNT(*) AS n FROM usage_logs WHERE token_name = 'tiny-key'")[0].n == 100,
               what="every usage-log row")
    balance, ledger, topups, logged = money(gateway, "tiny")
    assert balance >= 0  # max_tokens was set, so every estimate bounded its real cost
    assert ledger == balance and topups - logged == balance


def test_yaml_tokens_without_a_user_keep_their_quota(
    gateway_factory: Callable[..., Gateway], upstream: FakeServer
) -> None:
    gateway = gateway_factory(config(upstream))
    user = gateway.query("SELECT u.name, u.unlimited FROM users u JOIN tokens t ON t.user_id = u.id WHERE t.name = 'legacy'")
    assert [(r.name, bool(r.unlimited)) for r in user] == [("legacy", True)]
    statuses = asyncio.run(_burst(gateway, LEGACY_KEY, 5))
    assert sorted(statuses) == [200, 200, 429, 429, 429]  # quota_usd 0.02 is the token's own limit
    wait_until(lambda: money(gateway, "legacy")[0] == -20_000, what="the unlimited user's balance")
    balance, ledger, _, logged = money(gateway, "legacy")
    assert ledger == balance == -logged
