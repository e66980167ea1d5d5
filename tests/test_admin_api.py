"""The admin REST API, console sessions, user isolation, redemption codes, rate limits and the CLI."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, start_gateway, wait_until
from tests.fakes import openai_upstream
from tests.fakes.server import FakeServer

UPSTREAM_KEY = "sk-upstream-admin-api-0123456789"
ADMIN_KEY = "admin-key-api-0123456789"
HI = [{"role": "user", "content": "Hi"}]
XHR = {"X-Requested-With": "fetch"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    server = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    yield server
    server.stop()


def config(upstream: FakeServer, **extra: Any) -> dict[str, Any]:
    return {
        "admin_key": ADMIN_KEY,
        "channels": [{"name": "main", "base_url": upstream.url, "keys": [UPSTREAM_KEY], "models": ["per-call"]}],
        "prices": {"per-call": {"per_request": 0.01}},
        **extra,
    }


@dataclass
class Setup:
    gateway: Gateway
    admin: httpx.Client

    def login(self, name: str, password: str) -> httpx.Client:
        client = httpx.Client(base_url=self.gateway.url, timeout=20)
        response = client.post("/api/auth/login", json={"name": name, "password": password})
        assert response.status_code == 200, response.text
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        return client

    def user(self, name: str, balance: int = 0) -> dict[str, Any]:
        response = self.admin.post("/api/users", json={"name": name, "password": f"{name}-password",
                                                       "balance_micros": balance})
        assert response.status_code == 201, response.text
        return response.json()

    def chat(self, key: str, model: str = "per-call") -> httpx.Response:
        return httpx.post(self.gateway.v1 + "/chat/completions", json={"model": model, "messages": HI},
                          headers={"Authorization": f"Bearer {key}"}, timeout=20)


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway], upstream: FakeServer) -> Setup:
    gateway = gateway_factory(config(upstream))
    admin = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    return Setup(gateway, admin)


def test_auth_is_required_and_errors_are_json(setup: Setup) -> None:
    anonymous = httpx.get(setup.gateway.url + "/api/users")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthenticated"
    wrong = httpx.get(setup.gateway.url + "/api/users", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_credentials"
    missing = setup.admin.get("/api/users/999999")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    bad = setup.admin.post("/api/users", json={"name": "x", "colour": "red"})
    assert bad.status_code == 400 and "colour" in bad.json()["error"]["message"]
    schema = httpx.get(setup.gateway.url + "/openapi.json").json()
    assert schema["openapi"].startswith("3.") and "/api/users/{id}/topup" in schema["paths"]
    page = httpx.get(setup.gateway.url + "/docs")
    assert page.status_code == 200 and "/api/me/redeem" in page.text and "http" not in page.text.split("<body>")[0].replace("http-equiv", "")


def test_users_tokens_money_and_logs(setup: Setup) -> None:
    carol = setup.user("carol", balance=25_000)
    assert carol["balance_micros"] == 25_000
    created = setup.admin.post("/api/tokens", json={"name": "carol-key", "user_id": carol["id"]})
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("sk-pr-") and created.json()["key_hint"] != key
    assert "key" not in setup.admin.get(f"/api/tokens/{created.json()['id']}").json()
    assert setup.chat(key).status_code == 200
    assert setup.chat(key).status_code == 200
    assert setup.chat(key).status_code == 429  # 5_000 left, a call costs 10_000
    top = setup.admin.post(f"/api/users/{carol['id']}/topup", json={"amount_micros": 100_000, "request_id": "pay-1"})
    assert top.status_code == 200 and top.json()["applied"] is True
    again = setup.admin.post(f"/api/users/{carol['id']}/topup", json={"amount_micros": 100_000, "request_id": "pay-1"})
    assert again.json()["applied"] is False  # idempotent by request id
    assert setup.chat(key).status_code == 200  # the top-up is visible to the relay at once
    adjust = setup.admin.post(f"/api/users/{carol['id']}/adjust", json={"amount_micros": -5_000, "note": "fix"})
    assert adjust.status_code == 200
    expected = 25_000 + 100_000 - 3 * 10_000 - 5_000
    wait_until(lambda: setup.admin.get(f"/api/users/{carol['id']}").json()["balance_micros"] == expected,
               what="the balance")
    ledger = setup.admin.get(f"/api/users/{carol['id']}/ledger").json()["data"]
    assert sum(e["amount_micros"] for e in ledger) == expected
    assert sorted({e["kind"] for e in ledger}) == ["adjustment", "charge", "topup"]

    logs = setup.admin.get("/api/logs", params={"user_id": carol["id"], "status": "ok"}).json()
    assert logs["total"] == 3 and all(r["user_id"] == carol["id"] for r in logs["data"])
    refused = setup.admin.get("/api/logs", params={"user_id": carol["id"], "status": "429"}).json()
    assert refused["total"] == 1
    page = setup.admin.get("/api/logs", params={"user_id": carol["id"], "limit": 2}).json()
    assert len(page["data"]) == 2 and page["next_before_id"] is not None
    rest = setup.admin.get("/api/logs", params={"user_id": carol["id"], "before_id": page["next_before_id"]}).json()
    assert len(rest["data"]) == 2
    future = setup.admin.get("/api/logs", params={"user_id": carol["id"], "start": "2999-01-01T00:00:00Z"}).json()
    assert future["total"] == 0
    aggregate = setup.admin.get("/api/logs/aggregate", params={"user_id": carol["id"]}).json()["data"]
    assert len(aggregate) == 1
    assert (aggregate[0]["model"], aggregate[0]["requests"], aggregate[0]["errors"], aggregate[0]["cost_micros"]) == (
        "per-call", 4, 1, 30_000)
    exported = setup.admin.get("/api/logs/export.csv", params={"user_id": carol["id"]})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == 4 and {r["model"] for r in rows} == {"per-call"}

    # Disabling the user stops its keys.
    assert setup.admin.patch(f"/api/users/{carol['id']}", json={"enabled": False}).status_code == 200
    response = setup.chat(key)
    assert response.status_code == 401 and response.json()["error"]["code"] == "account_disabled"


def test_a_users_email_is_lower_cased_unique_and_unverified_when_it_changes(setup: Setup) -> None:
    ursula = setup.admin.post("/api/users", json={"name": "ursula", "email": " Ursula@Example.COM "}).json()
    assert (ursula["email"], ursula["email_verified"]) == ("ursula@example.com", False)
    verified = setup.admin.patch(f"/api/users/{ursula['id']}", json={"email_verified": True}).json()
    assert verified["email_verified"] is True
    moved = setup.admin.patch(f"/api/users/{ursula['id']}", json={"email": "ursula@elsewhere.org"}).json()
    assert (moved["email"], moved["email_verified"]) == ("ursula@elsewhere.org", False)
    taken = setup.admin.post("/api/users", json={"name": "ursula2", "email": "URSULA@elsewhere.org"})
    assert taken.status_code == 409 and "ursula@elsewhere.org" in taken.json()["error"]["message"].lower()
    for bad in ("ursula", "a@b", "x" * 250 + "@example.com", "a b@example.com", 7):
        refused = setup.admin.patch(f"/api/users/{ursula['id']}", json={"email": bad})
        assert refused.status_code == 400 and "'email'" in refused.json()["error"]["message"], bad
    cleared = setup.admin.patch(f"/api/users/{ursula['id']}", json={"email": None}).json()
    assert cleared["email"] is None


def test_channels_prices_and_groups(setup: Setup, upstream: FakeServer) -> None:
    channels = setup.admin.get("/api/channels").json()["data"]
    assert channels and all(UPSTREAM_KEY not in str(c) for c in channels)
    created = setup.admin.post("/api/channels", json={"name": "second", "base_url": upstream.url,
                                                      "keys": [UPSTREAM_KEY], "models": ["other-model"]})
    assert created.status_code == 201 and UPSTREAM_KEY not in created.text
    channel_id = created.json()["id"]
    tested = setup.admin.post(f"/api/channels/{channel_id}/test", json={})
    assert tested.status_code == 200 and tested.json()["ok"] is True, tested.text
    row = setup.admin.get(f"/api/channels/{channel_id}").json()
    assert row["test_result"] == "ok" and row["test_latency_ms"] > 0 and row["tested_at"]
    broken = setup.admin.post("/api/channels", json={"name": "bad-key", "base_url": upstream.url,
                                                     "keys": ["sk-wrong-0123456789abc"], "models": ["x"]}).json()
    failed = setup.admin.post(f"/api/channels/{broken['id']}/test", json={}).json()
    assert failed["ok"] is False and failed["status"] == 401 and "sk-wrong-0123456789abc" not in failed["result"]
    assert setup.admin.post(f"/api/channels/{broken['id']}/disable").json()["enabled"] is False
    assert setup.admin.post(f"/api/channels/{broken['id']}/enable").json()["enabled"] is True
    assert setup.admin.delete(f"/api/channels/{broken['id']}").status_code == 204
    # Task-only channel types can be created too; their test only checks the host answers (no job, no charge).
    unknown = setup.admin.post("/api/channels", json={"name": "typo", "type": "midjurney", "base_url": upstream.url,
                                                      "keys": ["k"], "models": ["mj_*"]})
    assert unknown.status_code == 400 and "midjourney" in unknown.json()["error"]["message"]
    mj = setup.admin.post("/api/channels", json={"name": "mj", "type": "midjourney", "base_url": upstream.url,
                                                 "keys": ["mj-secret-0123456789"], "models": ["mj_*"]})
    assert mj.status_code == 201, mj.text
    probed = setup.admin.post(f"/api/channels/{mj.json()['id']}/test", json={}).json()
    assert probed["ok"] is True and probed["status"] < 500 and probed["latency_ms"] > 0
    setup.admin.delete(f"/api/channels/{mj.json()['id']}")
    dead = setup.admin.post("/api/channels", json={"name": "mj-dead", "type": "suno", "keys": ["k"], "models": ["x"],
                                                   "base_url": "http://127.0.0.1:9", "connect_timeout_s": 2})
    probed = setup.admin.post(f"/api/channels/{dead.json()['id']}/test", json={}).json()
    assert probed["ok"] is False and probed["status"] is None and probed["result"]
    setup.admin.delete(f"/api/channels/{dead.json()['id']}")

    # A price set over the API applies at once, and a group's multiplier scales it.
    dave = setup.user("dave", balance=1_000_000)
    key = setup.admin.post("/api/tokens", json={"name": "dave-key", "user_id": dave["id"]}).json()["key"]
    assert setup.chat(key, "other-model").status_code == 403  # no price: a limited user is refused
    price = setup.admin.put("/api/prices/other-model", json={"per_request_micros": 1_000})
    assert price.status_code == 200 and price.json()["per_request_micros"] == 1_000
    assert setup.admin.post("/api/groups", json={"name": "vip", "ratio": 0.5}).status_code == 201
    assert setup.admin.patch(f"/api/users/{dave['id']}", json={"group": "vip"}).status_code == 200
    response = setup.chat(key, "other-model")
    assert response.status_code == 200
    row = setup.gateway.usage_row(response.headers["x-request-id"])
    assert row.cost_micros == 500
    # A group limited to other channels cannot reach this model.
    assert setup.admin.patch("/api/groups/vip", json={"channels": ["main"]}).status_code == 200
    assert setup.chat(key, "other-model").status_code == 404
    assert setup.chat(key, "per-call").status_code == 200


def test_a_user_never_sees_or_touches_another_users_data(setup: Setup) -> None:
    alice, bob = setup.user("alice", balance=100_000), setup.user("bob", balance=100_000)
    as_alice, as_bob = setup.login("alice", "alice-password"), setup.login("bob", "bob-password")

    # CSRF: a cookie-authenticated write without the custom header is refused.
    assert as_alice.post("/api/me/tokens", json={"name": "alice-1"}).status_code == 403
    alice_token = as_alice.post("/api/me/tokens", json={"name": "alice-1"}, headers=XHR)
    assert alice_token.status_code == 201
    alice_key, alice_token_id = alice_token.json()["key"], alice_token.json()["id"]
    bob_key = as_bob.post("/api/me/tokens", json={"name": "bob-1"}, headers=XHR).json()["key"]
    assert setup.chat(alice_key).status_code == 200
    assert setup.chat(bob_key).status_code == 200

    me = as_bob.get("/api/me").json()
    assert me["id"] == bob["id"] and me["name"] == "bob"
    assert [t["name"] for t in as_bob.get("/api/me/tokens").json()["data"]] == ["bob-1"]
    # Bob can't read, change or delete Alice's token: it looks exactly like a missing one.
    assert as_bob.get(f"/api/me/tokens/{alice_token_id}").status_code == 404
    assert as_bob.patch(f"/api/me/tokens/{alice_token_id}", json={"enabled": False}, headers=XHR).status_code == 404
    assert as_bob.delete(f"/api/me/tokens/{alice_token_id}", headers=XHR).status_code == 404
    assert setup.chat(alice_key).status_code == 200  # still works
    # Key names are per user: Bob may name one like Alice's, but not reuse his own.
    assert as_bob.post("/api/me/tokens", json={"name": "alice-1"}, headers=XHR).status_code == 201
    again = as_bob.post("/api/me/tokens", json={"name": "bob-1"}, headers=XHR)
    assert again.status_code == 409 and "bob-1" in again.json()["error"]["message"]
    # Bob's logs, aggregates, CSV and ledger hold only his rows, whatever he asks for.
    logs = wait_until(  # the batching writer commits Bob's row within its flush interval
        lambda: as_bob.get("/api/me/logs", params={"user_id": alice["id"]}).json()["data"], what="Bob's usage rows"
    )
    assert {r["user_id"] for r in logs} == {bob["id"]}
    assert "channel_name" not in logs[0]
    aggregate = as_bob.get("/api/me/logs/aggregate", params={"user_id": alice["id"]}).json()["data"]
    assert {r["user_id"] for r in aggregate} == {bob["id"]}
    exported = as_bob.get("/api/me/logs/export.csv").text
    assert "alice" not in exported
    assert {e["user_id"] for e in as_bob.get("/api/me/ledger").json()["data"]} == {bob["id"]}
    # No admin endpoint is open to him.
    for method, path in [("GET", "/api/users"), ("GET", f"/api/users/{alice['id']}"), ("GET", "/api/tokens"),
                         ("GET", "/api/logs"), ("POST", f"/api/users/{bob['id']}/topup"), ("GET", "/api/channels"),
                         ("DELETE", f"/api/tokens/{alice_token_id}"), ("POST", "/api/redemptions")]:
        response = as_bob.request(method, path, headers=XHR, json={"amount_micros": 1} if method == "POST" else None)
        assert response.status_code == 403, (method, path)
        assert response.json()["error"]["code"] == "forbidden"
    # Logging out ends the session.
    assert as_bob.post("/api/auth/logout", headers=XHR).status_code == 204
    assert as_bob.get("/api/me").status_code == 401
    # A wrong password gets nothing.
    assert httpx.post(setup.gateway.url + "/api/auth/login", json={"name": "alice", "password": "nope"}).status_code == 401


def test_sign_in_is_throttled_after_repeated_wrong_passwords(setup: Setup) -> None:
    setup.user("mallory-target")
    url = setup.gateway.url + "/api/auth/login"
    # A right password clears the count: four misses, a success, four more misses are all answered.
    for _ in range(4):
        assert httpx.post(url, json={"name": "mallory-target", "password": "guess"}).status_code == 401
    setup.login("mallory-target", "mallory-target-password")
    for _ in range(5):
        assert httpx.post(url, json={"name": "mallory-target", "password": "guess"}).status_code == 401
    # The sixth try in the window is refused before the password is even checked, right or not.
    for password in ("guess", "mallory-target-password"):
        refused = httpx.post(url, json={"name": "Mallory-Target", "password": password})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_attempts"
        assert 800 < int(refused.headers["retry-after"]) <= 900
    # Other names from the same address are not affected.
    setup.user("bystander")
    setup.login("bystander", "bystander-password")


def test_redemption_codes_are_redeemed_once_under_concurrency(setup: Setup) -> None:
    erin = setup.user("erin")
    frank = setup.user("frank")
    codes = setup.admin.post("/api/redemptions", json={"amount_micros": 70_000, "count": 1}).json()["data"]
    code = codes[0]["code"]
    sessions = [setup.login("erin", "erin-password") for _ in range(10)] + [
        setup.login("frank", "frank-password") for _ in range(10)]

    def redeem(client: httpx.Client) -> int:
        return client.post("/api/me/redeem", json={"code": code}, headers=XHR).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(redeem, sessions))
    assert sorted(statuses) == [200] + [400] * 19
    balances = [setup.admin.get(f"/api/users/{u['id']}").json()["balance_micros"] for u in (erin, frank)]
    assert sorted(balances) == [0, 70_000]
    listed = setup.admin.get("/api/redemptions").json()["data"]
    assert [c["redeemed_by"] for c in listed if c["id"] == codes[0]["id"]][0] in (erin["id"], frank["id"])
    assert "code" not in listed[0]
    # The credit reached the relay: the redeemer can spend it.
    winner = erin if balances[0] else frank
    client = setup.login(winner["name"], f"{winner['name']}-password")
    key = client.post("/api/me/tokens", json={"name": f"{winner['name']}-key"}, headers=XHR).json()["key"]
    assert setup.chat(key).status_code == 200


def test_rate_limits_in_memory(setup: Setup) -> None:
    if time.time() % 60 > 45:  # fixed one-minute windows: keep every call below inside one
        time.sleep(61 - time.time() % 60)
    grace = setup.user("grace", balance=1_000_000)
    key = setup.admin.post("/api/tokens", json={"name": "grace-key", "user_id": grace["id"], "rpm_limit": 3}).json()["key"]
    statuses = [setup.chat(key).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = setup.chat(key)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # A per-user limit covers all the user's keys together; it counts from when it is set.
    setup.admin.patch(f"/api/users/{grace['id']}", json={"rpm_limit": 2})
    other = setup.admin.post("/api/tokens", json={"name": "grace-key-2", "user_id": grace["id"]}).json()["key"]
    assert [setup.chat(other).status_code for _ in range(3)] == [200, 200, 429]


def test_rate_limits_shared_through_redis(
    gateway_factory: Callable[..., Gateway], upstream: FakeServer, tmp_path: Path
) -> None:
    redis_url = os.environ.get("POLYRELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    key = "sk-redis-limited-0123456789"
    cfg = config(upstream, redis_url=redis_url,
                 users=[{"name": "henry", "balance_usd": 10}],
                 tokens=[{"name": "henry-key", "key": key, "user": "henry", "rpm_limit": 4}])
    first = gateway_factory(cfg)
    second = start_gateway({**cfg, "database_url": first.database_url}, tmp_path)
    try:
        # Keep clear of a minute boundary, where fixed windows reset.
        if time.time() % 60 > 50:
            time.sleep(61 - time.time() % 60)
        chat = lambda g: httpx.post(g.v1 + "/chat/completions", json={"model": "per-call", "messages": HI},
                                    headers={"Authorization": f"Bearer {key}"}, timeout=20)
        assert [chat(first).status_code for _ in range(4)] == [200] * 4
        time.sleep(0.5)  # a few sync rounds
        refused = chat(second)
        assert refused.status_code == 429 and "retry-after" in refused.headers
    finally:
        second.stop()


def test_cli_user_key_and_channel_test(
    gateway_factory: Callable[..., Gateway], upstream: FakeServer, tmp_path: Path
) -> None:
    gateway = gateway_factory(config(upstream))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "polyrelay", *args, "--config", str(gateway.config_path)],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)

    made = cli("user", "create", "ivan", "--balance", "0.05")
    assert made.returncode == 0, made.stderr
    created = cli("key", "create", "--user", "ivan", "--name", "ivan-cli", "--limit", "0.02", "--models", "per-call")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("sk-pr-")
    row = gateway.query("SELECT quota_micros, models FROM tokens WHERE name = 'ivan-cli'")[0]
    assert row.quota_micros == 20_000
    # The running gateway picks the new key up with its next snapshot refresh.
    wait_until(lambda: httpx.post(gateway.v1 + "/chat/completions", json={"model": "per-call", "messages": HI},
                                  headers={"Authorization": f"Bearer {key}"}, timeout=20).status_code == 200,
               what="the CLI's key to work")
    tested = cli("channel", "test", "main")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "ok" in tested.stdout
    assert gateway.query("SELECT test_result FROM channels WHERE name = 'main'")[0].test_result == "ok"
    assert cli("key", "create", "--user", "nobody").returncode != 0
