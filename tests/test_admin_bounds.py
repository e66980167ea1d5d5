"""Admin and user input bounded at the edge, and limits an administrator imposes on a key that its owner cannot lift."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import text

from polyrelay.store.db import alembic_config, create_db_engine, migrate
from tests.conftest import Gateway, wait_until
from tests.fakes import openai_upstream
from tests.fakes.server import FakeServer

UPSTREAM_KEY = "sk-upstream-admin-bounds-0123456789"
ADMIN_KEY = "admin-key-bounds-0123456789"
XHR = {"X-Requested-With": "fetch"}
PRICE = 10_000  # micro-USD per call of either model


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    server = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    yield server
    server.stop()


@dataclass
class Site:
    gateway: Gateway
    admin: httpx.Client

    def chat(self, key: str, model: str = "per-call") -> httpx.Response:
        return httpx.post(self.gateway.v1 + "/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json={"model": model, "messages": [{"role": "user", "content": "Hi"}]}, timeout=20)


@pytest.fixture(scope="module")
def site(gateway_factory: Callable[..., Gateway], upstream: FakeServer) -> Site:
    gateway = gateway_factory({
        "admin_key": ADMIN_KEY,
        "channels": [{"name": "main", "base_url": upstream.url, "keys": [UPSTREAM_KEY],
                      "models": ["per-call", "other"]}],
        "prices": {"per-call": {"per_request": PRICE / 1e6}, "other": {"per_request": PRICE / 1e6}},
    })
    return Site(gateway, httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                      timeout=30))


BIG = 2**63
# (method, path, JSON body or query, the field the 400 names); each of these answered 500 on PostgreSQL.
OUT_OF_RANGE = [
    ("GET", "/api/users/2147483648", None, "id"),
    ("DELETE", "/api/tokens/36828958136131739648", None, "id"),
    ("GET", "/api/users", {"offset": "100000000000000000000"}, "offset"),
    ("GET", "/api/logs", {"before_id": "²"}, "before_id"),
    ("GET", "/api/logs", {"user_id": str(BIG)}, "user_id"),
    ("GET", "/api/logs", {"model": "gpt\x00"}, "model"),
    ("POST", "/api/users/{user}/topup", {"amount_micros": BIG}, "amount_micros"),
    ("POST", "/api/users/{user}/adjust", {"amount_micros": -BIG}, "amount_micros"),
    ("POST", "/api/users", {"name": "nul\x00name"}, "name"),
    ("POST", "/api/users", {"name": "n" * 129}, "name"),
    ("POST", "/api/users", {"name": "ok-name", "role": "root"}, "role"),
    ("PATCH", "/api/users/{user}", {"rpm_limit": 2**31}, "rpm_limit"),
    ("PUT", "/api/prices/huge", {"input_per_mtok_micros": BIG}, "input_per_mtok_micros"),
    ("PUT", "/api/prices/" + "m" * 257, {"per_request_micros": 1}, "model"),
    ("POST", "/api/tokens", {"name": "k", "user_id": "{user}", "limit_micros": BIG}, "limit_micros"),
    ("POST", "/api/tokens", {"name": "k", "user_id": "{user}", "expires_at": "9999-12-31T23:59:59-01:00"},
     "expires_at"),
    ("POST", "/api/tokens", {"name": "k", "user_id": "{user}", "models": ["gpt\x00"]}, "models[0]"),
    ("POST", "/api/channels", {"name": "c", "base_url": "http://127.0.0.1:9", "keys": ["k"], "weight": BIG},
     "weight"),
    ("POST", "/api/channels", {"name": "c", "base_url": "http://127.0.0.1:9", "keys": ["k"], "priority": -BIG},
     "priority"),
    ("POST", "/api/groups", {"name": "g", "ratio": 1e308}, "ratio"),
    ("POST", "/api/groups", {"name": "g", "ratio_ppm": BIG}, "ratio_ppm"),
    ("POST", "/api/redemptions", {"amount_micros": BIG}, "amount_micros"),
    ("POST", "/api/redemptions", {"amount_micros": 1, "count": 1001}, "count"),
    ("GET", "/api/stats", {"days": "91"}, "days"),
]


@pytest.fixture(scope="module")
def user_id(site: Site) -> int:
    response = site.admin.post("/api/users", json={"name": "bounded", "balance_micros": 1_000})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


@pytest.mark.parametrize(("method", "path", "payload", "field"), OUT_OF_RANGE,
                         ids=[f"{m} {p[:40]} {f}" for m, p, _, f in OUT_OF_RANGE])
def test_out_of_range_input_is_a_400_naming_the_field(site: Site, user_id: int, method: str, path: str,
                                                      payload: dict[str, Any] | None, field: str) -> None:
    path = path.replace("{user}", str(user_id))
    body = {k: user_id if v == "{user}" else v for k, v in (payload or {}).items()}
    response = site.admin.request(method, path, params=body if method == "GET" else None,
                                  json=body if method != "GET" and payload is not None else None)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == 400 and error["code"].startswith("invalid")
    assert f"'{field}'" in error["message"]


def test_values_at_the_bounds_are_stored_and_nothing_out_of_range_was(site: Site, user_id: int) -> None:
    largest = 2**31 - 1
    made = site.admin.post("/api/tokens", json={"name": "edge", "user_id": user_id, "rpm_limit": largest,
                                                "tpm_limit": largest, "limit_micros": 10**15})
    assert made.status_code == 201, made.text
    assert (made.json()["rpm_limit"], made.json()["limit_micros"]) == (largest, 10**15)
    price = site.admin.put("/api/prices/edge-model", json={"per_request_micros": 10**15})
    assert price.status_code == 200 and price.json()["per_request_micros"] == 10**15
    assert site.admin.get("/api/users", params={"offset": largest}).json() == {"data": []}
    assert [t["name"] for t in site.admin.get("/api/tokens", params={"user_id": user_id}).json()["data"]] == ["edge"]
    assert site.admin.get(f"/api/users/{user_id}").json()["balance_micros"] == 1_000  # no top-up went through
    assert site.admin.get("/api/prices/huge").status_code == 404


def test_an_owner_cannot_lift_what_an_administrator_imposed(site: Site) -> None:
    made_user = site.admin.post("/api/users", json={"name": "owner", "password": "owner-password",
                                                    "balance_micros": 1_000_000})
    assert made_user.status_code == 201, made_user.text
    as_owner = httpx.Client(base_url=site.gateway.url, timeout=20)
    assert as_owner.post("/api/auth/login", json={"name": "owner", "password": "owner-password"}).status_code == 200
    made = as_owner.post("/api/me/tokens", json={"name": "laptop"}, headers=XHR).json()
    key, token = made["key"], f"/api/tokens/{made['id']}"
    mine = f"/api/me{token[4:]}"
    lift = {"enabled": True, "allowed_ips": None, "models": None, "rpm_limit": None, "limit_micros": None}
    assert site.chat(key).status_code == 200

    # A disable.
    assert site.admin.patch(token, json={"enabled": False}).json()["active"] is False
    assert site.chat(key).status_code == 401
    undone = as_owner.patch(mine, json=lift, headers=XHR)
    assert undone.status_code == 200
    assert undone.json()["enabled"] is True and undone.json()["admin_limits"]["enabled"] is False
    assert undone.json()["active"] is False
    assert site.chat(key).status_code == 401

    # An IP fence, a model list and a quota; the relay applies the stricter of the owner's and the admin's.
    assert site.admin.patch(token, json={"enabled": True, "allowed_ips": ["10.0.0.0/8"]}).status_code == 200
    assert as_owner.patch(mine, json=lift, headers=XHR).status_code == 200
    assert site.chat(key).json()["error"]["code"] == "ip_not_allowed"
    site.admin.patch(token, json={"allowed_ips": ["127.0.0.0/8"], "models": ["per-call"]})
    as_owner.patch(mine, json={**lift, "allowed_ips": ["127.0.0.1/32", "10.0.0.1"]}, headers=XHR)
    assert site.chat(key).status_code == 200  # both fences admit 127.0.0.1
    assert site.chat(key, "other").json()["error"]["code"] == "model_not_allowed"
    as_owner.patch(mine, json={**lift, "models": ["other"]}, headers=XHR)
    assert site.chat(key).json()["error"]["code"] == "model_not_allowed"  # the owner narrowed it to nothing
    as_owner.patch(mine, json=lift, headers=XHR)
    # Two calls were served so far; the spend reaches the database with the writer's next flush.
    spent = wait_until(lambda: (used := int(as_owner.get(mine).json()["used_micros"])) == 2 * PRICE and used,
                       what="the served calls' spend in the database")
    site.admin.patch(token, json={"limit_micros": spent + PRICE})
    assert site.chat(key).status_code == 200
    as_owner.patch(mine, json={**lift, "limit_micros": 10 * PRICE}, headers=XHR)
    assert site.chat(key).status_code == 429  # the admin's quota is spent, whatever the owner's says

    # A rate limit: with one request a minute, three in a row span at most two minutes.
    site.admin.patch(token, json={"limit_micros": None, "rpm_limit": 1})
    as_owner.patch(mine, json=lift, headers=XHR)
    assert 429 in [site.chat(key).status_code for _ in range(3)]

    # What the admin lifts is lifted; the owner sees both sets and the admin sees the owner's.
    lifted = site.admin.patch(token, json={"rpm_limit": None, "models": None, "allowed_ips": None}).json()
    assert lifted["owner_settings"]["enabled"] is True and lifted["active"] is True
    shown = as_owner.get(mine).json()
    assert shown["admin_limits"] == {**lift, "enabled": True, "expires_at": None, "tpm_limit": None,
                                     "budget_period": None}
    assert site.chat(key, "other").status_code in (200, 429)  # 429 only if the minute has not turned yet


def test_tokens_made_before_admin_limits_keep_working(database_factory: Callable[[], str]) -> None:
    engine = create_db_engine(database_factory())
    command.upgrade(alembic_config(engine), "0007")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO tokens (name, key_hash, key_hint, used_micros, enabled, created_at) "
                                "VALUES ('old', 'h-old', 'x', 0, true, CURRENT_TIMESTAMP)"))
    migrate(engine)
    with engine.connect() as connection:
        row = connection.execute(text("SELECT admin_enabled, admin_models, admin_rpm_limit FROM tokens")).one()
    assert tuple(row) == (True, None, None)
    engine.dispose()
