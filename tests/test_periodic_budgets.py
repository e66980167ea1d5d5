"""Periodic budgets: a key's limit or a user's cap that resets daily, weekly or monthly (UTC).

Two gateways on one database (either backend), their budget clock shifted (``budget.clock_offset_s``)
so that a few seconds after they start it reaches 2029-01-01T00:00:00Z, a Monday and the 1st: a day,
a week and a month end together. The boundary test runs first and waits for that instant (polling
calls, no sleep through a day); the others run in the periods after it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from polyrelay.billing.meter import usd_to_micros
from tests.conftest import Gateway, wait_until
from tests.fakes import bfl_upstream, openai_upstream
from tests.fakes.server import FakeServer

ADMIN = "admin-key-periodic-budgets-0123456789"
UPSTREAM_KEY = "sk-upstream-periodic-budgets"
MODEL = "budget-chat"
CALL = usd_to_micros(0.01)  # per request: every estimate is exact, so the limits are exact too
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
BFL_KEY = "bfl-upstream-periodic-budgets"
IMAGE = usd_to_micros(0.04)  # flux-pro-1.1, a task family: charged at submit, with the task
BOUNDARY = datetime(2029, 1, 1, tzinfo=timezone.utc)  # a Monday, the 1st: every period resets
MARGIN_S = 20.0  # what the boundary test needs before the boundary to spend both budgets
# How long after the fixture computes the clock offset the gateways' clock reaches BOUNDARY: more than two
# starts can take (start_gateway gives each 30 s) plus the margin, so a slow machine cannot eat the margin.
LEAD_S = 2 * 30 + MARGIN_S + 10
PASSWORD = "budget-password-0123"


@dataclass
class Nodes:
    gateways: list[Gateway]
    boundary_at: float  # when (this machine's time) the gateways' clock reaches BOUNDARY
    upstream: FakeServer


@pytest.fixture(scope="module")
def cluster(gateway_factory: Callable[..., Gateway]) -> Iterator[Nodes]:
    upstream = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    flux = FakeServer(bfl_upstream.create_app({BFL_KEY})).start()
    offset = BOUNDARY.timestamp() - LEAD_S - time.time()
    config = {
        "admin_key": ADMIN,
        "budget": {"clock_offset_s": offset},
        "channels": [{"name": "openai", "type": "openai", "base_url": upstream.url, "keys": [UPSTREAM_KEY],
                      "models": [MODEL]},
                     {"name": "flux", "type": "flux", "base_url": flux.url, "keys": [BFL_KEY], "models": ["flux-*"]}],
        "prices": {MODEL: {"per_request": 0.01}, "flux-pro-1.1": {"per_image": 0.04}},
    }
    first = gateway_factory(config)
    second = gateway_factory({**config, "database_url": first.database_url})
    yield Nodes([first, second], BOUNDARY.timestamp() - offset, upstream)
    upstream.stop()
    flux.stop()


@pytest.fixture(scope="module")
def nodes(cluster: Nodes) -> list[Gateway]:
    """The gateways once their clock is past BOUNDARY (the boundary test, first in the file, waited for it)."""
    wait_until(lambda: time.time() > cluster.boundary_at + 1, timeout=LEAD_S + 5, what="the gateways past the boundary")
    return cluster.gateways


def admin(gateway: Gateway, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, gateway.url + path, json=body, headers={"Authorization": f"Bearer {ADMIN}"},
                         timeout=20)


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def user(gateway: Gateway, name: str, **fields: Any) -> dict[str, Any]:
    return created(admin(gateway, "POST", "/api/users", {"name": name, "balance_micros": usd_to_micros(10),
                                                         "password": PASSWORD, **fields}))


def key(gateway: Gateway, user_id: int, name: str, **limits: Any) -> dict[str, Any]:
    return created(admin(gateway, "POST", "/api/tokens", {"user_id": user_id, "name": name, **limits}))


def chat(gateway: Gateway, bearer: str) -> httpx.Response:
    return httpx.post(gateway.v1 + "/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {bearer}"},
                      timeout=30)


def served_or_refused(response: httpx.Response) -> bool:
    """Served (True) or refused for want of money (False); anything else fails."""
    assert response.status_code in (200, 429), response.text
    return response.status_code == 200


def spent(gateway: Gateway, subject: str) -> dict[str, int]:
    """What each committed period of ``subject`` spent: {"daily@2028-12-31": micros, ...}."""
    rows = gateway.query("SELECT period, starts_at, used_micros FROM budget_periods WHERE subject = :s", s=subject)
    return {f"{row.period}@{datetime.fromtimestamp(row.starts_at, timezone.utc).date()}": row.used_micros
            for row in rows}


def refused_with(response: httpx.Response, *parts: str) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota"), error
    for part in parts:
        assert part in error["message"], error["message"]


def test_budgets_refuse_at_their_limit_and_reset_at_the_boundary(cluster: Nodes) -> None:
    nodes = cluster.gateways
    gateway = nodes[0]
    left = cluster.boundary_at - time.time()
    assert left > MARGIN_S, f"the gateways took {LEAD_S - left:.0f} s to start: too little time left before the boundary"
    owner = user(gateway, "daily-owner")
    daily = key(gateway, owner["id"], "daily", limit_micros=3 * CALL, budget_period="daily")
    capped = user(gateway, "capped", budget_micros=2 * CALL, budget_period="weekly")
    capped_key = key(gateway, capped["id"], "capped-key")
    # The gateways' clock is still in the last day, week and month before the boundary.
    assert daily["period_budget"] == {"period": "daily", "limit_micros": 3 * CALL, "spent_micros": 0,
                                      "starts_at": "2028-12-31T00:00:00Z", "resets_at": "2029-01-01T00:00:00Z"}
    assert capped["period_budget"]["resets_at"] == "2029-01-01T00:00:00Z", capped

    assert [chat(gateway, capped_key["key"]).status_code for _ in range(2)] == [200, 200]
    # The user still has $9.98: the cap refuses, not the balance.
    refused_with(chat(gateway, capped_key["key"]), "your account's weekly budget", "resets at 2029-01-01T00:00:00Z")
    assert [chat(gateway, daily["key"]).status_code for _ in range(2)] == [200, 200]

    # The key's last call of the day is admitted seconds before the boundary and answered after it: its
    # hold takes the rest of the day's budget, and its charge counts in that day, not in the next.
    wait_until(lambda: time.time() > cluster.boundary_at - 8, timeout=cluster.boundary_at - time.time(),
               what="the last seconds before the boundary")
    upstream = cluster.upstream.knobs
    upstream["hold_reply"] = release = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        last = pool.submit(chat, gateway, daily["key"])
        assert upstream["reply_held"].wait(20), "the last call of the day reached the upstream"
        refused_with(chat(gateway, daily["key"]), "this key's daily budget", "resets at 2029-01-01T00:00:00Z")
        assert time.time() < cluster.boundary_at, "the key must be refused before the boundary"
        wait_until(lambda: time.time() > cluster.boundary_at + 0.5, timeout=15, what="the boundary")
        release.set()
        del upstream["hold_reply"]
        assert last.result().status_code == 200
    wait_until(lambda: spent(gateway, f"t:{daily['id']}") == {"daily@2028-12-31": 3 * CALL},
               what="the last call's charge committed in the day it was admitted in")

    # Served again after the boundary, on both gateways.
    assert served_or_refused(chat(gateway, daily["key"]))
    # The other gateway too, once the first gives back what it leased of the new day and does not need.
    for bearer in (daily["key"], capped_key["key"]):
        wait_until(lambda: served_or_refused(chat(nodes[1], bearer)), timeout=15, what="a call on the other gateway")
    view = admin(gateway, "GET", f"/api/tokens/{daily['id']}").json()
    assert view["period_budget"]["resets_at"] == "2029-01-02T00:00:00Z", view
    assert view["used_micros"] >= 3 * CALL  # the total keeps counting across periods
    # Each period's spend is its own row: the old one kept what was spent in it, the new one starts afresh.
    wait_until(lambda: spent(gateway, f"t:{daily['id']}") == {"daily@2028-12-31": 3 * CALL,
                                                               "daily@2029-01-01": 2 * CALL},
               what="the key's spend per day")
    wait_until(lambda: spent(gateway, f"u:{capped['id']}") == {"weekly@2028-12-25": 2 * CALL,
                                                                "weekly@2029-01-01": CALL},
               what="the user's spend per week")


def test_a_user_sees_their_own_period_and_an_admin_can_raise_the_cap(nodes: list[Gateway]) -> None:
    gateway = nodes[0]
    capped = user(gateway, "weekly-me", budget_micros=2 * CALL, budget_period="weekly")
    bearer = key(gateway, capped["id"], "weekly-me-key")["key"]
    with httpx.Client(base_url=gateway.url, timeout=20) as console:
        assert console.post("/api/auth/login", json={"name": "weekly-me", "password": PASSWORD}).status_code == 200

        def mine() -> dict[str, Any]:
            me = console.get("/api/me")
            assert me.status_code == 200, me.text
            budget: dict[str, Any] = me.json()["period_budget"]
            return budget

        assert mine() == {"period": "weekly", "limit_micros": 2 * CALL, "spent_micros": 0,
                          "starts_at": "2029-01-01T00:00:00Z", "resets_at": "2029-01-08T00:00:00Z"}
        assert [chat(gateway, bearer).status_code for _ in range(2)] == [200, 200]
        refused_with(chat(gateway, bearer), "your account's weekly budget", "resets at 2029-01-08T00:00:00Z")
        wait_until(lambda: mine()["spent_micros"] == 2 * CALL, what="the week's spend on /api/me")

    raised = admin(gateway, "PATCH", f"/api/users/{capped['id']}", {"budget_micros": 3 * CALL})
    assert raised.status_code == 200 and raised.json()["period_budget"]["limit_micros"] == 3 * CALL, raised.text
    assert chat(gateway, bearer).status_code == 200
    refused_with(chat(gateway, bearer), "weekly budget")
    lifted = admin(gateway, "PATCH", f"/api/users/{capped['id']}", {"budget_micros": None, "budget_period": None})
    assert lifted.status_code == 200 and lifted.json()["period_budget"] is None, lifted.text
    assert chat(gateway, bearer).status_code == 200  # only the balance limits it now


def test_an_owner_cannot_loosen_an_administrators_budget(nodes: list[Gateway]) -> None:
    gateway = nodes[0]
    owner = user(gateway, "owner-of-monthly")
    token = key(gateway, owner["id"], "monthly", limit_micros=2 * CALL, budget_period="monthly")
    with httpx.Client(base_url=gateway.url, timeout=20, headers={"X-Requested-With": "test"}) as console:
        assert console.post("/api/auth/login", json={"name": "owner-of-monthly", "password": PASSWORD}).status_code == 200
        # A bigger limit that resets every day: the administrator's monthly one stays in force.
        mine = console.patch(f"/api/me/tokens/{token['id']}", json={"limit_micros": usd_to_micros(1),
                                                                     "budget_period": "daily"})
        assert mine.status_code == 200, mine.text
        shown = mine.json()
        assert (shown["budget_period"], shown["admin_limits"]["budget_period"]) == ("daily", "monthly"), shown
        assert shown["period_budget"] == {"period": "monthly", "limit_micros": 2 * CALL, "spent_micros": 0,
                                          "starts_at": "2029-01-01T00:00:00Z", "resets_at": "2029-02-01T00:00:00Z"}
    assert [chat(gateway, token["key"]).status_code for _ in range(2)] == [200, 200]
    refused_with(chat(gateway, token["key"]), "this key's monthly budget", "resets at 2029-02-01T00:00:00Z")


@pytest.mark.parametrize("path, body", [
    ("/api/users", {"name": "bad-period", "budget_micros": 1, "budget_period": "hourly"}),
    ("/api/users", {"name": "no-period", "budget_micros": 1}),
    ("/api/users", {"name": "huge-cap", "budget_micros": 10**15 + 1, "budget_period": "daily"}),
    ("/api/users", {"name": "negative-cap", "budget_micros": -1, "budget_period": "daily"}),
    ("/api/tokens", {"user_id": 1, "name": "bad-key-period", "budget_period": "yearly"}),
    ("/api/tokens", {"user_id": 1, "name": "numeric-period", "budget_period": 1}),
])
def test_budget_fields_out_of_bounds_are_refused(nodes: list[Gateway], path: str, body: dict[str, Any]) -> None:
    response = admin(nodes[0], "POST", path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_field" and "budget_" in error["message"], error


def test_two_gateways_sharing_a_daily_key_budget_serve_at_most_its_limit(nodes: list[Gateway]) -> None:
    """A burst of 60 over both gateways on a key with $0.10 a day at $0.01 a call: at most 10 served (with
    per-request prices the overdraft bound is 0), and the rest of the budget stays spendable."""
    owner = user(nodes[0], "shared-owner")
    token = key(nodes[0], owner["id"], "shared", limit_micros=10 * CALL, budget_period="daily")
    for node in nodes:  # the other gateway learns of the new key from the database (at once on PostgreSQL)
        wait_until(lambda: httpx.get(node.v1 + "/models", headers={"Authorization": f"Bearer {token['key']}"},
                                     timeout=10).status_code == 200, what="the key known on every gateway")

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            answers = await asyncio.gather(*(
                client.post(nodes[i % 2].v1 + "/chat/completions", json=CHAT,
                            headers={"Authorization": f"Bearer {token['key']}"}) for i in range(60)))
        return [answer.status_code for answer in answers]

    statuses = asyncio.run(burst())
    assert set(statuses) <= {200, 429}, statuses
    counts = {"served": statuses.count(200)}
    assert counts["served"] <= 10, statuses

    def spent_in_full() -> bool:
        for node in nodes:
            answer = chat(node, token["key"])
            assert answer.status_code in (200, 429), answer.text
            counts["served"] += answer.status_code == 200
        return counts["served"] >= 10

    wait_until(spent_in_full, timeout=20, what="the whole daily budget spent")
    assert counts["served"] == 10
    for node in nodes:
        refused_with(chat(node, token["key"]), "this key's daily budget", "resets at 2029-01-02T00:00:00Z")
    wait_until(lambda: spent(nodes[0], f"t:{token['id']}") == {"daily@2029-01-01": 10 * CALL},
               what="the day's spend committed")


def test_task_submits_count_in_the_period_of_their_submit(nodes: list[Gateway]) -> None:
    """A task's charge commits with the task, at submit: it counts in that period at once."""
    owner = user(nodes[0], "flux-owner")
    token = key(nodes[0], owner["id"], "flux-daily", limit_micros=2 * IMAGE, budget_period="daily")

    def submit() -> httpx.Response:
        return httpx.post(nodes[0].url + "/flux/v1/flux-pro-1.1", json={"prompt": "a lighthouse", "width": 1024,
                                                                         "height": 768},
                          headers={"Authorization": f"Bearer {token['key']}"}, timeout=30)

    for _ in range(2):
        answer = submit()
        assert answer.status_code == 200, answer.text
    assert spent(nodes[0], f"t:{token['id']}") == {"daily@2029-01-01": 2 * IMAGE}
    refused = submit()
    assert refused.status_code == 429 and "this key's daily budget" in refused.text, refused.text
    assert "resets at 2029-01-02T00:00:00Z" in refused.text, refused.text
