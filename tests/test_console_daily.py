"""The console's daily-work API: the public price list and base URL, a user's own prices, compression of
console and /api/ answers (never of the relay's), the playground's session calls, channel helpers and batch
actions, and the totals of filtered logs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, wait_until
from tests.fakes import openai_upstream
from tests.fakes.server import FakeServer
from tests.test_admin_api import ADMIN_KEY, HI, UPSTREAM_KEY, XHR, Setup

PUBLIC_URL = "https://ai.example.com"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    server = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway], upstream: FakeServer) -> Setup:
    gateway = gateway_factory({
        "admin_key": ADMIN_KEY,
        "console": {"public_url": PUBLIC_URL + "/"},
        "allow_private_image_hosts": True,  # the fake upstream is on loopback: let the checked fetch reach it
        "groups": {"vip": {"ratio": 0.5}, "partners": {"ratio": 1.0, "channels": ["other"]}},
        "channels": [
            {"name": "main", "base_url": upstream.url, "keys": [UPSTREAM_KEY],
             "models": ["gpt-4o-mini", "per-call", "unpriced-model", "mj_*"]},
            {"name": "other", "base_url": upstream.url, "keys": [UPSTREAM_KEY], "models": ["other-model"]},
            {"name": "off", "base_url": upstream.url, "keys": [UPSTREAM_KEY], "models": ["off-model"],
             "enabled": False},
        ],
        "prices": {"gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6, "cached_input_per_mtok": 0.075},
                   "per-call": {"per_request": 0.01}, "mj_imagine": {"per_request": 0.1},
                   "off-model": {"per_request": 1}, "other-model": {"per_image": 0.04}},
    })
    admin = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    return Setup(gateway, admin)


def _models(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["model"]: row for row in body["data"]}


# ---- prices and base URL -----------------------------------------------------------------------

def test_the_public_price_list_shows_what_a_caller_of_a_group_pays(setup: Setup) -> None:
    anonymous = httpx.get(setup.gateway.url + "/api/public/prices")
    assert anonymous.status_code == 200, anonymous.text
    body = anonymous.json()
    prices = _models(body)
    # Enabled channels only, priced models only; a priced name a channel's pattern covers is listed.
    assert sorted(prices) == ["gpt-4o-mini", "mj_imagine", "other-model", "per-call"]
    assert prices["gpt-4o-mini"]["input_per_mtok_micros"] == 150_000
    assert prices["gpt-4o-mini"]["cached_input_per_mtok_micros"] == 75_000
    assert prices["per-call"]["per_request_micros"] == 10_000 and prices["per-call"]["per_image_micros"] is None
    assert {g["name"]: g["ratio_ppm"] for g in body["groups"]} == {
        "default": 1_000_000, "vip": 500_000, "partners": 1_000_000}

    vip = _models(httpx.get(setup.gateway.url + "/api/public/prices", params={"group": "vip"}).json())
    assert vip["gpt-4o-mini"]["output_per_mtok_micros"] == 300_000  # x0.5
    partners = _models(httpx.get(setup.gateway.url + "/api/public/prices", params={"group": "partners"}).json())
    assert sorted(partners) == ["other-model"]  # the group's channels only
    missing = httpx.get(setup.gateway.url + "/api/public/prices", params={"group": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_the_public_info_names_the_base_url(setup: Setup) -> None:
    info = httpx.get(setup.gateway.url + "/api/public/info").json()
    assert info == {"base_url": PUBLIC_URL, "public_prices": True}


def test_a_user_sees_the_prices_of_their_group_and_which_models_are_unpriced(setup: Setup) -> None:
    setup.user("pat")
    assert setup.admin.patch(f"/api/users/{setup.user('vera')['id']}", json={"group": "vip"}).status_code == 200
    anonymous = httpx.get(setup.gateway.url + "/api/me/prices")
    assert anonymous.status_code == 401
    pat = _models(setup.login("pat", "pat-password").get("/api/me/prices").json())
    assert pat["unpriced-model"] == {"model": "unpriced-model", "priced": False}
    assert pat["per-call"]["priced"] and pat["per-call"]["per_request_micros"] == 10_000
    vera = setup.login("vera", "vera-password").get("/api/me/prices").json()
    assert vera["group"] == "vip" and _models(vera)["per-call"]["per_request_micros"] == 5_000


# ---- compression -------------------------------------------------------------------------------

@pytest.mark.parametrize("coding", ["br", "gzip"])
def test_console_files_and_large_api_answers_are_compressed(setup: Setup, coding: str) -> None:
    plain = httpx.get(setup.gateway.url + "/console/js/app.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    raw = httpx.get(setup.gateway.url + "/console/js/app.js", headers={"Accept-Encoding": coding})
    assert raw.headers["content-encoding"] == coding and raw.headers["vary"] == "Accept-Encoding"
    assert raw.content == plain.content  # httpx decoded it
    assert int(raw.headers["content-length"]) < len(plain.content) / 2
    assert raw.headers["etag"] != plain.headers["etag"]  # another body, another tag
    again = httpx.get(setup.gateway.url + "/console/js/app.js",
                      headers={"Accept-Encoding": coding, "If-None-Match": raw.headers["etag"]})
    assert again.status_code == 304

    schema = setup.admin.get("/openapi.json", headers={"Accept-Encoding": coding})
    assert schema.headers["content-encoding"] == coding and schema.json()["openapi"] == "3.1.0"
    prices = setup.admin.get("/api/prices", headers={"Accept-Encoding": coding})  # five prices: over 1 KiB
    assert prices.headers["content-encoding"] == coding and len(prices.json()["data"]) == 5
    small = httpx.get(setup.gateway.url + "/api/public/info", headers={"Accept-Encoding": coding})
    assert "content-encoding" not in small.headers  # under console.compress_min_bytes


def test_the_relay_answers_are_never_compressed(setup: Setup) -> None:
    user = setup.user("rex", balance=10_000_000)
    key = setup.admin.post("/api/tokens", json={"name": "rex-key", "user_id": user["id"]}).json()["key"]
    headers = {"Authorization": f"Bearer {key}", "Accept-Encoding": "br, gzip"}
    long_prompt = [{"role": "user", "content": "Hi " * 2000}]
    reply = httpx.post(setup.gateway.v1 + "/chat/completions", headers=headers,
                       json={"model": "per-call", "messages": long_prompt}, timeout=20)
    assert reply.status_code == 200 and "content-encoding" not in reply.headers
    with httpx.stream("POST", setup.gateway.v1 + "/chat/completions", headers=headers, timeout=20,
                      json={"model": "per-call", "messages": HI, "stream": True}) as stream:
        assert stream.status_code == 200 and "content-encoding" not in stream.headers
        assert b"[DONE]" in stream.read()


# ---- keys --------------------------------------------------------------------------------------

def test_admins_find_keys_by_key_or_user_name(setup: Setup) -> None:
    owner = setup.user("search_owner")
    for name in ("alpha", "beta_1", "beta-2"):
        assert setup.admin.post("/api/tokens", json={"name": name, "user_id": owner["id"]}).status_code == 201

    def found(q: str) -> list[tuple[str, str]]:
        response = setup.admin.get("/api/tokens", params={"q": q})
        assert response.status_code == 200, response.text
        return sorted((row["name"], row["user_name"]) for row in response.json()["data"])

    assert found("SEARCH_own") == [("alpha", "search_owner"), ("beta-2", "search_owner"), ("beta_1", "search_owner")]
    assert found("beta_") == [("beta_1", "search_owner")]  # "_" is a character, not a wildcard
    assert found("alph") == [("alpha", "search_owner")]
    too_long = setup.admin.get("/api/tokens", params={"q": "x" * 129})
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "invalid_query"


# ---- playground --------------------------------------------------------------------------------

def test_the_playground_key_is_minted_for_the_session_and_rotated(setup: Setup) -> None:
    user = setup.user("player", balance=10_000_000)
    session = setup.login("player", "player-password")
    forged = session.post("/api/me/playground-key")  # what a cross-site form could send: no X-Requested-With
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf"
    assert httpx.post(setup.gateway.url + "/api/me/playground-key", headers=XHR).status_code == 401

    first = session.post("/api/me/playground-key", headers=XHR)
    assert first.status_code == 201, first.text
    assert setup.chat(first.json()["key"]).status_code == 200
    second = session.post("/api/me/playground-key", headers=XHR).json()
    assert second["id"] == first.json()["id"] and second["key"] != first.json()["key"]
    assert setup.chat(first.json()["key"]).status_code == 401  # rotated: the old secret is gone
    assert setup.chat(second["key"]).status_code == 200
    keys = session.get("/api/me/tokens").json()["data"]
    assert [(k["name"], k["user_id"]) for k in keys] == [("console playground", user["id"])]
    assert keys[0]["expires_at"] is not None


# ---- channels ----------------------------------------------------------------------------------

def test_a_base_url_ending_in_v1_is_normalised_and_a_failed_test_names_the_url(setup: Setup,
                                                                               upstream: FakeServer) -> None:
    created = setup.admin.post("/api/channels", json={"name": "copied", "base_url": upstream.url + "/v1/",
                                                      "keys": [UPSTREAM_KEY], "models": ["gpt-4o-mini"],
                                                      "enabled": False})
    assert created.status_code == 201 and created.json()["base_url"] == upstream.url
    patched = setup.admin.patch(f"/api/channels/{created.json()['id']}", json={"base_url": upstream.url + "/v1"})
    assert patched.json()["base_url"] == upstream.url

    wrong = setup.admin.post("/api/channels", json={"name": "wrong-key", "base_url": upstream.url,
                                                    "keys": ["sk-wrong-0123456789abc"], "enabled": False}).json()
    tested = setup.admin.post(f"/api/channels/{wrong['id']}/test", json={"model": "gpt-4o"}).json()
    assert tested["ok"] is False and tested["model"] == "gpt-4o"
    assert tested["result"].startswith(f"HTTP 401 from POST {upstream.url}/v1/chat/completions: ")
    assert "sk-wrong-0123456789abc" not in tested["result"]


def test_fetching_a_channels_models_from_its_upstream(setup: Setup, upstream: FakeServer) -> None:
    main = next(c for c in setup.admin.get("/api/channels").json()["data"] if c["name"] == "main")
    listed = setup.admin.post(f"/api/channels/{main['id']}/models")
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"url": upstream.url + "/v1/models", "models": sorted(openai_upstream.LISTED_MODELS)}
    assert setup.admin.get(f"/api/channels/{main['id']}").json()["models"] == main["models"]  # nothing saved

    wrong = setup.admin.post("/api/channels", json={"name": "wrong-key-2", "base_url": upstream.url,
                                                    "keys": ["sk-wrong-0123456789xyz"], "enabled": False}).json()
    refused = setup.admin.post(f"/api/channels/{wrong['id']}/models")
    assert refused.status_code == 502 and refused.json()["error"]["code"] == "upstream_failed"
    assert refused.json()["error"]["message"] == f"GET {upstream.url}/v1/models: the server answered HTTP 401."
    assert setup.admin.post("/api/channels/999999/models").status_code == 404
    setup.user("not_an_admin")
    session = setup.login("not_an_admin", "not_an_admin-password")
    assert session.post(f"/api/channels/{main['id']}/models", headers=XHR).status_code == 403


# ---- money pages -------------------------------------------------------------------------------

def test_billing_history_by_kind_redeemed_codes_by_name_and_the_users_balance(setup: Setup) -> None:
    user = setup.user("payer", balance=2_000_000)
    session = setup.login("payer", "payer-password")
    code = setup.admin.post("/api/redemptions", json={"amount_micros": 500_000}).json()["data"][0]
    assert session.post("/api/me/redeem", json={"code": code["code"]}, headers=XHR).status_code == 200
    key = setup.admin.post("/api/tokens", json={"name": "payer-key", "user_id": user["id"]}).json()["key"]
    assert setup.chat(key).status_code == 200  # a $0.01 charge

    listed = {c["id"]: c for c in setup.admin.get("/api/redemptions").json()["data"]}
    assert (listed[code["id"]]["redeemed_by"], listed[code["id"]]["redeemed_by_name"]) == (user["id"], "payer")

    def kinds(kind: str = "") -> list[tuple[str, int]]:
        rows = session.get("/api/me/ledger", params={"kind": kind} if kind else {}).json()["data"]
        return [(row["kind"], row["amount_micros"]) for row in rows]

    wait_until(lambda: ("charge", -10_000) in kinds(), what="the charge in the ledger")
    assert kinds("redemption") == [("redemption", 500_000)]
    assert kinds("charge") == [("charge", -10_000)]
    bad = session.get("/api/me/ledger", params={"kind": "gift"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_query"

    users = setup.admin.get("/api/users", params={"limit": 1000}).json()["data"]
    expected = sum(u["balance_micros"] for u in users if not u["unlimited"])
    assert setup.admin.get("/api/stats").json()["users_balance_micros"] == expected
    assert "users_balance_micros" not in session.get("/api/me/stats").json()
